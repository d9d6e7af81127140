"""Gradient capture of the real models, and their readout rows."""

from __future__ import annotations

import pytest
import torch

from ehrlens.interpret import AttentionInterpretable


def captured(model):
    layers = model.get_attention_layers()
    return {k: [(a, g) for a, g in v] for k, v in layers.items()}


def test_captured_gradients_equal_autograd_grad(model_case):
    model, batch = model_case.model.eval(), model_case.batch
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        target = model(**batch)["logit"][:, 0].sum()
        target.backward()
        first = captured(model)
        assert set(first) == set(model_case.keys)
        grads = {k: [g.clone() for _, g in v] for k, v in first.items()}
        for key, layers in first.items():
            assert len(layers) == len(model.attention_modules()[key])
            for attention, grad in layers:
                assert grad is not None and grad.shape == attention.shape

        # a second, identical forward clears the first one's gradients ...
        target2 = model(**batch)["logit"][:, 0].sum()
        second = captured(model)
        assert all(g is None for v in second.values() for _, g in v)
        keys = list(second)
        maps = [a for k in keys for a, _ in second[k]]
        expected = torch.autograd.grad(target2, maps)
        pos = 0
        for key in keys:
            for grad in grads[key]:
                torch.testing.assert_close(grad, expected[pos], atol=1e-6, rtol=1e-5)
                pos += 1
        assert any(g.abs().sum() > 0 for g in expected)
        # ... and autograd.grad (as well as backward) fills the capture of the new forward
        third = captured(model)
        pos = 0
        for key in keys:
            for _, grad in third[key]:
                torch.testing.assert_close(grad, expected[pos], atol=0, rtol=0)
                pos += 1
    finally:
        model.set_attention_hooks(False)


def test_forward_only_capture_has_no_grads_and_no_tensor_hook(model_case):
    model, batch = model_case.model.eval(), model_case.batch
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        out = model(**batch)
        for layers in captured(model).values():
            for attention, grad in layers:
                assert grad is None
                assert not attention.requires_grad and attention.grad_fn is None
        for captures in model._attention_captures.values():
            for capture in captures:
                assert capture.slot._gradient_handle is None
        out["logit"].sum().backward()  # the logit is still differentiable in the params
        for layers in captured(model).values():
            assert all(grad is None for _, grad in layers)
    finally:
        model.set_attention_hooks(False)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_gradient_capture_under_no_grad_stores_detached_maps(model_case, mode):
    model, batch = model_case.model.eval(), model_case.batch
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        with context:
            model(**batch)
        for layers in captured(model).values():
            for attention, grad in layers:
                assert grad is None and not attention.requires_grad
    finally:
        model.set_attention_hooks(False)


def test_each_captured_forward_clears_previous_grads(model_case):
    model = model_case.model.eval()
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        model(**model_case.batch)["logit"].sum().backward()
        assert all(g is not None for v in captured(model).values() for _, g in v)
        other = model_case.collate(model_case.indices[:3])
        model(**other)
        layers = captured(model)
        assert all(g is None for v in layers.values() for _, g in v)
        assert all(a.shape[0] == 3 for v in layers.values() for a, _ in v)
    finally:
        model.set_attention_hooks(False)


def test_capture_maps_are_post_softmax_with_zero_padded_keys(model_case):
    model, batch = model_case.model.eval(), model_case.batch
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.no_grad():
            model(**batch)
        layers = captured(model)
    finally:
        model.set_attention_hooks(False)
    saw_padding = False
    for key, maps in layers.items():
        values = batch[key]
        real = values != 0
        if model_case.name == "CodeTransformer":  # [CLS], then each patient's codes packed
            counts = real.reshape(real.shape[0], -1).sum(-1)
            real = torch.arange(int(counts.max()))[None, :] < counts[:, None]
        real = real.any(-1) if real.dim() == 3 else real
        if model_case.name in ("Transformer", "CodeTransformer"):
            real = torch.cat([torch.ones(real.shape[0], 1, dtype=torch.bool), real], dim=1)
        has_real = real.any(-1)  # samples with at least one real key
        for attention, _ in maps:
            assert attention.shape[-1] == real.shape[1]
            assert (attention >= 0).all()
            torch.testing.assert_close(
                attention.sum(-1), torch.ones(attention.shape[:-1]), atol=1e-5, rtol=0
            )
            padded_keys = (~real & has_real[:, None])[:, None, None, :].expand_as(attention)
            saw_padding |= bool(padded_keys.any())
            assert (attention[padded_keys] == 0).all()
    assert saw_padding


# ----------------------------------------------------------------------------- readout


