"""Attention capture of ehrlens's own models in PyHealth's order: enable, forward, disable,
then read. Disabling keeps the last forward's maps (and the gradient hooks a later backward
needs); the next enabled forward replaces them; a model never enabled says so."""

from __future__ import annotations

import pytest
import torch

from _tolerance import FLOAT32_ACROSS
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.models.capture import AttentionSlot

CASES = {"Transformer": "nested", "StageAttentionNet": "stagenet"}


@pytest.fixture(params=list(CASES))
def case(request, make_tiny_model):
    layout = CASES[request.param]
    cohort = generate_cohort(12, layout=layout, seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    extra = {"num_layers": 2} if request.param == "Transformer" else {}
    model = make_tiny_model(request.param, dataset, **extra)
    batch = dataset.collate([dataset[i] for i in range(4)])
    other = dataset.collate([dataset[i] for i in range(4, 8)])
    return model.eval(), batch, other


def maps_of(model):
    """Every map the model's capture holds, input side first."""
    return [a for pairs in model.get_attention_layers().values() for a, _ in pairs]


def recorded_maps(model, batch):
    """The maps a forward computes, recorded by a hook of our own on each attention module."""
    seen, handles = [], []
    for modules in model.attention_modules().values():
        for module in modules:
            handles.append(module.register_attention_hook(lambda m, a: seen.append(a.detach())))
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_a_model_never_enabled_says_so(case):
    model, _, _ = case
    with pytest.raises(RuntimeError, match="never enabled"):
        model.get_attention_layers()


@pytest.mark.parametrize("capture_gradients", [False, True])
def test_disabling_keeps_that_forwards_maps(case, capture_gradients):
    model, batch, other = case
    expected = recorded_maps(model, batch)
    model.set_attention_hooks(True, capture_gradients=capture_gradients)
    try:
        with torch.set_grad_enabled(capture_gradients):
            model(**batch)
    finally:
        model.set_attention_hooks(False)
    kept = [m.detach().clone() for m in maps_of(model)]
    assert len(kept) == len(expected)
    for got, want in zip(kept, expected, strict=True):  # another forward (path, grad mode)
        torch.testing.assert_close(got, want, **FLOAT32_ACROSS)
    with torch.no_grad():  # an uncaptured forward of other patients changes nothing
        model(**other)
    for got, want in zip(maps_of(model), kept, strict=True):  # the very tensors kept: exact
        torch.testing.assert_close(got.detach(), want, atol=0, rtol=0)
    assert not any(m.has_attention_hooks for ms in model.attention_modules().values() for m in ms)


def test_gradients_arrive_after_capture_is_switched_off(case):
    model, batch, _ = case
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        logit = model(**batch)["logit"]
    finally:
        model.set_attention_hooks(False)
    layers = model.get_attention_layers()
    maps = [a for pairs in layers.values() for a, _ in pairs]
    assert all(g is None for pairs in layers.values() for _, g in pairs)
    expected = torch.autograd.grad(logit.sum(), maps, retain_graph=True, allow_unused=True)
    logit.sum().backward()  # the hooks kept after disabling store each map's gradient
    grads = [g for pairs in model.get_attention_layers().values() for _, g in pairs]
    for got, want in zip(grads, expected, strict=True):
        assert (got is None) == (want is None)
        if want is not None:  # the same backward of the same graph: exact
            torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_the_next_enabled_forward_replaces_the_kept_maps(case):
    model, batch, other = case
    model.set_attention_hooks(True, capture_gradients=False)
    with torch.no_grad():
        model(**batch)
    model.set_attention_hooks(False)
    first = [a.clone() for a in maps_of(model)]
    model.set_attention_hooks(True, capture_gradients=False)
    with pytest.raises(RuntimeError, match="no attention captured yet"):
        model.get_attention_layers()  # enabling dropped the old capture
    with torch.no_grad():
        model(**other)
    model.set_attention_hooks(False)
    assert any(not torch.equal(a, b) for a, b in zip(maps_of(model), first, strict=True))
    for got, want in zip(maps_of(model), recorded_maps(model, other), strict=True):
        torch.testing.assert_close(got, want, **FLOAT32_ACROSS)  # another forward
    model.clear_attention_capture()
    with pytest.raises(RuntimeError, match="cleared"):
        model.get_attention_layers()


def test_a_slot_records_only_its_own_threads_forwards():
    import threading

    slot = AttentionSlot(capture_gradients=False, head_fusion="mean")
    slot.record(torch.ones(1, 2, 3, 3) / 3)
    assert slot.attention.shape == (1, 1, 3, 3)
    thread = threading.Thread(target=slot.record, args=(torch.zeros(1, 2, 3, 3),))
    thread.start()
    thread.join()
    torch.testing.assert_close(slot.attention, torch.full((1, 1, 3, 3), 1 / 3))
    with pytest.raises(ValueError, match="forward-only"):
        AttentionSlot(capture_gradients=True, head_fusion="mean")
