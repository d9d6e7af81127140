"""Head fusion: one ``[batch, seq, seq]`` map from ``[batch, heads, seq, seq]`` per layer."""

from __future__ import annotations

from torch import Tensor

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: Tensor, head_fusion: str) -> Tensor:
    """``[batch, heads, seq, seq]`` -> ``[batch, seq, seq]`` by mean, max or min over heads.

    A map with a single head (e.g. fused at capture time) is returned as a view, not copied.
    """
    if attention.shape[1] == 1 and head_fusion in HEAD_FUSIONS:
        return attention[:, 0]
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def check_head_fusion(head_fusion: str) -> str:
    """Return ``head_fusion`` or raise a ValueError listing the options."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    return head_fusion
