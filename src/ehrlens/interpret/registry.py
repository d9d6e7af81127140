"""Interpreters by name, for the command line and cohort runs.

Example:
    >>> interpreter = make_interpreter("rollout", model, head_fusion="max")
    >>> METHODS["chefer"].gradient_free
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .methods import (
    AttentionFlow,
    AttentionRollout,
    BaseInterpreter,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
)


@dataclass(frozen=True)
class MethodInfo:
    """One named method: its class, and whether it runs without autograd."""

    cls: type[BaseInterpreter]
    gradient_free: bool
    summary: str


METHODS: dict[str, MethodInfo] = {
    "rollout": MethodInfo(AttentionRollout, True, "attention rollout (Abnar & Zuidema 2020)"),
    "flow": MethodInfo(AttentionFlow, True, "attention flow, exact max-flow (Abnar & Zuidema)"),
    "chefer": MethodInfo(CheferRelevance, False, "gradient-weighted relevance (Chefer et al.)"),
    "raw_attention": MethodInfo(RawAttention, True, "last layer's attention from the readout"),
    "input_x_gradient": MethodInfo(InputXGradient, False, "embedding x gradient (Captum)"),
    "integrated_gradients": MethodInfo(
        IntegratedGradients, False, "integrated gradients on embeddings (Captum)"
    ),
    "random": MethodInfo(RandomBaseline, True, "random scores: the floor any method must beat"),
}


def make_interpreter(name: str, model: Any, **options: Any) -> BaseInterpreter:
    """Build the interpreter called ``name`` on ``model`` with constructor ``options``.

    Raises:
        ValueError: ``name`` is not one of :data:`METHODS`.
        TypeError: the model lacks the interface the method needs, or an option is unknown.

    Example:
        >>> flow = make_interpreter("flow", model, max_seq_len=512)
    """
    info = METHODS.get(name)
    if info is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return info.cls(model, **options)
