"""Engines: one interface (``base.InferenceEngine``) over transformers, vLLM and a fake engine.

- ``base``: the ABC, request/chunk/result dataclasses, validation, detokenization.
- ``sampler``: the replayable Gumbel-max sampler every engine uses (pure torch; its integer
  hash constants live in :mod:`gonka_ray.hashing`).
- ``scoring``: raw-logprob artifacts and prefill scoring from logits (torch engines).
- ``transformers_engine`` / ``vllm_engine`` (+ ``vllm_logits``) / ``fake``: the engines;
  ``factory.create_engine`` picks one from an ``EngineConfig``.
- ``models``: model sources and adversarial transforms.
- ``poc``: the Proof-of-Compute model, sprint and claim recomputation (rules:
  :mod:`gonka_ray.protocol.poc`).
"""
