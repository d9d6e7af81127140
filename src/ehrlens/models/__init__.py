"""Attention-based clinical models."""

from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, model_class, model_classes

# The order of definition is the order of model_classes() (the default model first).
from .transformer import Transformer  # isort: split

from .stage_attention import StageAttentionNet, StageNetLayer  # isort: split

from .code_transformer import CodeTransformer
from .directory import load_model_dir, save_model_dir

__all__ = [
    "BaseModel",
    "CodeTransformer",
    "EncoderBlock",
    "MultiHeadAttention",
    "StageAttentionNet",
    "StageNetLayer",
    "Transformer",
    "load_model_dir",
    "model_class",
    "model_classes",
    "save_model_dir",
]
