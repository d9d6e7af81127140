"""Fixtures of the interpretability tests: small real models, fake models with given maps,
and independent reference computations (plain torch, full matrix products).

The references here never call ``ehrlens.interpret`` helpers; they only read the captured
maps through the model's own capture interface (``set_attention_hooks`` /
``get_attention_layers``), exactly as the brief allows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ehrlens.data.dataset import SampleDataset, create_sample_dataset
from ehrlens.data.synthetic import generate_cohort
from ehrlens.interpret import AttentionInterpretable, GradientInterpretable
from ehrlens.models import CodeTransformer, StageAttentionNet, Transformer

# ----------------------------------------------------------------------------- real models

#: (model class name, cohort layout) pairs the real-model tests run on.
MODEL_CASES = [
    ("Transformer", "sequence"),
    ("Transformer", "nested"),
    ("StageAttentionNet", "stagenet"),
    ("StageAttentionNet", "sequence"),
    ("CodeTransformer", "nested"),
    ("CodeTransformer", "stagenet"),
]
MODEL_CASE_IDS = [f"{name}-{layout}" for name, layout in MODEL_CASES]


@cache
def cohort_dataset(layout: str, seed: int = 3) -> SampleDataset:
    cohort = generate_cohort(n_patients=40, layout=layout, seed=seed)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


def build_model(name: str, dataset: Any, seed: int = 0) -> nn.Module:
    """A small seeded model; dropout stays on so that eval mode matters."""
    torch.manual_seed(seed)
    if name == "Transformer":
        return Transformer(dataset, embedding_dim=16, heads=2, num_layers=3)
    if name == "CodeTransformer":
        return CodeTransformer(dataset, embedding_dim=16, heads=2, num_layers=3)
    return StageAttentionNet(
        dataset, embedding_dim=16, chunk_size=8, levels=2, heads=2, attention_layers=2
    )


@dataclass
class ModelCase:
    name: str
    layout: str
    dataset: SampleDataset
    model: nn.Module
    batch: dict[str, Any]
    indices: list[int]

    @property
    def keys(self) -> list[str]:
        return list(self.dataset.feature_keys)

    def collate(self, indices: list[int]) -> dict[str, Any]:
        return self.dataset.collate([self.dataset[i] for i in indices])

    def fresh_model(self) -> nn.Module:
        return build_model(self.name, self.dataset)


def make_case(name: str, layout: str, indices: list[int] | None = None) -> ModelCase:
    dataset = cohort_dataset(layout)
    indices = list(range(8)) if indices is None else indices
    model = build_model(name, dataset)
    batch = dataset.collate([dataset[i] for i in indices])
    return ModelCase(name, layout, dataset, model, batch, indices)


@pytest.fixture(params=MODEL_CASES, ids=MODEL_CASE_IDS)
def model_case(request) -> ModelCase:
    """Every real model / layout pair, with a batch of 8 patients."""
    return make_case(*request.param)


@pytest.fixture(
    params=[("Transformer", "sequence"), ("StageAttentionNet", "stagenet")],
    ids=["Transformer-sequence", "StageAttentionNet-stagenet"],
)
def small_case(request) -> ModelCase:
    """One case per model class, for the interface / bookkeeping tests."""
    return make_case(*request.param)


# ----------------------------------------------------------------------------- references


def ref_fuse(attention: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return attention.sum(dim=1) / attention.shape[1]
    if head_fusion == "max":
        return attention.max(dim=1).values
    if head_fusion == "min":
        return attention.min(dim=1).values
    raise AssertionError(head_fusion)


def ref_discard(fused: Tensor, ratio: float) -> Tensor:
    """Row by row, in Python: drop floor(ratio * #positive off-diagonal) smallest, renorm."""
    if ratio == 0:
        return fused.clone()
    out = fused.clone()
    batch, seq, _ = fused.shape
    for b in range(batch):
        for i in range(seq):
            row = fused[b, i].tolist()
            cands = [j for j in range(seq) if j != i and row[j] > 0]
            n_drop = math.floor(ratio * len(cands))
            # ascending by weight, ties: lower column index first
            for j in sorted(cands, key=lambda j, row=row: (row[j], j))[:n_drop]:
                out[b, i, j] = 0.0
            out[b, i] = out[b, i] / out[b, i].sum()
    return out


def ref_rollout_matrix(maps: list[Tensor], head_fusion: str = "mean", ratio: float = 0.0):
    """R = A_hat_L @ ... @ A_hat_1 as full matrices, [batch, seq, seq] (float64)."""
    maps = [m.detach().double() for m in maps]
    batch, seq = maps[0].shape[0], maps[0].shape[-1]
    eye = torch.eye(seq, dtype=torch.float64)
    result = eye.repeat(batch, 1, 1)
    for attention in maps:
        fused = ref_discard(ref_fuse(attention, head_fusion), ratio)
        a_hat = 0.5 * (fused + eye)
        result = a_hat @ result
    return result


def ref_chefer_matrix(maps: list[Tensor], grads: list[Tensor | None]) -> Tensor:
    """R = I; R = R + mean_heads(clamp(g * A, 0)) @ R, input side first (float64)."""
    batch, seq = maps[0].shape[0], maps[0].shape[-1]
    result = torch.eye(seq, dtype=torch.float64).repeat(batch, 1, 1)
    for attention, grad in zip(maps, grads, strict=True):
        if grad is None:
            continue
        cam = (grad.double() * attention.detach().double()).clamp(min=0).mean(dim=1)
        result = result + cam @ result
    return result


def ref_last_valid(values: Tensor) -> Tensor:
    real = values != 0
    if values.dim() == 3:
        real = real.any(dim=-1)
    last = []
    for row in real.tolist():
        idx = [t for t, r in enumerate(row) if r]
        last.append(idx[-1] if idx else 0)
    return torch.tensor(last, dtype=torch.long)


def ref_code_tokens(values: Tensor) -> list[list[tuple[int, ...]]]:
    """Per sample, the index in ``values`` of each CodeTransformer token: its real codes in
    visit, then code order (token 0 is [CLS], token j + 1 the j-th real code)."""
    return [
        [index for index in itertools.product(*map(range, row.shape)) if int(row[index]) != 0]
        for row in values
    ]


def ref_readout(model: nn.Module, key: str, matrix: Tensor, batch: dict[str, Any]) -> Tensor:
    """The model's readout row over input positions, [batch, n_inputs] ([batch, visits,
    codes] for CodeTransformer's nested codes)."""
    if isinstance(model, CodeTransformer):
        values = batch[key]
        out = torch.zeros(values.shape, dtype=matrix.dtype)
        for b, tokens in enumerate(ref_code_tokens(values)):
            for j, index in enumerate(tokens):
                out[(b, *index)] = matrix[b, 0, 1 + j]
        return out
    if isinstance(model, Transformer):
        return matrix[:, 0, 1:]
    last = ref_last_valid(batch[key])
    return matrix[torch.arange(matrix.shape[0]), last]


def ref_to_inputs(scores: Tensor, values: Tensor) -> Tensor:
    real = (values != 0).to(scores.dtype)
    if values.dim() == 3 and scores.dim() == 2:
        return scores[..., None] * real
    return scores * real


def ref_capture_maps(model: nn.Module, batch: dict[str, Any]) -> dict[str, list[Tensor]]:
    """Forward in eval mode with forward-only capture; detached copies of the maps."""
    model.eval()
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.no_grad():
            model(**batch)
        layers = model.get_attention_layers()
        return {k: [a.detach().clone() for a, _ in v] for k, v in layers.items()}
    finally:
        model.set_attention_hooks(False)


def ref_rollout(
    model: nn.Module, batch: dict[str, Any], head_fusion: str = "mean", ratio: float = 0.0
) -> dict[str, Tensor]:
    maps = ref_capture_maps(model, batch)
    out = {}
    for key, layer_maps in maps.items():
        matrix = ref_rollout_matrix(layer_maps, head_fusion, ratio)
        scores = ref_readout(model, key, matrix, batch).to(layer_maps[0].dtype)
        out[key] = ref_to_inputs(scores, batch[key])
    return out


def binary_target(logit: Tensor) -> Tensor:
    return logit[:, 0]


def ref_chefer(
    model: nn.Module,
    batch: dict[str, Any],
    target_fn: Callable[[Tensor], Tensor] = binary_target,
) -> dict[str, Tensor]:
    """Capture maps in the graph, grads by torch.autograd.grad of the target logit."""
    model.eval()
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        with torch.enable_grad():
            logit = model(**batch)["logit"]
            target = target_fn(logit)
            layers = model.get_attention_layers()
            keys = list(layers)
            maps = [a for k in keys for a, _ in layers[k]]
            grads = torch.autograd.grad(target.sum(), maps, allow_unused=True)
    finally:
        model.set_attention_hooks(False)
    out, pos = {}, 0
    for key in keys:
        n = len(layers[key])
        matrix = ref_chefer_matrix(maps[pos : pos + n], list(grads[pos : pos + n]))
        pos += n
        scores = ref_readout(model, key, matrix, batch).to(maps[0].dtype)
        out[key] = ref_to_inputs(scores, batch[key])
    return out


@pytest.fixture(scope="session")
def ref() -> SimpleNamespace:
    """The independent reference computations, as a namespace of functions."""
    return SimpleNamespace(
        fuse=ref_fuse,
        discard=ref_discard,
        rollout_matrix=ref_rollout_matrix,
        chefer_matrix=ref_chefer_matrix,
        last_valid=ref_last_valid,
        readout=ref_readout,
        to_inputs=ref_to_inputs,
        capture_maps=ref_capture_maps,
        rollout=ref_rollout,
        chefer=ref_chefer,
    )


@pytest.fixture(scope="session")
def cases() -> SimpleNamespace:
    """Builders of real-model cases, for tests that need their own (e.g. hypothesis)."""
    return SimpleNamespace(
        make=make_case, build_model=build_model, dataset=cohort_dataset, all=MODEL_CASES
    )


# ----------------------------------------------------------------------------- fake models


class FakeMapsBase(nn.Module):
    """Stores the given maps as its attention; ``logit = sum_l sum(W_l * A_l)`` per sample.

    ``maps``: list of ``[batch, heads, seq, seq]``; ``weights``: list of tensors of the same
    shapes or ``None`` (that layer does not reach the logit). The maps of the forward are
    ``base * scale`` with a parameter ``scale == 1``, so they are part of the autograd graph
    and ``d logit / d A_l == W_l`` exactly. ``get_relevance_tensor`` returns row 0 of every
    matrix (all columns: each attention position is an input position) and records what it
    received in ``self.received``.
    """

    mode = "binary"
    key = "codes"

    def __init__(self, maps: list[Tensor], weights: list[Tensor | None] | None = None):
        super().__init__()
        self.base = [m.detach().clone().float() for m in maps]
        self.weights = weights if weights is not None else [None] * len(maps)
        self.scale = nn.Parameter(torch.ones(()))
        self.enabled = False
        self.capture_gradients = False
        self.captured: list[Tensor] = []
        self.grads: list[Tensor | None] = []
        self.handles: list[Any] = []
        self.received: dict[str, Tensor] | None = None
        self.forward_calls = 0
        self.hook_calls: list[tuple[bool, bool]] = []  # (enabled, capture_gradients)

    def _clear(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.captured = []
        self.grads = []

    def set_attention_hooks(self, enabled: bool, capture_gradients: bool = True) -> None:
        self.hook_calls.append((enabled, capture_gradients))
        self._clear()
        self.enabled = enabled
        self.capture_gradients = capture_gradients

    def forward(self, **batch: Any) -> dict[str, Tensor]:
        self.forward_calls += 1
        self._clear()
        logit = torch.zeros(self.base[0].shape[0])
        for layer, base in enumerate(self.base):
            attention = base * self.scale
            if self.enabled:
                self.grads.append(None)
                if self.capture_gradients and attention.requires_grad:
                    self.captured.append(attention)

                    def store(grad: Tensor, layer: int = layer) -> None:
                        self.grads[layer] = grad.detach()

                    self.handles.append(attention.register_hook(store))
                else:
                    self.captured.append(attention.detach())
            w = self.weights[layer]
            if w is not None:
                logit = logit + (w * attention).sum(dim=(1, 2, 3))
        return {"logit": logit[:, None]}

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        if not self.captured:
            raise RuntimeError("nothing captured")
        return {self.key: list(zip(self.captured, self.grads, strict=True))}

    def get_relevance_tensor(self, R, **data: Any) -> dict[str, Tensor]:
        self.received = {k: v.detach().clone() for k, v in R.items()}
        return {k: v[:, 0, :] for k, v in R.items()}

    def inputs(self, pad_last: int = 0) -> dict[str, Tensor]:
        """A batch for this model: code ids ``[batch, seq]``, the last ``pad_last`` padded."""
        batch, seq = self.base[0].shape[0], self.base[0].shape[-1]
        codes = torch.arange(2, seq + 2).repeat(batch, 1)
        if pad_last:
            codes[:, seq - pad_last :] = 0
        return {self.key: codes}


class FakeGradientModel(FakeMapsBase, GradientInterpretable):
    """Full GradientInterpretable; no readout weights (full-matrix path)."""


class FakeGradientModelWithReadout(FakeGradientModel):
    """States its readout row (e_0), so interpreters propagate one row; inherits the
    default ``select_input_positions`` of AttentionInterpretable."""

    def get_readout_weights(self, **data: Any) -> dict[str, Tensor]:
        batch, seq = self.base[0].shape[0], self.base[0].shape[-1]
        w = torch.zeros(batch, seq)
        w[:, 0] = 1.0
        return {self.key: w}


class FakeAttentionOnlyModel(FakeMapsBase, AttentionInterpretable):
    """Implements AttentionInterpretable only: forward capture, no gradients."""

    def set_attention_hooks(self, enabled: bool) -> None:  # type: ignore[override]
        super().set_attention_hooks(enabled, capture_gradients=False)


@pytest.fixture(scope="session")
def fakes() -> SimpleNamespace:
    return SimpleNamespace(
        Base=FakeMapsBase,
        Gradient=FakeGradientModel,
        GradientWithReadout=FakeGradientModelWithReadout,
        AttentionOnly=FakeAttentionOnlyModel,
    )


# ----------------------------------------------------------------------------- small helpers


def assert_close(actual: dict[str, Tensor], expected: dict[str, Tensor], atol: float = 1e-5):
    assert set(actual) == set(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        torch.testing.assert_close(
            actual[key].double(),
            expected[key].double(),
            atol=atol,
            rtol=0,
            msg=lambda m, key=key: f"feature '{key}': {m}",
        )


@pytest.fixture(scope="session")
def close() -> Callable[..., None]:
    return assert_close
