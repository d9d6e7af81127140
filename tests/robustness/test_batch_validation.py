"""Bad batches are refused at the model boundary with errors naming the key and sample."""

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import AttentionRollout, CheferRelevance
from ehrlens.models import StageAttentionNet, Transformer


@pytest.fixture(scope="module", params=["transformer", "stagenet"])
def model_and_batch(request):
    layout = "sequence" if request.param == "transformer" else "stagenet"
    cohort = generate_cohort(n_patients=10, layout=layout, seed=1, include_labs=True)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    if request.param == "transformer":
        model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    else:
        model = StageAttentionNet(dataset, embedding_dim=8, chunk_size=4, levels=2, heads=2)
    return model.eval(), next(iter(get_dataloader(dataset, batch_size=4)))


def calls(model):
    """The model itself and both interpreters must refuse the same bad batch."""
    return {
        "forward": lambda batch: model(**batch),
        "rollout": lambda batch: AttentionRollout(model).attribute(**batch),
        "chefer": lambda batch: CheferRelevance(model).attribute(**batch),
    }


@pytest.mark.parametrize("call", ["forward", "rollout", "chefer"])
def test_missing_feature_key(model_and_batch, call):
    model, batch = model_and_batch
    bad = {k: v for k, v in batch.items() if k != "drugs"}
    with pytest.raises(ValueError, match="missing feature 'drugs'"):
        calls(model)[call](bad)


@pytest.mark.parametrize("call", ["forward", "rollout"])
def test_unexpected_key(model_and_batch, call):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['diagnosis'\]"):
        calls(model)[call]({**batch, "diagnosis": batch["diagnoses"]})


def test_float_code_ids(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(TypeError, match="feature 'diagnoses': code ids must be an integer"):
        model(**{**batch, "diagnoses": batch["diagnoses"].float()})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numeric_values_name_the_sample(model_and_batch, value):
    model, batch = model_and_batch
    labs = batch["labs"].clone()
    labs[2, 0, 1] = value
    patient = batch["patient_id"][2]
    with pytest.raises(ValueError, match=rf"feature 'labs': sample 2 \(patient_id='{patient}'\)"):
        model(**{**batch, "labs": labs})


def test_mismatched_batch_sizes(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match="disagree on the batch size"):
        model(**{**batch, "drugs": batch["drugs"][:2]})


def test_lists_instead_of_tensors(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(TypeError, match="feature 'drugs': expected a tensor, got list"):
        model(**{**batch, "drugs": batch["drugs"].tolist()})


def test_device_mismatch_names_the_fix(model_and_batch):
    model, batch = model_and_batch
    meta = {**batch, "drugs": batch["drugs"].to("meta")}
    with pytest.raises(ValueError, match=r"feature 'drugs' is on meta.*move_to_device"):
        model(**meta)


def test_refused_batches_leave_no_hook_and_the_mode_as_found(model_and_batch):
    model, batch = model_and_batch
    model.train()
    with pytest.raises(ValueError):
        AttentionRollout(model).attribute(**{**batch, "extra": 1})
    assert model.training
    model.eval()
    assert not any(m.has_attention_hooks for ms in model.attention_modules().values() for m in ms)
