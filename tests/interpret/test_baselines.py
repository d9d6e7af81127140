"""Baselines: random scores, raw attention, and Captum gradient methods vs references."""

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import InputXGradient, IntegratedGradients, RandomBaseline, RawAttention
from ehrlens.models import StageAttentionNet, Transformer

MODELS = {
    "transformer-sequence": ("sequence", Transformer, {"num_layers": 2}),
    "transformer-nested": ("nested", Transformer, {"num_layers": 2}),
    "stagenet": ("stagenet", StageAttentionNet, {"chunk_size": 8, "levels": 2}),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    layout, model_class, extra = MODELS[request.param]
    cohort = generate_cohort(
        n_patients=16, layout=layout, seed=5, include_labs=True, include_demographics=True
    )
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = model_class(dataset, embedding_dim=16, heads=2, **extra).eval()
    batch = next(iter(get_dataloader(dataset, batch_size=5)))
    return model, batch


def real_units(model, batch):
    masks = batch["masks"]
    out = {}
    for key in model.feature_keys:
        values = batch[key]
        if not values.is_floating_point():
            out[key] = values != 0
        elif values.dim() == 3:
            out[key] = masks[key][..., None].expand(values.shape)
        else:
            out[key] = torch.ones_like(values, dtype=torch.bool)
    return out


def unit_outputs_and_logit(model, batch, replace=None):
    """Run the model recording (or replacing) every per-unit embedding output."""
    outputs, handles = {}, []
    for key, layer in model.get_embedding_layers().items():

        def hook(module, args, output, key=key):
            if replace is not None:
                output = replace[key]
            outputs[key] = output
            return output

        handles.append(layer.register_forward_hook(hook))
    try:
        logit = model(**batch)["logit"][:, 0]
    finally:
        for handle in handles:
            handle.remove()
    return outputs, logit


def unit_scores(model, batch, per_unit):
    """Sum over the embedding dim; a time step's score on each of its values."""
    out = {}
    for key, tensor in per_unit.items():
        scores = tensor.sum(-1)
        values = batch[key]
        if values.is_floating_point() and values.dim() == scores.dim() + 1:
            scores = scores[..., None].expand(values.shape)
        out[key] = scores * real_units(model, batch)[key]
    return out


def test_random_baseline_is_seeded_in_range_and_zero_on_padding(case):
    model, batch = case
    first = RandomBaseline(model, seed=3).attribute(**batch)
    again = RandomBaseline(model, seed=3).attribute(**batch)
    other = RandomBaseline(model, seed=4).attribute(**batch)
    real = real_units(model, batch)
    for key, scores in first.items():
        assert scores.shape == batch[key].shape
        assert torch.equal(scores, again[key]) and not torch.equal(scores, other[key])
        assert (scores[~real[key]] == 0).all()
        assert ((scores[real[key]] >= 0) & (scores[real[key]] < 1)).all()


def test_raw_attention_is_the_readout_row_of_one_layer():
    cohort = generate_cohort(n_patients=12, layout="sequence", seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=3).eval()
    batch = next(iter(get_dataloader(dataset, batch_size=4)))
    model.set_attention_hooks(True, capture_gradients=False)
    with torch.no_grad():
        model(**batch)
    maps = model.get_attention_layers()
    model.set_attention_hooks(False)
    for layer in (0, 1, -1):
        scores = RawAttention(model, layer=layer).attribute(**batch)
        for key, layers in maps.items():
            expected = layers[layer][0].mean(1)[:, 0, 1:] * (batch[key] != 0)
            torch.testing.assert_close(scores[key], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        RawAttention(model, layer=3).attribute(**batch)


def test_input_x_gradient_matches_autograd(case):
    model, batch = case
    outputs, logit = unit_outputs_and_logit(model, batch)
    keys = list(outputs)
    grads = torch.autograd.grad(logit.sum(), [outputs[k] for k in keys])
    expected = unit_scores(
        model, batch, {k: g * outputs[k] for k, g in zip(keys, grads, strict=True)}
    )
    scores = InputXGradient(model).attribute(**batch)
    negative = InputXGradient(model).attribute(target_class_idx=0, **batch)
    for key in keys:
        torch.testing.assert_close(scores[key], expected[key].detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(negative[key], -scores[key], rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete(case):
    """Sum of IG = F(real activations) - F(baseline activations), the inputs' masks kept."""
    model, batch = case
    baseline_batch = {
        k: (torch.zeros_like(v) if k in model.feature_keys else v) for k, v in batch.items()
    }
    with torch.no_grad():
        baseline_outputs, _ = unit_outputs_and_logit(model, baseline_batch)
        _, logit = unit_outputs_and_logit(model, batch)
        _, logit_at_baseline = unit_outputs_and_logit(model, batch, replace=baseline_outputs)
    scores = IntegratedGradients(model, n_steps=100).attribute(**batch)
    total = torch.zeros_like(logit)
    for key, s in scores.items():
        values = batch[key]
        per_unit = s[..., 0] if values.is_floating_point() and values.dim() == 3 else s
        total += per_unit.reshape(len(total), -1).sum(1)
    torch.testing.assert_close(total, logit - logit_at_baseline, rtol=2e-3, atol=2e-3)
    real = real_units(model, batch)
    for key, s in scores.items():
        assert (s[~real[key]] == 0).all()


def test_gradient_methods_respect_grad_modes_and_leave_the_model_as_found(case):
    model, batch = case
    model.train()
    plain = InputXGradient(model).attribute(**batch)
    with torch.no_grad():
        quiet = InputXGradient(model).attribute(**batch)
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    for key in plain:
        torch.testing.assert_close(plain[key], quiet[key])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        IntegratedGradients(model).attribute(**batch)


def test_models_without_embedding_layers_are_refused():
    class Bare(torch.nn.Module):
        feature_keys = ("x",)

    with pytest.raises(TypeError, match="get_embedding_layers"):
        InputXGradient(Bare())
    with pytest.raises(TypeError, match="feature_keys"):
        RandomBaseline(object())
    with pytest.raises(ValueError, match="n_steps"):
        IntegratedGradients(_with_layers(), n_steps=0)


def _with_layers():
    class WithLayers(torch.nn.Module):
        def get_embedding_layers(self):
            return {}

    return WithLayers()
