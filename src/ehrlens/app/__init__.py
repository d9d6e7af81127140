"""The application layer: workflows that combine the library's parts.

- :mod:`~ehrlens.app.trainer`: :class:`~ehrlens.app.trainer.Trainer` (also ``ehrlens.Trainer``).
- :mod:`~ehrlens.app.workflow`: write a synthetic cohort, choose a split, train on splits, train
  a model with its card, train on a generated cohort in one call.
- :mod:`~ehrlens.models.directory`: model directories (weights + card).
- :mod:`~ehrlens.app.random_models`: untrained random-code models for benchmarks.
- :mod:`~ehrlens.app.demo`: ``make demo`` (``python -m ehrlens.app.demo``).
"""
