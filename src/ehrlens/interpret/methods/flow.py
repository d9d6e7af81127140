"""Attention flow (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...core.fusion import check_head_fusion
from ..api import AttentionInterpretable, readout_weights, select_input_positions
from .base import (
    BaseInterpreter,
    TargetIndex,
    check_finite_scores,
    register_method,
    working_dtype,
)
from .maxflow import flow_values
from .rollout import fused_attention_layers


@register_method
class AttentionFlow(BaseInterpreter):
    """Attention flow: the maximum flow from each input to the readout through the layers.

    The attention graph has a node per position per layer boundary and, for layer ``l``, an
    edge from position ``j`` (below) to ``i`` (above) with capacity
    ``A_hat_l[i, j] = 0.5 * (fuse_heads(A_l)[i, j] + I[i, j])``, the residual-augmented map
    of rollout. An input position's score is the maximum flow from its layer-0 node to the
    model's readout (one-hot readouts are the sink node; weighted readouts feed a super-sink
    with capacity equal to each weight). Flows are exact max-flow values
    (:mod:`~ehrlens.interpret.methods.maxflow`). Forward-only: runs under
    ``torch.inference_mode()``. Class-agnostic: ``target_class_idx`` is ignored.

    Cost: per sample, one max-flow per input position on a graph of about
    ``layers * seq`` nodes and ``(layers - 2) * seq^2`` edges; it grows roughly with
    ``seq^3 * layers``, so sequences longer than ``max_seq_len`` are refused with a clear
    error rather than running for hours (use :class:`AttentionRollout` there).

    Args:
        model: an :class:`~ehrlens.interpret.AttentionInterpretable` model that states its
            readout weights.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads (as rollout).
        normalize: ``"patient"`` (default; ``True`` is the same): divide each patient's
            scores by their sum over every real input position of every feature, so that a
            patient's position scores sum to 1 across all features; ``"per_feature"``: divide
            each feature's scores by their own sum (each feature of a patient sums to 1, so a
            patient with three features totals 3: the paper's code, which has one input
            sequence); ``"none"`` (``False``): raw max-flow values.
        max_seq_len: longest attention sequence accepted.
        n_jobs: worker processes for the samples of a batch (``1``: in this process;
            ``-1``: one per CPU). Workers start on first use and are reused; call
            :meth:`close` (or use the interpreter as a context manager) to stop them.

    Example:
        >>> with torch.inference_mode():
        ...     scores = AttentionFlow(model).attribute(**batch)   # {"diagnoses": [b, s]}
    """

    name = "flow"
    gradient_free = True
    plain_forward = True
    needs = (AttentionInterpretable, "flow")
    model: AttentionInterpretable
    summary = "attention flow, exact max-flow (Abnar & Zuidema)"

    def __init__(
        self,
        model: AttentionInterpretable,
        head_fusion: str = "mean",
        normalize: str = "patient",
        max_seq_len: int = 256,
        n_jobs: int = 1,
    ) -> None:
        super().__init__(model)
        self.head_fusion = check_head_fusion(head_fusion)
        self.normalize = _normalization(normalize)
        self.max_seq_len = int(max_seq_len)
        if n_jobs == 0 or n_jobs < -1:
            raise ValueError(f"n_jobs must be a positive number of processes or -1, got {n_jobs}")
        self.n_jobs = multiprocessing.cpu_count() if n_jobs == -1 else int(n_jobs)
        self._pool: Executor | None = None

    # ------------------------------------------------------------------ workers
    def _map(self, maps: list[np.ndarray], readouts: list[np.ndarray]) -> list[np.ndarray]:
        if self.n_jobs == 1 or len(maps) < 2:
            return [flow_values(m, r) for m, r in zip(maps, readouts, strict=True)]
        if self._pool is None:
            # Workers run numpy and igraph only (no torch), so fork is safe where it exists and,
            # unlike spawn, needs no `if __name__ == "__main__"` guard in the user's script.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=context)
        chunk = max(1, len(maps) // (4 * self.n_jobs))
        return list(self._pool.map(flow_values, maps, readouts, chunksize=chunk))

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> AttentionFlow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _check_lengths(self, weights: dict[str, Tensor]) -> None:
        for key, w in weights.items():
            if w.shape[-1] > self.max_seq_len:
                raise ValueError(
                    f"feature '{key}': attention sequence of {w.shape[-1]} positions exceeds "
                    f"max_seq_len={self.max_seq_len} for AttentionFlow, whose cost grows "
                    "about as seq^3 * layers; use AttentionRollout for long sequences, or "
                    "raise max_seq_len knowingly"
                )

    # ------------------------------------------------------------------ attribution
    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Flow scores shaped like each feature's batch tensor; padding exactly 0.

        With ``normalize="patient"`` (default) each patient's scores over the real input
        positions of all its features sum to 1; with ``"per_feature"`` those of each feature
        do (all zeros when no flow reaches the readout, e.g. an empty feature). A nested
        visit is one position: each of its codes shows the visit's score.
        ``target_class_idx`` is ignored (flow is class-agnostic) but must be valid.
        """
        self._check_unused_target(target_class_idx, batch)
        weights = readout_weights(self.model, batch)
        if weights is not None:  # stated: refuse long sequences before any forward
            self._check_lengths(weights)
        layers = fused_attention_layers(self.model, batch, self.head_fusion)
        if weights is None:
            weights = readout_weights(self.model, batch, layers)
            if weights is None:
                raise TypeError(
                    f"AttentionFlow needs the readout of {type(self.model).__name__} over "
                    "attention positions (the flow's sink): state it with get_readout_weights, "
                    "or read out with get_relevance_tensor over every attention position"
                )
            self._check_lengths(weights)
        stacked_maps = {key: torch.stack(maps, dim=1).detach() for key, maps in layers.items()}
        # Max-flow of NaN capacities is a finite number, not NaN: check the maps themselves.
        check_finite_scores(stacked_maps, batch, "attention")
        flows = {}
        for key, maps in layers.items():
            stacked = stacked_maps[key].to("cpu", torch.float64)  # [b, L, s, s]
            eye = torch.eye(stacked.shape[-1], dtype=torch.float64)
            a_hat = (0.5 * (stacked + eye)).numpy()
            readout = weights[key].detach().to("cpu", torch.float64).numpy()
            values = self._map(list(a_hat), list(readout))
            dtype = working_dtype(maps[0].dtype)
            flows[key] = torch.from_numpy(np.stack(values)).to(maps[0].device, dtype)
        scores = select_input_positions(self.model, flows, batch)
        if self.normalize == "per_feature":
            scores = {key: _normalized(s) for key, s in scores.items()}
        elif self.normalize == "patient":
            # A feature with no real unit (an empty code list) adds nothing to the patient's
            # total: its padding positions may still carry flow, which the output drops.
            units = self._input_scores({k: torch.ones_like(s) for k, s in scores.items()}, batch)
            present = {k: units[k].reshape(units[k].shape[0], -1).ne(0).any(-1) for k in scores}
            scores = _normalized_per_patient(scores, present)
        return self._input_scores(scores, batch)


