"""Is the explanation right? Faithfulness by removal, recovery of planted signal, and
sanity checks by randomisation."""

from .evaluator import EvaluationResult, Evaluator, MetricSummary, bootstrap_interval
from .faithfulness import DEFAULT_PERCENTAGES, FaithfulnessResult, RemovalFaithfulness
from .recovery import RecoveryScores, signal_recovery, within_visit_signal_auroc
from .removal import rank_units, remove_units, top_fraction_mask, unit_mask
from .sanity import (
    DataRandomisation,
    ModelParameterRandomisation,
    SanityResult,
    rank_correlation,
)

__all__ = [
    "DEFAULT_PERCENTAGES",
    "DataRandomisation",
    "EvaluationResult",
    "Evaluator",
    "FaithfulnessResult",
    "MetricSummary",
    "ModelParameterRandomisation",
    "RecoveryScores",
    "RemovalFaithfulness",
    "SanityResult",
    "bootstrap_interval",
    "rank_correlation",
    "rank_units",
    "remove_units",
    "signal_recovery",
    "top_fraction_mask",
    "unit_mask",
    "within_visit_signal_auroc",
]
