"""Low-memory rollout (maps recomputed from captured queries and keys) equals stored-map rollout."""

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import AttentionInterpretable, AttentionRollout, capture_attention
from ehrlens.models import StageAttentionNet, Transformer


def make(layout, model_class, **kwargs):
    cohort = generate_cohort(n_patients=20, layout=layout, seed=11)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = model_class(dataset, embedding_dim=16, heads=2, **kwargs).eval()
    return model, next(iter(get_dataloader(dataset, batch_size=7)))


CASES = {
    "transformer": ("sequence", Transformer, {"num_layers": 3}),
    "transformer-nested": ("nested", Transformer, {"num_layers": 2}),
    "stagenet": (
        "stagenet",
        StageAttentionNet,
        {"chunk_size": 8, "levels": 2, "attention_layers": 2},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.4])
@pytest.mark.parametrize("block_rows", [1, 3, 256, None])
def test_low_memory_equals_stored_maps(case, fusion, discard, block_rows):
    layout, model_class, kwargs = CASES[case]
    model, batch = make(layout, model_class, **kwargs)
    with torch.inference_mode():
        stored = AttentionRollout(model, fusion, discard, low_memory=False).attribute(**batch)
        low = AttentionRollout(
            model, fusion, discard, low_memory=True, block_rows=block_rows
        ).attribute(**batch)
    for key in stored:
        torch.testing.assert_close(low[key], stored[key], rtol=1e-5, atol=1e-6)


def test_key_capture_stores_queries_and_keys_not_maps():
    model, batch = make("sequence", Transformer, num_layers=2)
    with torch.inference_mode(), capture_attention(model, batch, keys_only=True):
        captured = model.get_attention_keys()
        with pytest.raises(RuntimeError, match="no attention captured"):
            model.get_attention_layers()
    for key, layers in captured.items():
        seq = batch[key].shape[1] + 1  # [CLS] + one position per code
        for layer in layers:
            assert layer.query.shape == (7, 2, seq, 8) and layer.key.shape == layer.query.shape
            full = layer.weights()
            torch.testing.assert_close(full.sum(-1), torch.ones(7, 2, seq))
    assert not any(m.has_attention_hooks for ms in model.attention_modules().values() for m in ms)


def test_models_without_key_capture_are_refused():
    class MapsOnly:
        def set_attention_hooks(self, enabled):
            pass

        def get_attention_layers(self):
            return {}

        def get_relevance_tensor(self, R, **data):
            return {}

    AttentionInterpretable.register(MapsOnly)
    with pytest.raises(TypeError, match="key_capture"):
        AttentionRollout(MapsOnly(), low_memory=True)
    assert AttentionRollout(MapsOnly()).recomputes_maps({}) is False  # "auto" keeps maps
    model, _ = make("sequence", Transformer, num_layers=1)
    with pytest.raises(ValueError, match="block_rows"):
        AttentionRollout(model, low_memory=True, block_rows=0)


def _one_feature(heads, layers):
    cohort = generate_cohort(n_patients=20, layout="sequence", seed=11)
    schema = {"diagnoses": cohort.input_schema["diagnoses"]}
    samples = [
        {k: v for k, v in s.items() if k in schema or k not in cohort.input_schema}
        for s in cohort.samples
    ]
    dataset = create_sample_dataset(samples, schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=heads, num_layers=layers).eval()
    return model, next(iter(get_dataloader(dataset, batch_size=7)))


