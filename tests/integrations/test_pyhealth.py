"""Models written against PyHealth's interface work unchanged once opted in.

The model (``_pyhealth_style.py``) is written the way PyHealth's ``Transformer`` is: one-argument
``set_attention_hooks``, detached maps with gradients taken by the model's own tensor hooks,
``[batch, heads, seq, seq]`` or head-averaged ``[batch, seq, seq]`` maps, tuple features, and
readout only through ``get_relevance_tensor`` (row 0, no ``[CLS]``). Every method is compared
with a reference computed here from the maps and gradients read off the model's modules
after a forward (and backward) run by hand, in float64.
"""

from __future__ import annotations

import copy
import math
import re
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import pytest
import torch
from _pyhealth_style import FEATURES, PyHealthStyleTransformer, capture_by_hand, make_batch
from torch import nn

from _reference_flow import nx_flow
from _tolerance import FLOAT32_ACROSS
from ehrlens.integrations.pyhealth import PyHealthModel, register
from ehrlens.interpret import (
    AttentionFlow,
    AttentionInterpretable,
    AttentionRollout,
    CheferInterpretable,
    CheferRelevance,
    GradientInterpretable,
    RawAttention,
)


@register
class Registered(PyHealthStyleTransformer):
    """The PyHealth-style model, opted in; its class is otherwise unchanged."""


VARIANTS = {"per-head": False, "head-averaged": True}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def model(request) -> PyHealthStyleTransformer:
    torch.manual_seed(3)
    return Registered(averaged=VARIANTS[request.param]).eval()


@pytest.fixture
def batch():
    return make_batch()


# ----------------------------------------------------------------------------- references
def heads(tensor: torch.Tensor) -> torch.Tensor:
    """``[b, s, s]`` -> ``[b, 1, s, s]``; per-head maps as they are; float64."""
    tensor = tensor.double()
    return tensor[:, None] if tensor.dim() == 3 else tensor


def fused(attention: torch.Tensor, head_fusion: str) -> torch.Tensor:
    attention = heads(attention)
    if head_fusion == "mean":
        return attention.sum(dim=1) / attention.shape[1]
    if head_fusion == "max":
        return attention.max(dim=1).values
    return attention.min(dim=1).values


