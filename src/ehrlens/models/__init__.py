"""Attention-based clinical models."""

from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel
from .stage_attention import StageAttentionNet, StageNetLayer
from .transformer import Transformer

__all__ = [
    "BaseModel",
    "EncoderBlock",
    "MultiHeadAttention",
    "StageAttentionNet",
    "StageNetLayer",
    "Transformer",
]
