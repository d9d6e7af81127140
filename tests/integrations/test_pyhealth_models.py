"""Every PyHealth interface and model kind, explained unchanged (``_pyhealth_versions.py``).

References are computed here, in float64, from what the models keep on their modules after a
forward and backward run by hand, following PyHealth's own interpreters step by step: for
PyHealth 2.0a13's ``CheferRelevance``, ``R <- R + mean_h(clamp(grad * attn, 0)) @ R`` from
``R = I`` over ``transformer[key].transformer[i].attention``, row 0; for gradient methods,
autograd on the embedding layers' outputs captured with forward hooks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _pyhealth_style import PyHealthStyleTransformer, TupleLayout
from _pyhealth_style import make_batch as make_style_batch
from _pyhealth_versions import A13Transformer, RetainStyle, RNNStyle, make_batch
from torch import nn

from ehrlens.integrations import pyhealth
from ehrlens.integrations.pyhealth import (
    PyHealthGradientModel,
    PyHealthModel,
    interface_of,
    register,
    wrap,
)
from ehrlens.interpret import (
    AttentionRollout,
    CheferRelevance,
    GradientInterpretable,
    InputXGradient,
)
from ehrlens.interpret.methods.base import map_to_input_shapes

A13_KEYS = ("diagnoses", "labs", "visits")


@pytest.fixture
def a13() -> A13Transformer:
    torch.manual_seed(1)
    return A13Transformer().eval()


@pytest.fixture
def batch():
    return make_batch()


def a13_batch(batch):
    return {k: v for k, v in batch.items() if k != "vitals"}


# ----------------------------------------------------------------------------- references
def on_inputs(key, row, batch):
    """Per-position scores -> the input's shape, as ehrlens lays them out: codes and visit
    codes masked by their pad id, a float vector one score ``[batch, 1]``."""
    values = batch[key]
    if key == "labs":
        return row.reshape(-1, 1)
    real = (values != 0).double()
    return row[..., None] * real if values.dim() == 3 else row * real


def fresh_copy(model):
    """A deep copy (2.0a13 modules keep live maps, which cannot be copied: dropped first)."""
    for module in model.modules():
        if hasattr(module, "attn_map"):
            module.attn_map = module.attn_gradients = None
    return copy.deepcopy(model).eval()


def a13_reference(model, batch, method="chefer", column=0):
    """PyHealth 2.0a13's Chefer (or rollout) on the modules of a copy of ``model``."""
    model = fresh_copy(model)
    logit = model(**batch, register_hook=True)["logit"]
    logit[:, column].sum().backward()
    out = {}
    for key in A13_KEYS:
        blocks = model.transformer[key].transformer
        seq = blocks[0].attention.get_attn_map().shape[-1]
        eye = torch.eye(seq, dtype=torch.float64)
        r = eye.repeat(logit.shape[0], 1, 1)
        for block in blocks:
            attn = block.attention.get_attn_map().detach().double()
            if method == "chefer":
                grad = block.attention.get_attn_grad().double()
                r = r + (grad * attn).clamp(min=0).mean(dim=1) @ r
            else:
                r = 0.5 * (attn.mean(dim=1) + eye) @ r
        out[key] = on_inputs(key, r[:, 0], batch)
    return out


def gradient_reference(model, batch, keys, column=0, sign=1.0):
    """Embedding output x its gradient, summed over the embedding, per unit (float64)."""
    model = fresh_copy(model).double()
    batch = {
        k: (
            tuple(t.double() if t.is_floating_point() else t for t in v)
            if isinstance(v, tuple)
            else v.double()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
            else v
        )
        for k, v in batch.items()
    }
    outputs = {}

    def keep(key):
        def hook(module, inputs, output):
            output.retain_grad()
            outputs[key] = output

        return hook

    handles = [
        model.embedding_model.embedding_layers[k].register_forward_hook(keep(k)) for k in keys
    ]
    (sign * model(**batch)["logit"][:, column]).sum().backward()
    for h in handles:
        h.remove()
    out = {}
    for key in keys:
        scores = (outputs[key] * outputs[key].grad).sum(dim=-1)
        values = batch[key][1] if isinstance(batch[key], tuple) else batch[key]
        if key == "labs":
            out[key] = scores.reshape(-1, 1)
        elif values.is_floating_point():  # a time series: each step's score on its values
            out[key] = scores[..., None].expand_as(values)
        else:  # codes and visit codes: each code its own score, padding 0
            out[key] = scores * (values != 0)
    return out


