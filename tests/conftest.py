"""Shared, generic test helpers: tiny model builders (fast on a couple of CPU cores)."""

from __future__ import annotations

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


@pytest.fixture
def make_tiny_model():
    """``make(name, dataset_or_schema, seed=0, **overrides)`` -> a tiny seeded model."""

    def make(name: str, dataset, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return MODEL_CLASSES[name](dataset, **{**TINY_MODEL_KWARGS[name], **overrides})

    return make


def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's ``--dist loadgroup`` (how ``make test`` runs the suite):
    each test module (or module of doctests) is one group, so a module's fixtures are built
    once, on one worker; every module that uses the session's Ray runtime (``ray_runtime``),
    and the Ray engine's doctests, join the one group ``"ray"``, so a single worker starts
    one runtime and runs those modules one after another. Two runtimes side by side on two
    cores made each Ray test several times slower on a loaded machine. Without xdist the
    marks are inert."""
    ray_modules = {
        item.path
        for item in items
        if "ray_runtime" in getattr(item, "fixturenames", ())
        or item.path.name == "ray_engine.py"  # its doctests start (or reuse) a runtime too
    }
    root = config.rootpath
    for item in items:
        if item.path in ray_modules:
            group = "ray"
        else:
            try:
                group = str(item.path.relative_to(root))
            except ValueError:
                group = str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))
