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
@pytest.mark.parametrize("block_rows", [1, 3, 256])
def test_low_memory_equals_stored_maps(case, fusion, discard, block_rows):
    layout, model_class, kwargs = CASES[case]
    model, batch = make(layout, model_class, **kwargs)
    with torch.inference_mode():
        stored = AttentionRollout(model, fusion, discard).attribute(**batch)
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
    model, _ = make("sequence", Transformer, num_layers=1)
    with pytest.raises(ValueError, match="block_rows"):
        AttentionRollout(model, low_memory=True, block_rows=0)