@pytest.mark.parametrize(
    ("heads", "layers", "recomputes"),
    [(4, 6, False), (4, 8, False), (4, 9, True), (1, 2, False), (1, 3, True), (2, 5, True)],
)
def test_auto_keeps_maps_while_they_fit_in_the_forwards_own_attention(heads, layers, recomputes):
    # One feature, max over heads (no fused-kernel product): kept maps are layers * seq^2
    # values, the explicit forward's per-head scores and softmax 2 * heads * seq^2, whatever
    # the batch and length.
    model, batch = _one_feature(heads, layers)
    auto = AttentionRollout(model, head_fusion="max")
    assert auto.low_memory == "auto"
    assert auto.recomputes_maps(batch) is recomputes
    assert AttentionRollout(model, "max", low_memory=True).recomputes_maps(batch) is True
    assert AttentionRollout(model, "max", low_memory=False).recomputes_maps(batch) is False
    assert AttentionRollout(model, "max", discard_ratio=0.2).recomputes_maps(batch) is False
    with torch.inference_mode():
        scores = auto.attribute(**batch)
        kept = AttentionRollout(model, "max", low_memory=False).attribute(**batch)
    torch.testing.assert_close(scores["diagnoses"], kept["diagnoses"], rtol=1e-5, atol=1e-6)


def test_auto_adds_up_every_features_maps():
    # Three features of 3 layers at 2 heads: 3 * 3 maps kept when the features are of equal
    # length would outgrow 2 * 2; the decision follows the batch's lengths.
    model, batch = make("sequence", Transformer, num_layers=3)
    lengths = {key: batch[key].shape[1] + 1 for key in model.feature_keys}  # [CLS] + codes
    kept = sum(3 * n * n for n in lengths.values())
    transient = max(2 * 2 * n * n for n in lengths.values())
    assert AttentionRollout(model, "max").recomputes_maps(batch) is (kept > transient)


@pytest.mark.parametrize(("heads", "layers"), [(4, 1), (4, 6), (1, 2)])
def test_auto_mean_rollout_on_cpu_forms_no_map_below_the_top_layer(heads, layers, monkeypatch):
    # Mean over heads on CPU: every layer's rows go through the fused kernel in one call
    # (weighted_rows), whatever the depth; only the top layer's readout row is recomputed.
    model, batch = _one_feature(heads, layers)
    auto = AttentionRollout(model)
    assert auto.recomputes_maps(batch) is True
    assert AttentionRollout(model, discard_ratio=0.2).recomputes_maps(batch) is False
    formed = []
    for module in model.attention_modules()["diagnoses"]:
        original = module.attention_weights
        monkeypatch.setattr(
            module,
            "attention_weights",
            lambda q, k, m, original=original: formed.append(q.shape[2]) or original(q, k, m),
        )
    with torch.inference_mode():
        scores = auto.attribute(**batch)
    assert formed == [1]  # the top layer's [CLS] row alone, nothing else
    monkeypatch.undo()
    with torch.inference_mode():
        kept = AttentionRollout(model, low_memory=False).attribute(**batch)
    torch.testing.assert_close(scores["diagnoses"], kept["diagnoses"], rtol=1e-5, atol=1e-6)


def test_low_memory_must_be_auto_or_a_bool():
    model, _ = make("sequence", Transformer, num_layers=2)
    with pytest.raises(ValueError, match="low_memory must be 'auto', True or False"):
        AttentionRollout(model, low_memory="yes")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("low_memory", ["auto", True, False])
def test_every_path_stays_within_1e_6_of_rollout_on_whole_maps(case, low_memory):
    # Whole maps, fused after capture: the path rollout took before maps were formed in
    # blocks of query rows (float32 here, as users run it).
    from ehrlens.interpret.methods.propagation import readout_relevance
    from ehrlens.interpret.methods.rollout import rollout_step

    layout, model_class, kwargs = CASES[case]
    model, batch = make(layout, model_class, **kwargs)
    rollout = AttentionRollout(model, low_memory=low_memory)
    with torch.inference_mode():
        with capture_attention(model, batch):
            whole = {k: [a.mean(1) for a, _ in v] for k, v in model.get_attention_layers().items()}
        expected = rollout._input_scores(
            readout_relevance(model, whole, rollout_step, batch), batch
        )
        scores = rollout.attribute(**batch)
    for key in expected:
        torch.testing.assert_close(scores[key], expected[key], rtol=0, atol=1e-6)