def test_transformer_readout_weights_one_hot_at_cls(cases):
    for layout in ("sequence", "nested"):
        case = cases.make("Transformer", layout)
        weights = case.model.get_readout_weights(**case.batch)
        assert set(weights) == set(case.keys)
        for key in case.keys:
            n, n_inputs = case.batch[key].shape[:2]
            expected = torch.zeros(n, 1 + n_inputs)
            expected[:, 0] = 1.0
            assert torch.equal(weights[key], expected)


def test_stage_attention_readout_weights_one_hot_at_last_valid_step(cases, ref):
    for layout in ("stagenet", "sequence"):
        case = cases.make("StageAttentionNet", layout)
        weights = case.model.get_readout_weights(**case.batch)
        assert set(weights) == set(case.keys)
        varied = False
        for key in case.keys:
            values = case.batch[key]
            last = ref.last_valid(values)
            varied |= bool((last != values.shape[1] - 1).any())
            expected = torch.zeros(values.shape[:2])
            expected[torch.arange(values.shape[0]), last] = 1.0
            assert torch.equal(weights[key], expected)
        assert varied  # some patient's last valid step is not the batch's last step


def test_stage_attention_readout_skips_trailing_empty_visits(cases):
    # nested stagenet: patients whose last visit has no code of a feature read out earlier
    case = cases.make("StageAttentionNet", "stagenet")
    values = case.batch["procedures"]
    weights = case.model.get_readout_weights(**case.batch)["procedures"]
    for row in range(values.shape[0]):
        position = int(weights[row].argmax())
        assert (values[row, position] != 0).any() or not (values[row] != 0).any()
        assert not (values[row, position + 1 :] != 0).any()


def test_default_select_input_positions_agrees_with_overrides(model_case):
    model, batch = model_case.model, model_case.batch
    gen = torch.Generator().manual_seed(7)
    weights = model.get_readout_weights(**batch)
    rows = {k: torch.rand(w.shape, generator=gen) for k, w in weights.items()}
    override = model.select_input_positions(rows, **batch)
    default = AttentionInterpretable.select_input_positions(model, rows, **batch)
    assert set(override) == set(default) == set(model_case.keys)
    for key in model_case.keys:
        # CodeTransformer scores each code (every code is a token): shaped like the codes.
        per_code = model_case.name == "CodeTransformer"
        assert override[key].shape == (batch[key].shape if per_code else batch[key].shape[:2])
        torch.testing.assert_close(default[key], override[key], atol=1e-6, rtol=1e-6)


def test_relevance_tensor_is_readout_weights_times_matrix(model_case, ref):
    """get_relevance_tensor(R) == (weights @ R) restricted to the input positions."""
    model, batch = model_case.model, model_case.batch
    gen = torch.Generator().manual_seed(11)
    weights = model.get_readout_weights(**batch)
    matrices = {
        k: torch.rand(w.shape[0], w.shape[1], w.shape[1], generator=gen) for k, w in weights.items()
    }
    relevance = model.get_relevance_tensor(matrices, **batch)
    for key, w in weights.items():
        row = torch.bmm(w[:, None, :], matrices[key])[:, 0]
        if model_case.name == "CodeTransformer":  # each token's entry on its own code
            expected = ref.readout(model, key, row[:, None, :], batch)
        else:
            expected = row[:, 1:] if row.shape[1] == batch[key].shape[1] + 1 else row
        torch.testing.assert_close(relevance[key], expected, atol=1e-6, rtol=0)


def test_default_select_input_positions_without_readout_weights_raises(fakes):
    model = fakes.Gradient([torch.eye(2).expand(1, 1, 2, 2)])
    with pytest.raises(NotImplementedError):
        model.select_input_positions({"codes": torch.ones(1, 2)}, **model.inputs())


def test_readout_row_is_where_the_model_reads_out(model_case):
    """The logit depends on the last layer's map only through the readout row: its gradient
    is zero in every other row and non-zero in the readout row (checks get_readout_weights
    against the forward itself)."""
    model, batch = model_case.model.eval(), model_case.batch
    weights = model.get_readout_weights(**batch)
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        logit = model(**batch)["logit"][:, 0]
        layers = model.get_attention_layers()
        keys = list(layers)
        last_maps = [layers[k][-1][0] for k in keys]
        grads = torch.autograd.grad(logit.sum(), last_maps)
    finally:
        model.set_attention_hooks(False)
    for key, grad in zip(keys, grads, strict=True):
        row_norm = grad.abs().sum(dim=(1, 3))  # [batch, seq]: gradient mass per query row
        readout = weights[key] > 0
        assert (row_norm[~readout] == 0).all()
        values = batch[key]
        has_input = (values != 0).flatten(1).any(dim=1)
        assert (row_norm[readout][has_input] > 0).all()
