"""AttnLRP on ehrlens's Transformer: conservation, the rules' effect, and the contract.

Conservation, accounted in full: the explained logit equals the relevance of the inputs
(what AttnLRP returns) plus the shares of every additive constant (position encodings, the
[CLS] tokens, biases, layer-norm offsets) plus the softmax bias terms (Proposition 3.1 of the
paper: ``sum(R_out) - sum(R_in)`` at each softmax). The reference computes every share on its
own from the captured attention maps and gradients and from the parameters, in float64; the
tolerance (1e-6 relative) is the float32 rounding of the returned scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import torch
from torch import nn

from ehrlens.data.dataset import create_sample_dataset
from ehrlens.data.synthetic import generate_cohort
from ehrlens.interpret import AttnLRP, InputXGradient, make_interpreter
from ehrlens.interpret.api import lrp_rules
from ehrlens.models import StageAttentionNet, Transformer
from ehrlens.models.embedding import sinusoidal_positions


@dataclass
class Case:
    dataset: Any
    model: nn.Module
    batch: dict[str, Any]
    indices: list[int]

    @property
    def keys(self) -> list[str]:
        return list(self.dataset.feature_keys)

    def collate(self, indices: list[int]) -> dict[str, Any]:
        return self.dataset.collate([self.dataset[i] for i in indices])


@cache
def _dataset(layout: str):
    cohort = generate_cohort(n_patients=40, layout=layout, seed=3)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


def make_case(name: str, layout: str) -> Case:
    """A small seeded model and a batch of 8 patients of a synthetic cohort."""
    dataset = _dataset(layout)
    torch.manual_seed(0)
    if name == "Transformer":
        model: nn.Module = Transformer(dataset, embedding_dim=16, heads=2, num_layers=3)
    else:
        model = StageAttentionNet(dataset, embedding_dim=16, chunk_size=8, levels=2, heads=2)
    indices = list(range(8))
    return Case(dataset, model, dataset.collate([dataset[i] for i in indices]), indices)


def double_case(layout: str = "sequence", layers: int = 2):
    case = make_case("Transformer", layout)
    torch.manual_seed(1)
    model = type(case.model)(case.dataset, embedding_dim=8, heads=2, num_layers=layers)
    with torch.no_grad():  # nonzero biases and offsets everywhere, so that their shares count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.3)
    return case, model.double().eval()


def softmax_share(attention, gradient):
    """``sum(R_A) - sum(R_scores)`` of one softmax, from its output ``A`` and the gradient
    at ``A``: the uniform rule gives ``A V``'s factor ``A`` half (``h = grad / 2``), and the
    scores ``x`` (``log A`` up to a shift per row, which the rule does not see) get
    ``x * (h - sum(A h))`` per element (Proposition 3.1)."""
    h = gradient / 2
    r_a = (attention * h).sum()
    centred = h - (attention * h).sum(dim=-1, keepdim=True)
    r_scores = (torch.xlogy(attention, attention) * centred).sum()
    return r_a - r_scores


def accounted_relevance(model, batch, key_order):
    """Every share of the logit but the inputs', computed independently of AttnLRP."""
    encoders = {k: model.encoders[k] for k in key_order}
    embeds = {}

    def keep(key):
        def hook(module, inputs, output):
            leaf = output.detach().requires_grad_(True)
            embeds[key] = leaf
            return leaf

        return hook

    layers = model.get_embedding_layers()
    handles = [layers[k].register_forward_hook(keep(k)) for k in key_order]
    params = dict(model.named_parameters())
    try:
        with torch.enable_grad(), lrp_rules(model):
            model.set_attention_hooks(True, capture_gradients=True)
            try:
                logit = model(**batch)["logit"][:, 0]
                captured = model.get_attention_layers()
                maps = [a for k in key_order for a, _ in captured[k]]
                wrt = [embeds[k] for k in key_order] + maps + list(params.values())
                grads = torch.autograd.grad(logit.sum(), wrt, allow_unused=True)
                grads = tuple(
                    torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)
                )
            finally:
                model.set_attention_hooks(False)
                model.clear_attention_capture()
    finally:
        for handle in handles:
            handle.remove()
    n = len(key_order)
    emb_grads = dict(zip(key_order, grads[:n], strict=True))
    map_grads = grads[n : n + len(maps)]
    param_grads = dict(zip(params, grads[n + len(maps) :], strict=True))
    shares = {}
    # position encodings: added to the token embeddings, so they share their gradient
    total = 0.0
    for key in key_order:
        grad = emb_grads[key]
        pos = sinusoidal_positions(grad.shape[1], grad.shape[2], dtype=grad.dtype)
        total = total + (pos * grad).sum()
    shares["positions"] = total
    shares["cls"] = sum(
        (params[f"encoders.{k}.cls"] * param_grads[f"encoders.{k}.cls"]).sum() for k in key_order
    )
    shares["biases"] = sum(
        (params[name] * param_grads[name]).sum() for name in params if name.endswith("bias")
    )
    shares["softmax"] = sum(
        softmax_share(a.detach(), g) for a, g in zip(maps, map_grads, strict=True)
    )
    assert encoders  # the model has encoders for every key
    return logit.detach(), shares


