"""Attention-based clinical models."""

from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, model_class, model_classes

# The order of definition is the order of model_classes() (the default model first).
from .transformer import Transformer  # isort: split

from .stage_attention import StageAttentionNet, StageNetLayer  # isort: split

from .code_transformer import CodeTransformer

__all__ = [
    "BaseModel",
    "CodeTransformer",
    "EncoderBlock",
    "MultiHeadAttention",
    "StageAttentionNet",
    "StageNetLayer",
    "Transformer",
    "model_class",
    "model_classes",
]
