"""Explanation methods; each has the same ``attribute(target_class_idx=None, **batch)``."""

from .base import BaseInterpreter
from .chefer import CheferRelevance
from .flow import AttentionFlow
from .rollout import AttentionRollout

__all__ = ["AttentionFlow", "AttentionRollout", "BaseInterpreter", "CheferRelevance"]