def _normalized(scores: Tensor) -> Tensor:
    """Each sample's scores divided by their sum over every input position (a model that
    scores codes inside visits gives ``[batch, visits, codes]``: one sum per sample)."""
    total = scores.reshape(scores.shape[0], -1).sum(dim=-1)
    total = total.reshape(-1, *(1,) * (scores.dim() - 1))
    return torch.where(total > 0, scores / torch.where(total > 0, total, 1), 0.0)


#: The values of ``AttentionFlow(normalize=...)``.
NORMALIZATIONS = ("patient", "per_feature", "none")


def _normalization(value: bool | str) -> str:
    if value is True:
        return "patient"
    if value is False or value is None:
        return "none"
    if isinstance(value, str) and value in NORMALIZATIONS:
        return value
    raise ValueError(f"normalize must be one of {NORMALIZATIONS} (or True / False), got {value!r}")


def _normalized_per_patient(
    scores: dict[str, Tensor], present: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Every feature's scores of a sample divided by the sample's sum over all features;
    ``present[key]`` (``[batch]`` bool) leaves a feature out of the sums of samples where it
    holds no real unit."""
    total: Tensor | None = None
    for key, s in scores.items():
        part = s.reshape(s.shape[0], -1).sum(dim=-1).to(torch.float64).cpu()
        if present is not None:
            part = torch.where(present[key].cpu(), part, 0.0)
        total = part if total is None else total + part
    if total is None:
        return scores
    out = {}
    for key, s in scores.items():
        t = total.to(s.device, s.dtype).reshape(-1, *(1,) * (s.dim() - 1))
        out[key] = torch.where(t > 0, s / torch.where(t > 0, t, 1), 0.0)
    return out
