"""Explanations of attention-based models: the two-level interface and the methods."""

from .api import (
    AttentionInterpretable,
    CheferInterpretable,
    GradientInterpretable,
    capture_attention,
)
from .levels import score_level, score_levels
from .methods import (
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    BaseInterpreter,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
    VisitScoreSplit,
)
from .registry import METHODS, make_interpreter, register_method, unregister_method
from .summary import code_relevance, top_codes

__all__ = [
    "METHODS",
    "AttentionFlow",
    "AttentionInterpretable",
    "AttentionRollout",
    "AttnLRP",
    "BaseInterpreter",
    "CheferInterpretable",
    "CheferRelevance",
    "GradientInterpretable",
    "InputXGradient",
    "IntegratedGradients",
    "RandomBaseline",
    "RawAttention",
    "VisitScoreSplit",
    "capture_attention",
    "code_relevance",
    "make_interpreter",
    "register_method",
    "score_level",
    "score_levels",
    "top_codes",
    "unregister_method",
]
