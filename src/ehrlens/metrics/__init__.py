"""Is the explanation right? Faithfulness by removal, and recovery of planted signal."""

from .evaluator import EvaluationResult, Evaluator, MetricSummary, bootstrap_interval
from .faithfulness import DEFAULT_PERCENTAGES, FaithfulnessResult, RemovalFaithfulness
from .recovery import RecoveryScores, signal_recovery
from .removal import rank_units, remove_units, top_fraction_mask, unit_mask

__all__ = [
    "DEFAULT_PERCENTAGES",
    "EvaluationResult",
    "Evaluator",
    "FaithfulnessResult",
    "MetricSummary",
    "RecoveryScores",
    "RemovalFaithfulness",
    "bootstrap_interval",
    "rank_units",
    "remove_units",
    "signal_recovery",
    "top_fraction_mask",
    "unit_mask",
]
