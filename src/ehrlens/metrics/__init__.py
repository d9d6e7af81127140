"""Is the explanation right? Faithfulness by removal, and recovery of planted signal."""

from .faithfulness import DEFAULT_PERCENTAGES, FaithfulnessResult, RemovalFaithfulness
from .recovery import RecoveryScores, signal_recovery
from .removal import rank_units, remove_units, top_fraction_mask, unit_mask

__all__ = [
    "DEFAULT_PERCENTAGES",
    "FaithfulnessResult",
    "RecoveryScores",
    "RemovalFaithfulness",
    "rank_units",
    "remove_units",
    "signal_recovery",
    "top_fraction_mask",
    "unit_mask",
]
