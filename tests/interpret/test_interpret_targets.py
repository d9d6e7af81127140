"""target_class_idx on a multiclass model (hand-made samples) and on binary models."""

from __future__ import annotations

import random

import pytest
import torch

from ehrlens.data.dataset import create_sample_dataset
from ehrlens.interpret import AttentionRollout, CheferRelevance

CLASSES = ["low", "mid", "high"]


def multiclass_dataset():
    rng = random.Random(0)
    vocab = [f"C{i}" for i in range(10)]
    samples = []
    for i in range(12):
        visits = [rng.sample(vocab, rng.randint(1, 3)) for _ in range(rng.randint(1, 4))]
        samples.append(
            {
                "patient_id": f"p{i}",
                "codes": rng.sample(vocab, rng.randint(1, 6)),
                "visits": visits,
                "label": CLASSES[i % 3],
            }
        )
    return create_sample_dataset(
        samples, {"codes": "sequence", "visits": "nested_sequence"}, {"label": "multiclass"}
    )


@pytest.fixture(params=["Transformer", "StageAttentionNet"])
def multiclass(request, cases):
    dataset = multiclass_dataset()
    model = cases.build_model(request.param, dataset, seed=1)
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    assert model.mode == "multiclass" and model.output_size == 3
    return model, batch


def test_int_targets_select_each_class(multiclass, ref, close):
    model, batch = multiclass
    results = []
    for c in range(3):
        scores = CheferRelevance(model).attribute(c, **batch)
        close(scores, ref.chefer(model, batch, lambda logit, c=c: logit[:, c]))
        zero_dim = CheferRelevance(model).attribute(torch.tensor(c), **batch)
        close(zero_dim, scores, atol=1e-6)
        results.append(scores)
    assert not torch.allclose(results[0]["codes"], results[1]["codes"])
    assert not torch.allclose(results[1]["codes"], results[2]["codes"])


def test_long_tensor_selects_per_sample(multiclass, ref, close):
    model, batch = multiclass
    n = batch["codes"].shape[0]
    target = torch.tensor([(2 * i + 1) % 3 for i in range(n)])
    scores = CheferRelevance(model).attribute(target, **batch)
    close(scores, ref.chefer(model, batch, lambda logit: logit.gather(1, target[:, None])[:, 0]))
    # row by row it is the int-target explanation of that class
    for c in range(3):
        per_class = CheferRelevance(model).attribute(c, **batch)
        rows = target == c
        for key in scores:
            torch.testing.assert_close(scores[key][rows], per_class[key][rows], atol=1e-6, rtol=0)


def test_default_target_is_the_argmax(multiclass, ref, close):
    model, batch = multiclass
    model.eval()
    with torch.no_grad():
        predicted = model(**batch)["logit"].argmax(dim=1)
    assert len(set(predicted.tolist())) > 1  # the default must really be per sample
    scores = CheferRelevance(model).attribute(**batch)
    close(scores, ref.chefer(model, batch, lambda logit: logit.max(dim=1).values))
    close(scores, CheferRelevance(model).attribute(predicted, **batch), atol=1e-6)


@pytest.mark.parametrize(
    "target",
    [3, -1, 100, torch.tensor([0, 1, 3] * 4), torch.tensor([-1] * 12), torch.tensor([0, 1])],
    ids=["int3", "int-1", "int100", "tensor-with-3", "tensor-negative", "tensor-wrong-length"],
)
def test_out_of_range_targets_raise_value_error(multiclass, target):
    model, batch = multiclass
    with pytest.raises(ValueError):
        CheferRelevance(model).attribute(target, **batch)


@pytest.mark.parametrize(
    "target",
    [
        torch.tensor([0.0] * 12),
        torch.tensor(1.0),
        1.0,
        True,
        "1",
        torch.zeros(12, 1, dtype=torch.long),
    ],
    ids=["float-tensor", "float-scalar-tensor", "float", "bool", "str", "2d-tensor"],
)
def test_wrongly_typed_targets_raise_type_error(multiclass, target):
    model, batch = multiclass
    with pytest.raises(TypeError):
        CheferRelevance(model).attribute(target, **batch)


def test_rollout_ignores_the_target(multiclass, close):
    model, batch = multiclass
    rollout = AttentionRollout(model)
    plain = rollout.attribute(**batch)
    for target in (0, 2, torch.arange(12) % 3):
        close(rollout.attribute(target, **batch), plain, atol=0)  # the same computation
    with pytest.raises(ValueError, match="target_class_idx 7 is out of range"):
        rollout.attribute(7, **batch)  # ignored, but an invalid target is still refused


@pytest.mark.parametrize("target", [2, -1, torch.tensor([0, 2] * 4)], ids=["2", "-1", "tensor"])
def test_binary_model_targets_out_of_range(small_case, target):
    with pytest.raises(ValueError):
        CheferRelevance(small_case.model).attribute(target, **small_case.batch)


def test_binary_target_tensor_of_ones_equals_default(small_case, close):
    chefer = CheferRelevance(small_case.model)
    n = small_case.batch[small_case.keys[0]].shape[0]
    close(
        chefer.attribute(torch.ones(n, dtype=torch.long), **small_case.batch),
        chefer.attribute(**small_case.batch),
        atol=1e-6,
    )


def test_a_target_made_under_inference_mode_is_accepted_by_gradient_methods():
    from ehrlens.data import create_sample_dataset as _create
    from ehrlens.data import generate_cohort as _cohort
    from ehrlens.interpret import CheferRelevance as _Chefer
    from ehrlens.models import Transformer as _Transformer

    cohort = _cohort(n_patients=6, layout="sequence", seed=0)
    dataset = _create(cohort.samples, cohort.input_schema, cohort.output_schema)
    model = _Transformer(dataset, embedding_dim=8, heads=2, num_layers=1).eval()
    batch = dataset.collate(dataset.items)
    with torch.inference_mode():
        target = (model(**batch)["y_prob"][:, 0] >= 0.5).long()
    plain = _Chefer(model).attribute(target_class_idx=target.clone(), **batch)
    given = _Chefer(model).attribute(target_class_idx=target, **batch)
    for key in plain:
        torch.testing.assert_close(given[key], plain[key])
