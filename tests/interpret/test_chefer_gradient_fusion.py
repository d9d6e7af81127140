"""Chefer with gradient fusion at capture: ``mean_h(clamp(grad * A, min=0))`` computed in the
backward as each layer's gradient arrives, against the per-head path and the reference."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ehrlens.interpret import CheferRelevance, capture_attention
from ehrlens.interpret.api import capabilities
from ehrlens.interpret.methods.chefer import gradient_weighted_attention
from ehrlens.models import StageAttentionNet, Transformer
from ehrlens.models.capture import ENCODER_MODEL_CAPABILITIES

CASES = [
    ("Transformer", "sequence"),
    ("Transformer", "nested"),
    ("StageAttentionNet", "stagenet"),
    ("StageAttentionNet", "sequence"),
]
CASE_IDS = [f"{name}-{layout}" for name, layout in CASES]


PER_HEAD = dataclasses.replace(ENCODER_MODEL_CAPABILITIES, gradient_fusion=False)


class PerHeadTransformer(Transformer):
    """The same model without gradient fusion: Chefer takes its per-head path."""

    interpret_capabilities = PER_HEAD


class PerHeadStageNet(StageAttentionNet):
    interpret_capabilities = PER_HEAD


@pytest.fixture
def make(cases):
    def build(name: str, layout: str, dtype: torch.dtype = torch.float32):
        dataset = cases.dataset(layout)
        model = cases.build_model(name, dataset).to(dtype)
        per_head = cases.build_model(name, dataset).to(dtype)
        per_head.__class__ = PerHeadTransformer if name == "Transformer" else PerHeadStageNet
        batch = dataset.collate([dataset[i] for i in range(8)])
        return model, per_head, batch

    return build


def test_ehrlens_models_declare_gradient_fusion(make):
    model, per_head, _ = make("Transformer", "sequence")
    assert capabilities(model).gradient_fusion
    assert not capabilities(per_head).gradient_fusion


@pytest.mark.parametrize(("name", "layout"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("target", [None, 0, 1])
def test_fused_path_equals_per_head_path(make, name, layout, target):
    model, per_head, batch = make(name, layout, torch.float64)
    fused = CheferRelevance(model).attribute(target, **batch)
    reference = CheferRelevance(per_head).attribute(target, **batch)
    assert fused.keys() == reference.keys()
    for key in fused:
        assert bool(reference[key].abs().sum() > 0)
        torch.testing.assert_close(fused[key], reference[key], atol=1e-12, rtol=0)


@pytest.mark.parametrize(("name", "layout"), CASES, ids=CASE_IDS)
def test_fused_path_equals_reference(make, name, layout, ref):
    model, _, batch = make(name, layout, torch.float64)
    scores = CheferRelevance(model).attribute(None, **batch)
    expected = ref.chefer(model, batch)
    for key in scores:
        torch.testing.assert_close(scores[key], expected[key], atol=1e-12, rtol=0)


def test_each_layer_keeps_only_its_fused_map(make, monkeypatch):
    model, _, batch = make("Transformer", "sequence")
    formed = []  # no per-head map is ever formed whole: neither in the forward nor backward
    for modules in model.attention_modules().values():
        for module in modules:
            original = module.attention_weights
            monkeypatch.setattr(
                module,
                "attention_weights",
                lambda q, k, m, original=original: formed.append(q.shape) or original(q, k, m),
            )
    with capture_attention(
        model, batch, gradients=True, gradient_fusion=gradient_weighted_attention
    ) as run:
        with pytest.raises(RuntimeError, match="get_fused_gradients"):
            model.get_attention_layers()
        anchors = model.get_gradient_anchors()
        assert len(anchors) == sum(len(m) for m in model.attention_modules().values())
        # The anchors are the layers' attention outputs [batch, heads, seq, head_dim].
        assert all(a.dim() == 4 and a.shape[-1] != a.shape[-2] for a in anchors)
        shapes = [tuple(a.shape) for a in anchors]
        torch.autograd.grad(run.outputs["logit"][:, 0].sum(), anchors)
        fused = [m for maps in model.get_fused_gradients().values() for m in maps]
        for tensor, (batch_size, _, seq, _) in zip(fused, shapes, strict=True):
            assert tuple(tensor.shape) == (batch_size, seq, seq)
        with pytest.raises(RuntimeError, match="get_fused_gradients"):
            model.get_attention_layers()
    assert formed == []


def test_fused_maps_equal_fusing_per_head_gradients(make):
    model, _, batch = make("Transformer", "nested", torch.float64)
    with torch.enable_grad(), capture_attention(model, batch, gradients=True) as run:
        layers = model.get_attention_layers()
        maps = [a for v in layers.values() for a, _ in v]
        grads = torch.autograd.grad(run.outputs["logit"][:, 0].sum(), maps)
        pairs = zip(maps, grads, strict=True)
        expected = [(g * a.detach()).clamp(min=0).mean(dim=1) for a, g in pairs]
    with capture_attention(
        model, batch, gradients=True, gradient_fusion=gradient_weighted_attention
    ) as run:
        torch.autograd.grad(run.outputs["logit"][:, 0].sum(), model.get_gradient_anchors())
        fused = [m for v in model.get_fused_gradients().values() for m in v]
    assert len(fused) == len(expected)
    for got, want in zip(fused, expected, strict=True):
        assert bool(want.abs().sum() > 0)
        torch.testing.assert_close(got, want, atol=1e-13, rtol=0)


def test_unreached_map_gives_zeros(make):
    # The top layer's map reaches the [CLS] readout only through its [CLS] row; a target that
    # ignores the model (0 * logit) reaches no map at all: every fused map is exactly 0.
    model, _, batch = make("Transformer", "sequence")
    with capture_attention(
        model, batch, gradients=True, gradient_fusion=gradient_weighted_attention
    ) as run:
        target = (0 * run.outputs["logit"][:, 0]).sum() + next(model.parameters()).sum()
        torch.autograd.grad(target, model.get_gradient_anchors(), allow_unused=True)
        fused = model.get_fused_gradients()
    assert all(bool((m == 0).all()) for maps in fused.values() for m in maps)


def test_second_backward_is_refused(make):
    model, _, batch = make("Transformer", "sequence")
    with capture_attention(
        model, batch, gradients=True, gradient_fusion=gradient_weighted_attention
    ) as run:
        target = run.outputs["logit"][:, 0].sum()
        anchors = model.get_gradient_anchors()
        torch.autograd.grad(target, anchors, retain_graph=True)
        with pytest.raises(RuntimeError, match="one backward per captured forward"):
            torch.autograd.grad(target, anchors)


def test_gradient_fusion_needs_gradients(make):
    model, _, batch = make("Transformer", "sequence")
    with pytest.raises(TypeError, match="gradient_fusion needs gradients=True"):
        with capture_attention(model, batch, gradient_fusion=gradient_weighted_attention):
            pass
    with pytest.raises(ValueError, match="needs capture_gradients=True"):
        model.set_attention_hooks(
            True, capture_gradients=False, gradient_fusion=gradient_weighted_attention
        )
    model.set_attention_hooks(False)


def test_frozen_model_is_refused_naming_why(make):
    model, _, batch = make("Transformer", "sequence")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(RuntimeError, match="no captured attention map requires grad"):
        CheferRelevance(model).attribute(None, **batch)


def _batch_with_an_empty_feature(keys: list[str]):
    """One patient whose ``codes`` has no step (so the batch's ``codes`` sequence is empty),
    with a patient seen only at fit time; StageAttentionNet, 8 wide, 1 head, 1 layer."""
    from ehrlens.data import create_sample_dataset

    values = {"codes": [], "demo": [0.5, -1.0, 2.0]}
    fit = {"codes": [f"C{i}" for i in range(4)], "demo": [0.0, 0.0, 0.0]}
    schema = {"codes": "sequence", "demo": "tensor"}
    samples = [
        {"patient_id": "p0", **{k: values[k] for k in keys}, "y": 0},
        {"patient_id": "fit", **{k: fit[k] for k in keys}, "y": 1},
    ]
    dataset = create_sample_dataset(samples, {k: schema[k] for k in keys}, {"y": "binary"})
    kwargs = dict(embedding_dim=8, heads=1, attention_layers=1, chunk_size=4, levels=2)
    torch.manual_seed(0)
    model = StageAttentionNet(dataset, **kwargs).double().eval()
    per_head = StageAttentionNet(dataset, **kwargs).double().eval()
    per_head.load_state_dict(model.state_dict())
    per_head.__class__ = PerHeadStageNet
    return model, per_head, dataset.collate(dataset.items[:1])


@pytest.mark.parametrize("keys", [["codes"], ["codes", "demo"]], ids=["alone", "with-demo"])
def test_feature_without_any_step_in_the_batch(keys):
    """An attention layer over an empty sequence still anchors the backward: Chefer scores
    the empty feature (shape ``[1, 0]``) instead of refusing the model as frozen, and agrees
    with the per-head path on every feature."""
    model, per_head, batch = _batch_with_an_empty_feature(keys)
    fused = CheferRelevance(model).attribute(None, **batch)
    reference = CheferRelevance(per_head).attribute(None, **batch)
    assert fused.keys() == reference.keys() == set(keys)
    assert fused["codes"].shape == batch["codes"].shape == (1, 0)
    for key in fused:
        torch.testing.assert_close(fused[key], reference[key], atol=1e-12, rtol=0)


@pytest.mark.parametrize(("name", "layout"), CASES, ids=CASE_IDS)
def test_carried_rows_equal_rows_through_stored_fused_maps(make, name, layout):
    # Chefer carries its readout rows down the layers inside the backward; the same rows
    # carried after the backward through every stored fused map (the path kept for models
    # without route_fused_gradients) must agree.
    from ehrlens.interpret.methods.chefer import chefer_step
    from ehrlens.interpret.methods.propagation import readout_relevance

    model, _, batch = make(name, layout, torch.float64)
    interpreter = CheferRelevance(model)
    carried = interpreter.attribute(1, **batch)
    cams = interpreter._fused_in_backward(1, batch)
    stored = interpreter._input_scores(readout_relevance(model, cams, chefer_step, batch), batch)
    for key in carried:
        assert bool(stored[key].abs().sum() > 0)
        torch.testing.assert_close(carried[key], stored[key], atol=1e-13, rtol=0)


def test_carried_path_keeps_no_fused_map_and_gets_layers_top_down(make, monkeypatch):
    import itertools

    model, _, batch = make("Transformer", "nested")
    routes: list[tuple[str, int]] = []
    route = model.route_fused_gradients

    def spy_route(sinks):
        def wrapped(key, layer):
            sink = sinks(key, layer)

            def record(rows, fused):
                routes.append((key, layer))
                sink(rows, fused)
                slots = [c.slot for v in model._captures().values() for c in v]
                assert slots and all(slot.fused_gradient is None for slot in slots)

            return record

        route(wrapped)

    monkeypatch.setattr(model, "route_fused_gradients", spy_route)
    CheferRelevance(model).attribute(None, **batch)
    for key, modules in model.attention_modules().items():
        layers = [layer for k, layer in routes if k == key]
        runs = [layer for layer, _ in itertools.groupby(layers)]
        # Every layer delivers its blocks together, top layer first.
        assert runs == list(reversed(range(len(modules))))


def test_carrier_refuses_layers_that_arrive_bottom_up():
    from ehrlens.interpret.methods.chefer import ReadoutRowCarrier

    carrier = ReadoutRowCarrier(torch.tensor([[1.0, 0.0]]))
    block = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    carrier.sink(0)(slice(0, 2), block)
    with pytest.raises(RuntimeError, match="arrived after layer 0"):
        carrier.sink(1)(slice(0, 2), block)


def test_carrier_applies_each_layer_to_the_rows_before_it():
    # Two layers, top first: rows <- rows + rows @ cam, with exact hand-computed numbers.
    from ehrlens.interpret.methods.chefer import ReadoutRowCarrier

    carrier = ReadoutRowCarrier(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    top = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]], dtype=torch.float64)
    bottom = torch.tensor([[[1.0, 0.0], [0.25, 0.75]]], dtype=torch.float64)
    carrier.sink(1)(slice(0, 1), top[:, :1])  # blocks of one row each
    carrier.sink(1)(slice(1, 2), top[:, 1:])
    carrier.sink(0)(slice(0, 2), bottom)
    # after top: [1, 0] + [0.5, 0.5] = [1.5, 0.5]
    # after bottom: [1.5, 0.5] + [1.5 * 1 + 0.5 * 0.25, 0.5 * 0.75] = [3.125, 0.875]
    torch.testing.assert_close(
        carrier.result(), torch.tensor([[3.125, 0.875]], dtype=torch.float64), atol=0, rtol=0
    )


def test_routing_is_a_declared_capability_and_detected_from_the_class(make):
    # ehrlens's models declare gradient routing; a class that declares nothing is read
    # from its methods; without routing, Chefer takes the stored-map path (same scores).
    from ehrlens.interpret.api import _detect_capabilities

    model, _, _ = make("Transformer", "sequence")
    assert capabilities(model).gradient_routing
    assert _detect_capabilities(Transformer).gradient_routing

    class NoRouting:
        def set_attention_hooks(self, enabled, capture_gradients=True, gradient_fusion=None):
            pass

    assert not _detect_capabilities(NoRouting).gradient_routing


def test_without_routing_chefer_keeps_the_stored_map_path(make):
    model, _, batch = make("Transformer", "nested", torch.float64)
    routed = CheferRelevance(model).attribute(None, **batch)
    model.__class__ = type(
        "UnroutedTransformer",
        (Transformer,),
        {
            "interpret_capabilities": dataclasses.replace(
                ENCODER_MODEL_CAPABILITIES, gradient_routing=False
            )
        },
    )
    stored = CheferRelevance(model).attribute(None, **batch)
    for key in routed:
        torch.testing.assert_close(routed[key], stored[key], atol=1e-13, rtol=0)
