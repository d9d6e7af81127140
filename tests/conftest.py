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
