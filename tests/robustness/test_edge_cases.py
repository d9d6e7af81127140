"""Edge cases with a correct answer, for every model and every method.

An empty feature scores all zeros (not NaN), a single code / visit / step is explained, a
batch of patients of all different lengths equals each patient alone, unknown and duplicate
codes are real inputs, and sequences longer than ``max_length`` are truncated explicitly
(a warning naming the key and the count) with scores aligned to the codes that were kept.
"""

from __future__ import annotations

import random

import pytest
import torch
from _robustness_kit import METHODS, MODEL_METHODS, MODELS, make_dataset, make_model, make_sample

from ehrlens.data import create_sample_dataset
from ehrlens.data.processors import TruncationWarning
from ehrlens.interpret import AttentionFlow, AttentionRollout, code_relevance, top_codes
from ehrlens.models import BaseModel

CODE_KEYS = ["codes", "visits", "steps"]
STEP_KEYS = ["codes", "visits", "steps", "labs"]


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def _empty(sample: dict, key: str) -> dict:
    value = {"codes": [], "visits": [], "steps": ([], []), "labs": ([], [])}[key]
    return {**sample, key: value}


def _assert_finite(scores: dict, batch: dict) -> None:
    for key, tensor in scores.items():
        assert tensor.shape == batch[key].shape, key
        assert bool(torch.isfinite(tensor).all()), f"feature '{key}' has non-finite scores"


# ----------------------------------------------------------------------------- empty features


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("empty_key", STEP_KEYS)
def test_a_feature_without_codes_scores_all_zeros(dataset, name, method, empty_key):
    model = make_model(name, dataset)
    rng = random.Random(1)
    samples = [make_sample("full", rng), _empty(make_sample("empty", rng), empty_key)]
    new = create_sample_dataset(samples, schema=dataset.schema)
    batch = new.collate(new.items)
    with torch.no_grad():
        logit = model(**batch)["logit"]
    assert bool(torch.isfinite(logit).all())  # the model still predicts

    scores = METHODS[method](model).attribute(**batch)
    _assert_finite(scores, batch)
    assert not scores[empty_key][1].any(), "an empty feature must score exactly 0"
    # ... and alone, where the feature has no position at all in the batch
    alone = new.collate(new.items[1:])
    scores_alone = METHODS[method](model).attribute(**alone)
    _assert_finite(scores_alone, alone)
    assert scores_alone[empty_key].numel() == 0 or not scores_alone[empty_key].any()


# ----------------------------------------------------------------------------- single inputs


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", MODELS)
def test_a_single_code_visit_and_step(dataset, name, method):
    model = make_model(name, dataset)
    one = {k: 1 for k in STEP_KEYS}
    sample = make_sample("one", random.Random(2), lengths=one)
    sample["visits"] = [["C3"]]
    sample["steps"] = ([0.0], [["C4"]])
    new = create_sample_dataset([sample], schema=dataset.schema)
    batch = new.collate(new.items)
    assert batch["codes"].shape == (1, 1) and batch["visits"].shape == (1, 1, 1)
    scores = METHODS[method](model).attribute(**batch)
    _assert_finite(scores, batch)
    if method == "flow":  # normalised per patient: each single input holds a share of 1
        for key in STEP_KEYS:
            assert 0.0 < scores[key].reshape(-1)[0].item() <= 1.0 + 1e-6, key
    if method == "rollout":
        for key in STEP_KEYS:
            value = scores[key].reshape(-1)[0].item()
            if name == "StageAttentionNet":  # one step attends only to itself
                assert value == pytest.approx(1.0, abs=1e-6), key
            else:  # shared with [CLS]
                assert 0.0 < value < 1.0, key


# ----------------------------------------------------------------------------- batches


def _distinct_lengths_samples() -> list[dict]:
    rng = random.Random(3)
    lengths = [
        {"codes": 1, "visits": 4, "steps": 2, "labs": 3},
        {"codes": 2, "visits": 3, "steps": 4, "labs": 1},
        {"codes": 3, "visits": 2, "steps": 1, "labs": 4},
        {"codes": 4, "visits": 1, "steps": 3, "labs": 2},
    ]
    return [make_sample(f"d{i}", rng, lengths=lengths[i], label=i % 2) for i in range(4)]


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_every_sample_of_another_length_equals_it_alone(dataset, name, method):
    """A batch where no two samples share a length equals batch size 1, sample by sample."""
    model = make_model(name, dataset)
    new = create_sample_dataset(_distinct_lengths_samples(), schema=dataset.schema)
    batch = new.collate(new.items)
    scores = METHODS[method](model).attribute(**batch)
    for i, item in enumerate(new.items):
        single = new.collate([item])
        alone = METHODS[method](model).attribute(**single)
        for key, tensor in alone.items():
            region = tuple(slice(0, s) for s in tensor.shape[1:])
            got = scores[key][(i, *region)]
            torch.testing.assert_close(
                got, tensor[0], atol=2e-5, rtol=1e-4, msg=lambda m, k=key: f"'{k}': {m}"
            )
            # outside the sample's own length, the batch holds padding: exactly 0
            padded = scores[key][i].clone()
            padded[region] = 0
            assert not padded.any(), key


