"""The HTTP front door of a network, laid out like vLLM's ``entrypoints/openai``.

- :mod:`~gonka_ray.serve.openai_models`: the OpenAI request bodies (pydantic).
- :mod:`~gonka_ray.serve.errors`: errors as OpenAI-shaped JSON responses.
- :mod:`~gonka_ray.serve.views`: JSON views of ledger records (no Ray, no FastAPI; the SDK and
  the CLI use them too).
- :mod:`~gonka_ray.serve.ingress`: the FastAPI app, :class:`GonkaIngress` and its route table.
- :mod:`~gonka_ray.serve.deployment`: the Serve deployment, ``serve_network`` and ``shutdown``.

NOTE: this file imports nothing, so importing ``gonka_ray.serve.views`` loads neither FastAPI
nor Ray Serve.
"""