def discarded(matrix: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per row: drop the floor(ratio * n) smallest positive off-diagonal weights, renormalise
    (ratio 0: the map as it is)."""
    out = matrix.clone()
    if ratio == 0:
        return out
    for b in range(matrix.shape[0]):
        for i in range(matrix.shape[1]):
            row = matrix[b, i].tolist()
            candidates = sorted(
                (row[j], j) for j in range(len(row)) if j != i and row[j] > 0
            )  # ties: lower column first
            for _, j in candidates[: math.floor(ratio * len(candidates))]:
                out[b, i, j] = 0.0
            out[b, i] /= out[b, i].sum()
    return out


def readout_row(matrix: torch.Tensor) -> torch.Tensor:
    return matrix[:, 0]  # PyHealth-style readout: row 0, every column


def on_inputs(scores: torch.Tensor, key: str, batch) -> torch.Tensor:
    values = batch[key][0] if key == "diagnoses" else batch[key][1]
    real = (values != 0).double()
    return scores[..., None] * real if values.dim() == 3 else scores * real


def rollout_reference(model, batch, head_fusion="mean", ratio=0.0):
    layers = capture_by_hand(copy.deepcopy(model), batch, backward=False)
    out = {}
    for key, pairs in layers.items():
        seq = pairs[0][0].shape[-1]
        result = torch.eye(seq, dtype=torch.float64).repeat(pairs[0][0].shape[0], 1, 1)
        for attention, _ in pairs:
            a = discarded(fused(attention, head_fusion), ratio)
            result = 0.5 * (a + torch.eye(seq, dtype=torch.float64)) @ result
        out[key] = on_inputs(readout_row(result), key, batch)
    return out


def chefer_reference(model, batch):
    layers = capture_by_hand(copy.deepcopy(model), batch, backward=True)
    out = {}
    for key, pairs in layers.items():
        seq = pairs[0][0].shape[-1]
        result = torch.eye(seq, dtype=torch.float64).repeat(pairs[0][0].shape[0], 1, 1)
        for attention, gradient in pairs:
            cam = (heads(gradient) * heads(attention)).clamp(min=0).mean(dim=1)
            result = result + cam @ result
        out[key] = on_inputs(readout_row(result), key, batch)
    return out


def assert_scores(actual, expected, atol=1e-5):
    assert set(actual) == set(FEATURES)
    for key in FEATURES:
        assert actual[key].shape == expected[key].shape, key
        torch.testing.assert_close(actual[key].double(), expected[key], atol=atol, rtol=0)


# ----------------------------------------------------------------------------- the methods
@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_rollout_equals_the_reference(model, batch, head_fusion, ratio):
    scores = AttentionRollout(model, head_fusion=head_fusion, discard_ratio=ratio).attribute(
        **batch
    )
    assert_scores(scores, rollout_reference(model, batch, head_fusion, ratio))
    assert scores["diagnoses"].shape == batch["diagnoses"][0].shape  # like the value tensor
    assert scores["visits"].shape == batch["visits"][1].shape
    assert float(scores["diagnoses"][2, -2:].abs().sum()) == 0.0  # padding exactly 0


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_rollout_under_no_grad_gives_the_same_scores(model, batch, context):
    expected = AttentionRollout(model).attribute(**batch)
    manager = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with manager:
        scores = AttentionRollout(model).attribute(**batch)
    for key in FEATURES:  # another autograd mode may pick other kernels: float32 rounding
        torch.testing.assert_close(scores[key], expected[key], **FLOAT32_ACROSS)


def test_raw_attention_is_the_last_layers_row_zero(model, batch):
    layers = capture_by_hand(copy.deepcopy(model), batch, backward=False)
    expected = {
        k: on_inputs(readout_row(fused(p[-1][0], "mean")), k, batch) for k, p in layers.items()
    }
    assert_scores(RawAttention(model).attribute(**batch), expected)


def test_flow_equals_networkx_max_flow(model, batch):
    layers = capture_by_hand(copy.deepcopy(model), batch, backward=False)
    with torch.no_grad():
        scores = AttentionFlow(model, normalize=False).attribute(**batch)
    for key, pairs in layers.items():
        a_hat = torch.stack([fused(a, "mean") for a, _ in pairs], dim=1)
        a_hat = (0.5 * (a_hat + torch.eye(a_hat.shape[-1], dtype=torch.float64))).numpy()
        sink = np.zeros(a_hat.shape[-1])
        sink[0] = 1.0
        flows = torch.tensor(np.stack([nx_flow(a, sink, one_hot=True) for a in a_hat]))
        expected = on_inputs(flows, key, batch)
        torch.testing.assert_close(scores[key].double(), expected, atol=1e-6, rtol=1e-6)


def test_chefer_equals_the_reference_and_leaves_parameter_grads_alone(model, batch):
    params = list(model.parameters())
    for i, p in enumerate(params[::2]):
        p.grad = torch.full_like(p, 0.25 * (i + 1))
    before = [None if p.grad is None else p.grad.clone() for p in params]
    scores = CheferRelevance(model).attribute(**batch)
    assert_scores(scores, chefer_reference(model, batch))
    for p, grad in zip(params, before, strict=True):
        if grad is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, grad)


def test_chefer_explains_the_negative_class_with_the_negated_logit(model, batch):
    positive = CheferRelevance(model).attribute(target_class_idx=1, **batch)
    negative = CheferRelevance(model).attribute(target_class_idx=0, **batch)
    assert_scores(positive, chefer_reference(model, batch))
    assert any(not torch.allclose(positive[k], negative[k]) for k in FEATURES)


@pytest.mark.parametrize("method", [AttentionRollout, AttentionFlow, RawAttention, CheferRelevance])
def test_no_hook_stays_on_and_train_eval_modes_are_restored(model, batch, method):
    model.train()
    model.encoders["visits"][0].eval()  # a caller's mix of modes
    modes = {name: m.training for name, m in model.named_modules()}
    method(model).attribute(**batch)
    assert model._attention_hooks_enabled is False
    assert {name: m.training for name, m in model.named_modules()} == modes


# ----------------------------------------------------------------------------- clear errors
def test_a_frozen_legacy_model_under_no_grad_says_why(model, batch):
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad(), pytest.raises(RuntimeError, match="registers attention-gradient hooks"):
        AttentionRollout(model).attribute(**batch)
    with pytest.raises(RuntimeError, match="none of its parameters requires grad"):
        CheferRelevance(model).attribute(**batch)


def test_a_model_with_no_attention_layers_is_an_error_not_zeros(batch):
    class NoLayers(Registered):
        def get_attention_layers(self):
            return {key: [] for key in self.feature_keys}

    register(NoLayers)
    with pytest.raises(RuntimeError, match="no attention layers"):
        AttentionRollout(NoLayers().eval()).attribute(**batch)


def test_a_model_without_gradient_hooks_is_refused_by_chefer(batch):
    class NoGradients(Registered):
        def get_attention_layers(self):
            return {k: [(a, None) for a, _ in v] for k, v in super().get_attention_layers().items()}

    register(NoGradients)
    with pytest.raises(RuntimeError, match="captured no attention gradient"):
        CheferRelevance(NoGradients().eval()).attribute(**batch)


def test_an_unknown_tuple_layout_names_the_feature(batch):
    class NoLayouts(Registered):
        def __init__(self):
            super().__init__()
            del self.dataset

    register(NoLayouts)
    odd = dict(batch, diagnoses=(*batch["diagnoses"], batch["diagnoses"][1], batch["diagnoses"][1]))
    model = NoLayouts().eval()
    model.forward = lambda **b: Registered.forward(model, **dict(b, diagnoses=b["diagnoses"][:2]))
    with pytest.raises(ValueError, match="feature 'diagnoses': a tuple of 4 tensors"):
        AttentionRollout(model).attribute(**odd)


# ----------------------------------------------------------------------------- opting in
class PyHealthCheferInterpretable(ABC):
    """Stands for PyHealth's own ABC: unknown to ehrlens."""

    @abstractmethod
    def set_attention_hooks(self, enabled): ...


class ForeignModel(PyHealthStyleTransformer, PyHealthCheferInterpretable):
    pass


def test_a_model_of_a_foreign_interface_is_refused_until_opted_in(batch):
    model = ForeignModel().eval()
    assert not isinstance(model, AttentionInterpretable)
    with pytest.raises(TypeError, match="AttentionInterpretable"):
        AttentionRollout(model)
    wrapped = PyHealthModel(model)
    assert isinstance(wrapped, GradientInterpretable)
    assert_scores(AttentionRollout(wrapped).attribute(**batch), rollout_reference(model, batch))
    assert_scores(CheferRelevance(wrapped).attribute(**batch), chefer_reference(model, batch))


def test_register_checks_the_methods_and_keeps_the_alias():
    assert CheferInterpretable is GradientInterpretable

    class Incomplete(nn.Module):
        def set_attention_hooks(self, enabled): ...

    with pytest.raises(TypeError, match="lacks get_attention_layers, get_relevance_tensor"):
        register(Incomplete)
    with pytest.raises(TypeError, match="lacks"):
        PyHealthModel(Incomplete())

    class Later(ForeignModel):
        pass

    assert not isinstance(Later(), CheferInterpretable)
    assert register(Later) is Later
    assert isinstance(Later(), CheferInterpretable)


def test_the_readme_snippet_runs_on_a_pyhealth_style_model(capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Coming from PyHealth", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    torch.manual_seed(0)

    class ReadmeModel(PyHealthStyleTransformer):  # a class of its own: the snippet registers it
        pass

    namespace = {"model": ReadmeModel().eval(), "batch": make_batch()}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.strip() == "{'diagnoses': (3, 6), 'visits': (3, 4, 3)}"
    assert_scores(
        namespace["rollout"], rollout_reference(namespace["model"], namespace["batch"], "max")
    )
