"""Shared, generic test helpers: tiny model builders (fast on a couple of CPU cores)."""

from __future__ import annotations

import os

import pytest
import torch

from ehrlens.models import model_classes

#: The models of the one table (:func:`ehrlens.models.model_classes`), by class name.
MODEL_CLASSES = {cls.__name__: cls for cls in model_classes().values()}

TINY_MODEL_KWARGS = {
    "Transformer": {"embedding_dim": 16, "heads": 2, "num_layers": 1, "dropout": 0.0},
    "CodeTransformer": {"embedding_dim": 16, "heads": 2, "num_layers": 1, "dropout": 0.0},
    "StageAttentionNet": {
        "embedding_dim": 16,
        "chunk_size": 8,
        "levels": 2,
        "heads": 2,
        "conv_size": 3,
        "dropout": 0.0,
    },
}


def _test_threads() -> int:
    """``EHRLENS_TEST_THREADS`` (default 1): the stability check runs the suite with 1 and 2."""
    given = os.environ.get("EHRLENS_TEST_THREADS", "1")
    if not given.isdigit() or int(given) < 1:
        raise pytest.UsageError(f"EHRLENS_TEST_THREADS must be an integer >= 1, got {given!r}")
    return int(given)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The whole session runs with one intra-op thread (set before any fixture builds a
    model, so results do not depend on fixture order): the test models are tiny, and on a
    shared 2-core machine extra threads only add contention (up to 100x slower). The one
    torch-threads fixture of the suite; code that changes the count restores it itself.
    ``EHRLENS_TEST_THREADS`` sets another count (``tests/stability.sh`` runs 1 and 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(_test_threads())
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_tiny_model():
    """``make(name, dataset_or_schema, seed=0, **overrides)`` -> a tiny seeded model."""

    def make(name: str, dataset, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return MODEL_CLASSES[name](dataset, **{**TINY_MODEL_KWARGS[name], **overrides})

    return make