def assert_scores(actual, expected, atol=1e-5):
    assert set(actual) == set(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        torch.testing.assert_close(actual[key].double(), expected[key].double(), atol=atol, rtol=0)


# ----------------------------------------------------------------------------- interfaces
def test_each_interface_is_recognised():
    assert interface_of(A13Transformer()) == "register_hook"
    assert interface_of(PyHealthStyleTransformer()) == "hooks"
    assert interface_of(RNNStyle()) == "embeddings"
    assert interface_of(RetainStyle()) == "embeddings"
    assert interface_of(nn.Linear(2, 2)) is None
    assert type(wrap(A13Transformer())) is PyHealthModel
    assert type(wrap(RNNStyle())) is PyHealthGradientModel


def test_wrappers_refuse_what_they_cannot_explain_and_say_what_to_use():
    with pytest.raises(TypeError, match="no attention maps; use PyHealthGradientModel"):
        PyHealthModel(RNNStyle())
    with pytest.raises(TypeError, match="no embedding layers"):
        PyHealthGradientModel(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"wrap\(model\)"):
        register(A13Transformer)
    with pytest.raises(TypeError, match="AttentionInterpretable"):
        pyhealth.CheferRelevance(RNNStyle())


# ----------------------------------------------------------------------------- 2.0a13
def test_chefer_on_a_2_0a13_transformer_equals_pyhealths_algorithm(a13, batch):
    batch = a13_batch(batch)
    model = PyHealthModel(a13)
    assert isinstance(model, GradientInterpretable)
    scores = CheferRelevance(model).attribute(**batch)
    expected = a13_reference(a13, batch)
    assert_scores(scores, expected)
    assert scores["labs"].shape == (3, 1)  # one position: one score per sample
    assert scores["visits"].shape == (3, 4, 3)
    assert float(scores["visits"][2, 2:].abs().sum()) == 0.0  # padded visits exactly 0
    assert model._register_hook is False  # capture switched off again
    assert all(m.attention.attn_map is None for m in a13.transformer["labs"].transformer)


def test_rollout_on_a_2_0a13_transformer_equals_the_reference_under_no_grad(a13, batch):
    batch = a13_batch(batch)
    with torch.no_grad():
        scores = AttentionRollout(PyHealthModel(a13)).attribute(**batch)
    assert_scores(scores, a13_reference(a13, batch, method="rollout"))


def test_capture_leaves_no_live_map_in_what_interpreters_read(a13, batch):
    model = PyHealthModel(a13)
    a13(**a13_batch(batch), register_hook=True)
    for pairs in model.get_attention_layers().values():
        for attention, gradient in pairs:
            assert not attention.requires_grad and attention.grad_fn is None
            assert gradient is None


# ----------------------------------------------------------------------------- PyHealth's call
def test_pyhealth_call_class_index_zero_is_the_binary_logit(a13, batch):
    batch = a13_batch(batch)
    expected = a13_reference(a13, batch)
    relevance = pyhealth.CheferRelevance(a13)
    assert_scores(relevance.attribute(**batch, class_index=0), expected)  # 2.0a13 style
    assert_scores(relevance.attribute(0, **batch), expected)  # 2.0.x style
    assert_scores(relevance.get_relevance_matrix(**batch), expected)  # default: the logit
    assert_scores(relevance.attribute(**batch, register_hook=True), expected)
    # ehrlens's own numbering: 0 is the negated logit, so its scores differ
    negative = CheferRelevance(PyHealthModel(a13)).attribute(target_class_idx=0, **batch)
    assert any(not torch.allclose(negative[k], expected[k].float()) for k in A13_KEYS)


def test_pyhealth_call_refuses_a_binary_index_it_would_silently_reinterpret(a13, batch):
    relevance = pyhealth.CheferRelevance(a13)
    with pytest.raises(ValueError, match="class_index=1: a binary PyHealth model has one logit"):
        relevance.attribute(**a13_batch(batch), class_index=1)
    with pytest.raises(ValueError, match="disagree"):
        relevance.attribute(2, **a13_batch(batch), class_index=0)


def test_pyhealth_call_multiclass_index_is_the_logit_column(batch):
    torch.manual_seed(2)
    model = A13Transformer(outputs=3).eval()
    batch = a13_batch(batch)
    scores = pyhealth.CheferRelevance(model).attribute(**batch, class_index=2)
    assert_scores(scores, a13_reference(model, batch, column=2))
    assert pyhealth.pyhealth_target(torch.tensor([0, 0]), "binary") == 1
    assert pyhealth.pyhealth_target(0, None, outputs=1) == 1  # mode unknown, one logit
    assert pyhealth.pyhealth_target(0, None, outputs=3) == 0


# ----------------------------------------------------------------------------- single positions
def test_a_vector_is_one_position_only_for_a_model_that_says_so():
    relevance = {"labs": torch.tensor([[2.0], [3.0]])}
    values = {"labs": torch.rand(2, 3)}
    with pytest.raises(ValueError, match="feature 'labs': relevance shape"):
        map_to_input_shapes(relevance, values)
    one = map_to_input_shapes(relevance, values, single_positions=frozenset({"labs"}))
    assert one["labs"].tolist() == [[2.0], [3.0]]
    with pytest.raises(ValueError, match="feature 'labs': one attention position per sample"):
        map_to_input_shapes(
            {"labs": torch.rand(2, 3)}, values, single_positions=frozenset({"labs"})
        )


# ----------------------------------------------------------------------------- trailing mask
class StageStyle(PyHealthStyleTransformer):
    """A 2.0.x model whose ``visits`` schema is ``(time, value)``; like PyHealth's
    ``StageAttentionNet`` it takes the mask as an extra last element."""

    def __init__(self):
        super().__init__()
        self.dataset.input_processors["visits"] = TupleLayout("time", "value")

    def forward(self, **batch):
        times, visits, *mask = batch["visits"]
        full = (times, visits, mask[0] if mask else visits != 0)
        return super().forward(**dict(batch, visits=full))


register(StageStyle)


def test_a_trailing_mask_is_read_as_the_mask():
    torch.manual_seed(0)
    model = StageStyle().eval()
    batch = make_style_batch()
    scores = AttentionRollout(model).attribute(**batch)  # visits: (time, value, mask)
    short = dict(batch, visits=batch["visits"][:2])
    assert_scores(scores, AttentionRollout(model).attribute(**short), atol=0)
    assert scores["visits"].shape == batch["visits"][1].shape
    odd = dict(batch, visits=(*batch["visits"], batch["visits"][2]))
    with pytest.raises(ValueError, match=r"schema\(\) names \('time', 'value'\): expected 2"):
        AttentionRollout(model).attribute(**odd)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", [RNNStyle, RetainStyle, A13Transformer])
def test_input_x_gradient_reaches_every_code_of_every_model(kind, batch):
    torch.manual_seed(4)
    model = kind().eval()
    keys = tuple(model.feature_keys)
    if kind is A13Transformer:
        batch = a13_batch(batch)
    scores = pyhealth.InputXGradient(model).attribute(**batch)
    expected = gradient_reference(model, batch, keys)
    assert_scores(scores, expected)
    if "visits" in keys:
        assert scores["visits"].shape == (3, 4, 3)  # code level, not visit level
        assert float(scores["visits"][:, 0, 2].abs().sum()) == 0.0  # padded code
    # ehrlens's numbering through the wrapper: class 0 is the negated logit
    negative = InputXGradient(wrap(model)).attribute(target_class_idx=0, **batch)
    assert_scores(negative, gradient_reference(model, batch, keys, sign=-1.0))


def test_integrated_gradients_complete_on_a_model_without_attention(batch):
    torch.manual_seed(5)
    model = RNNStyle().double().eval()
    batch = {
        **batch,
        "labs": batch["labs"].double(),
        "vitals": (batch["vitals"][0].double(), batch["vitals"][1].double()),
    }
    scores = pyhealth.IntegratedGradients(model, n_steps=64).attribute(**batch)
    baseline = {
        **batch,
        "visits": torch.zeros_like(batch["visits"]),
        "labs": torch.zeros_like(batch["labs"]),
        "vitals": (batch["vitals"][0], torch.zeros_like(batch["vitals"][1])),  # times kept
    }
    with torch.no_grad():
        gap = model(**batch)["logit"][:, 0] - model(**baseline)["logit"][:, 0]
    steps = scores["vitals"][..., 0]  # a step's score is spread over each of its values
    parts = [scores["visits"], scores["labs"], steps]
    total = sum(s.double().flatten(start_dim=1).sum(dim=1) for s in parts)
    # padded codes are pad ids in both ends of the path: they take no share
    torch.testing.assert_close(total, gap, atol=1e-4, rtol=1e-4)
    assert scores["labs"].shape == (3, 1)
    assert scores["vitals"].shape == (3, 4, 2)