@pytest.mark.parametrize("layers", [1, 3])
def test_conservation_accounts_for_the_whole_logit(layers):
    case, model = double_case(layers=layers)
    batch = case.batch
    keys = list(case.keys)
    scores = AttnLRP(model).attribute(**batch)
    inputs = sum(scores[k].double().reshape(len(case.indices), -1).sum(dim=1) for k in keys)
    logit, shares = accounted_relevance(model, batch, keys)
    total = inputs.sum() + sum(shares.values())
    assert float(total.detach()) == pytest.approx(float(logit.sum()), rel=1e-6)
    # every share is really there (the accounting is not vacuous)
    for name, share in shares.items():
        assert abs(float(share.detach())) > 1e-6, name
    assert abs(float(inputs.sum())) > 1e-6


def test_scores_are_float32_like_every_method():
    case, model = double_case()
    scores = AttnLRP(model).attribute(**case.batch)
    assert all(s.dtype == torch.float32 for s in scores.values())


def test_the_forward_is_unchanged_and_the_rules_are_removed():
    case = make_case("Transformer", "sequence")
    model = case.model.eval()
    with torch.no_grad():
        before = model(**case.batch)["logit"]
    with lrp_rules(model), torch.no_grad():
        during = model(**case.batch)["logit"]
    assert torch.equal(before, during)  # the rules change only the backward: exact
    AttnLRP(model).attribute(**case.batch)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_rules_change_the_answer_of_gradient_x_input():
    """AttnLRP is input x gradient of the model with the rules attached, so without them it
    would equal InputXGradient; with them it differs (layer norms, GELU, attention)."""
    case = make_case("Transformer", "sequence")
    lrp = AttnLRP(case.model).attribute(**case.batch)
    ixg = InputXGradient(case.model).attribute(**case.batch)
    key = case.keys[0]
    assert not torch.allclose(lrp[key], ixg[key], atol=1e-4)
    # the same interpreter with the rules switched off is InputXGradient
    model = case.model
    model.set_lrp_rules(True)
    model.set_lrp_rules(False)
    assert all(not m._forward_hooks for m in model.modules())


def test_input_x_gradient_equals_attnlrp_on_a_purely_linear_path():
    """With no attention, norm or activation between embedding and logit the rules have
    nothing to change: a zero-layer stand-in is the embedding + head of a Transformer."""
    case = make_case("Transformer", "sequence")
    model = case.model.eval()
    for encoder in model.encoders.values():
        encoder.blocks = nn.ModuleList()  # CLS + positions + final norm remain
        encoder.norm = nn.Identity()  # type: ignore[assignment]
    lrp = AttnLRP(model).attribute(**case.batch)
    ixg = InputXGradient(model).attribute(**case.batch)
    for key in case.keys:
        assert torch.allclose(lrp[key], ixg[key], atol=1e-6)


@pytest.mark.parametrize("layout", ["sequence", "nested"])
def test_shapes_padding_and_batch_independence(layout):
    case = make_case("Transformer", layout)
    lrp = AttnLRP(case.model)
    scores = lrp.attribute(**case.batch)
    for key in case.keys:
        values = case.batch[key]
        assert scores[key].shape == values.shape
        assert torch.all(scores[key][values == 0] == 0)
        assert torch.isfinite(scores[key]).all()
    alone = lrp.attribute(**case.collate([case.indices[2]]))
    for key in case.keys:
        region = tuple(slice(0, n) for n in alone[key].shape[1:])
        assert torch.allclose(alone[key][0], scores[key][2][region], atol=1e-5)


def test_class_zero_is_the_negation_of_class_one():
    case = make_case("Transformer", "sequence")
    lrp = AttnLRP(case.model)
    one = lrp.attribute(target_class_idx=1, **case.batch)
    zero = lrp.attribute(target_class_idx=0, **case.batch)
    for key in case.keys:
        assert torch.allclose(zero[key], -one[key], atol=1e-6)


def test_no_grad_is_fine_inference_mode_is_refused():
    case = make_case("Transformer", "sequence")
    with torch.no_grad():
        scores = AttnLRP(case.model).attribute(**case.batch)
    assert any(bool(s.abs().sum() > 0) for s in scores.values())
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        AttnLRP(case.model).attribute(**case.batch)


def test_frozen_parameters_still_get_relevance():
    case = make_case("Transformer", "sequence")
    for p in case.model.parameters():
        p.requires_grad_(False)
    scores = AttnLRP(case.model).attribute(**case.batch)
    assert all(bool(s.abs().sum() > 0) for s in scores.values())


def test_models_without_rules_are_refused_naming_the_capability():
    case = make_case("StageAttentionNet", "stagenet")
    with pytest.raises(TypeError, match="lrp_rules"):
        AttnLRP(case.model)


def test_registered_by_name_with_its_declaration():
    case = make_case("Transformer", "sequence")
    lrp = make_interpreter("attnlrp", case.model)
    assert isinstance(lrp, AttnLRP)
    assert lrp.get_params() == {}
    assert AttnLRP.gradient_free is False
    assert math.isfinite(float(lrp.attribute(**case.batch)[case.keys[0]].sum()))


def test_scores_are_per_code_on_nested_visits():
    from ehrlens.interpret import score_levels

    case = make_case("Transformer", "nested")
    assert set(score_levels(AttnLRP(case.model)).values()) == {"code"}
    scores = AttnLRP(case.model).attribute(**case.batch)
    key = case.keys[0]
    visit = scores[key][0, 0][case.batch[key][0, 0] != 0]
    assert visit.numel() < 2 or not torch.allclose(visit, visit[:1].expand_as(visit))