# ----------------------------------------------------------------------------- unknown codes


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_all_unknown_codes_are_real_inputs(dataset, name, method):
    model = make_model(name, dataset)
    sample = make_sample("unk", random.Random(4))
    sample["codes"] = ["NEW1", "NEW2", "NEW3"]
    sample["visits"] = [["NEW4"], ["NEW5", "NEW6"]]
    sample["steps"] = ([0.0, 1.0], [["NEW7"], ["NEW8"]])
    new = create_sample_dataset([sample], schema=dataset.schema)
    batch = new.collate(new.items)
    assert set(batch["codes"].unique().tolist()) == {1}  # every code is <unk>
    scores = METHODS[method](model).attribute(**batch)
    _assert_finite(scores, batch)
    if method in ("rollout", "flow", "raw"):  # attention reaches every real position
        for key in CODE_KEYS:
            assert bool((scores[key][batch[key] != 0] > 0).all()), key
    per_code = dict.fromkeys(CODE_KEYS, "code")  # every score on its code, visits too
    ranked = code_relevance(scores, batch, model.schema, sample=0, levels=per_code)
    assert {code for _, code in ranked} == {"<unk>"}


# ----------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_duplicate_codes_in_a_visit_share_the_visit_score(dataset, name, method):
    model = make_model(name, dataset)
    sample = make_sample("dup", random.Random(5))
    sample["codes"] = ["C1", "C1", "C2"]
    sample["visits"] = [["C1", "C1", "C2"], ["C3"]]
    sample["steps"] = ([0.0, 1.0], [["C5", "C5"], ["C6"]])
    new = create_sample_dataset([sample], schema=dataset.schema)
    batch = new.collate(new.items)
    scores = METHODS[method](model).attribute(**batch)
    _assert_finite(scores, batch)
    visit = scores["visits"][0, 0]
    assert visit[0] == visit[1], "the two copies of C1 in one visit score alike"
    step = scores["steps"][0, 0]
    assert step[0] == step[1]
    if method in ("rollout", "flow", "raw"):
        assert bool((scores["codes"][0] > 0).all())  # each repeated code is its own input
    totals = code_relevance(scores, batch, model.schema, sample=0)
    assert totals[("codes", "C1")] == pytest.approx(float(scores["codes"][0, :2].sum()))


# ----------------------------------------------------------------------------- truncation


def _long_samples() -> list[dict]:
    rng = random.Random(6)
    lengths = [{"codes": 6, "visits": 5, "steps": 5, "labs": 4}] + [
        {"codes": 2, "visits": 1, "steps": 2, "labs": 2}
    ] * 2
    samples = [make_sample(f"l{i}", rng, lengths=lengths[i], label=i % 2) for i in range(3)]
    samples[0]["codes"] = ["C0", "C1", "C2", "C3", "C4", "C5"]
    samples[0]["steps"] = ([0.0, 1.0, 2.0, 5.0, 9.0], [["C0"], ["C1"], ["C2"], ["C3"], ["C4"]])
    samples[1]["codes"] = list(samples[1]["codes"])
    samples[2]["codes"] = ["C6", "C7", "C6", "C7"]  # also too long
    samples[2]["visits"] = [["C6"], ["C7"], ["C0"], ["C1"]]
    return samples


def test_truncation_is_reported_per_feature_with_counts():
    samples = _long_samples()
    with pytest.warns(TruncationWarning) as record:
        ds = create_sample_dataset(
            samples,
            {
                "codes": "sequence",
                "visits": "nested_sequence",
                "steps": "stagenet",
                "labs": "timeseries",
                "demo": "tensor",
            },
            {"y": "binary"},
            max_length=3,
        )
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        "feature 'codes': 2 of 3 samples had more than max_length=3 steps and were cut to "
        "their last 3",
        "feature 'labs': 1 of 3 samples had more than max_length=3 steps and were cut to "
        "their last 3",
        "feature 'steps': 1 of 3 samples had more than max_length=3 steps and were cut to "
        "their last 3",
        "feature 'visits': 2 of 3 samples had more than max_length=3 steps and were cut to "
        "their last 3",
    ]
    assert ds.truncated == {"codes": 2, "visits": 2, "steps": 1, "labs": 1}
    batch = ds.collate(ds.items)
    assert batch["codes"].shape[1] == 3 and batch["visits"].shape[1] == 3
    decode = ds.input_processors["codes"].vocabulary.decode
    assert decode(batch["codes"][0].tolist()) == ["C3", "C4", "C5"]  # the last (most recent)
    assert batch["times"]["steps"][0].tolist() == [2.0, 5.0, 9.0]  # times cut with their steps
    assert batch["times"]["labs"][0].tolist() == [0.5, 1.0, 1.5]
    assert batch["demo"].shape == (3, 3)  # fixed-size vectors are never cut


