"""ADVERSARIAL: every cheat a dishonest participant would try, for tests, demos and benchmarks.

Nothing here is used by an honest participant; the honest roles only expose the protected
methods these subclasses override (``Executor._sampling``, ``_prompt``, ``_generate``,
``_evidence_weight``). Each cheat is named as in ``config.AdversaryKind`` and is one of:

- **model cheats** (a cheaper model behind the same interface): ``truncate_layers_2``,
  ``truncate_layers_6``, ``int8``, ``int4`` — :func:`~gonka_ray.adversary.cheats.cheat_model`
  transforms the loaded HF model; :class:`~gonka_ray.adversary.actors.CheatingMLNode` serves it;
- **sampling cheats** (ignore the replayable sampler's parameters): ``wrong_temperature``,
  ``greedy``, ``ignore_seed`` — :func:`~gonka_ray.adversary.cheats.sampling_hook` rewrites the
  request's sampling params before the engine sees them (the artifact still claims the client's);
- **executor cheats** (:class:`~gonka_ray.adversary.actors.CheatingExecutor`):
  ``withhold_payload``, ``launder``, ``replace_1_in_64``, ``drop_system``, ``truncate_output``,
  ``inflate_evidence_weight``, and the sampling cheats above.

- :mod:`gonka_ray.adversary.cheats` — the cheats as functions of a model or sampling params.
- :mod:`gonka_ray.adversary.actors` — the cheating MLNode and executor.
"""
