"""Attention-based clinical models."""

from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, model_class, model_classes

# The order of definition is the order of model_classes() (the default model first).
from .transformer import Transformer  # isort: split

from .stage_attention import StageAttentionNet, StageNetLayer

__all__ = [
    "BaseModel",
    "EncoderBlock",
    "MultiHeadAttention",
    "StageAttentionNet",
    "StageNetLayer",
    "Transformer",
    "model_class",
    "model_classes",
]