def test_no_warning_and_zero_counts_when_nothing_is_cut(recwarn):
    ds = make_dataset(max_length=50)
    assert not [w for w in recwarn if issubclass(w.category, TruncationWarning)]
    assert ds.truncated == {"codes": 0, "visits": 0, "steps": 0, "labs": 0}


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_attributions_align_with_the_kept_inputs(name, method):
    samples = _long_samples()
    with pytest.warns(TruncationWarning):
        ds = make_dataset(samples, max_length=3)
    model = make_model(name, ds)
    batch = ds.collate(ds.items)
    scores = METHODS[method](model).attribute(**batch)
    for key, tensor in scores.items():
        assert tensor.shape == batch[key].shape, key

    # The same patients cut by hand (last 3 steps) convert to the same tensors and scores.
    by_hand = []
    for s in samples:
        cut = dict(s)
        cut["codes"] = s["codes"][-3:]
        cut["visits"] = s["visits"][-3:]
        cut["steps"] = (s["steps"][0][-3:], s["steps"][1][-3:])
        cut["labs"] = (s["labs"][0][-3:], s["labs"][1][-3:])
        by_hand.append(cut)
    manual = create_sample_dataset(by_hand, schema=ds.schema)
    assert manual.truncated == {"codes": 0, "visits": 0, "steps": 0, "labs": 0}
    manual_batch = manual.collate(manual.items)
    expected = METHODS[method](model).attribute(**manual_batch)
    for key in scores:  # the same tensors as the truncated batch: the same computation
        torch.testing.assert_close(scores[key], expected[key], atol=0, rtol=0)
    # Readable summaries name only codes that were kept.
    kept = {("codes", c) for c in by_hand[0]["codes"]}
    named = {(f, c) for f, c, _ in top_codes(scores, batch, ds.schema, sample=0, k=100)}
    assert {x for x in named if x[0] == "codes"} <= kept


def test_max_length_per_feature_and_saved_with_the_model(tmp_path):
    samples = _long_samples()
    with pytest.warns(TruncationWarning, match="feature 'codes': 2 of 3") as record:
        ds = make_dataset(samples, max_length={"codes": 3})
    assert len(record) == 1  # only the feature that has a limit
    assert ds.truncated == {"codes": 2}
    assert ds.collate(ds.items)["visits"].shape[1] == 5

    model = make_model("Transformer", ds)
    loaded = BaseModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.schema.input_processors["codes"].max_length == 3
    with pytest.warns(TruncationWarning, match="feature 'codes': 1 of 1 samples"):
        new = create_sample_dataset(samples[:1], schema=loaded.schema)
    assert new.collate(new.items)["codes"].shape == (1, 3)


@pytest.mark.parametrize(
    ("max_length", "error", "pattern"),
    [
        ({"nope": 3}, ValueError, r"\['nope'\], which are not input features"),
        ({"demo": 3}, ValueError, r"feature 'demo': max_length does not apply"),
        ({"codes": 0}, ValueError, r"feature 'codes': max_length must be None or an int >= 1"),
        (0, ValueError, r"max_length must be None or an int >= 1"),
        (2.5, ValueError, r"max_length must be None or an int >= 1"),
        (True, ValueError, r"max_length must be None or an int >= 1"),
    ],
)
def test_bad_max_length_is_refused(max_length, error, pattern):
    with pytest.raises(error, match=pattern):
        make_dataset(max_length=max_length)


def test_max_length_cannot_be_changed_on_a_fitted_schema(dataset):
    with pytest.raises(ValueError, match="max_length and positive_class are part of a fitted"):
        create_sample_dataset(make_sample_list(), schema=dataset.schema, max_length=2)


def make_sample_list() -> list[dict]:
    return [make_sample("x", random.Random(7))]


@pytest.mark.parametrize("name", MODELS)
def test_flow_refuses_sequences_longer_than_its_limit_naming_the_feature(dataset, name):
    model = make_model(name, dataset)
    batch = dataset.collate(dataset.items)
    seq = batch["codes"].shape[1] + (1 if name == "Transformer" else 0)
    with pytest.raises(ValueError, match=rf"feature 'codes': attention sequence of {seq}"):
        AttentionFlow(model, max_seq_len=seq - 1).attribute(**batch)
    # rollout, which has no limit, explains the same batch
    assert AttentionRollout(model).attribute(**batch)["codes"].shape == batch["codes"].shape
