"""Explanation methods; each has the same ``attribute(target_class_idx=None, **batch)``."""

from .attnlrp import AttnLRP
from .base import BaseInterpreter
from .baselines import RandomBaseline, RawAttention
from .chefer import CheferRelevance
from .flow import AttentionFlow
from .gradients import InputXGradient, IntegratedGradients
from .rollout import AttentionRollout
from .visit_split import VisitScoreSplit

__all__ = [
    "AttentionFlow",
    "AttentionRollout",
    "AttnLRP",
    "BaseInterpreter",
    "CheferRelevance",
    "InputXGradient",
    "IntegratedGradients",
    "RandomBaseline",
    "RawAttention",
    "VisitScoreSplit",
]
