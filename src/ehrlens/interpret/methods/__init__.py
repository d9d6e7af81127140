"""Explanation methods; each has the same ``attribute(target_class_idx=None, **batch)``."""

# isort: off
# Each module registers its methods as it defines them (@register_method), so this order of
# imports is the order in which methods are listed (command-line help, METHODS).
from .rollout import AttentionRollout
from .flow import AttentionFlow
from .chefer import CheferRelevance
from .attnlrp import AttnLRP
from .gradients import InputXGradient, IntegratedGradients
from .baselines import RandomBaseline, RawAttention
from .visit_split import VisitScoreSplit

# isort: on
from .base import BaseInterpreter

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
