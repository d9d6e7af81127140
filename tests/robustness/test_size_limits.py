"""Item 10 of the hostile-input issue: one enormous patient must not pad a whole batch to its
length. Samples are capped (steps per feature, codes per visit or step; refused with an error
naming sample, feature and size, or cut with ``max_length`` and a ``TruncationWarning``), and
batches can be bucketed by length: the same rows, in input order, with the same scores.
"""

from __future__ import annotations

import itertools
import random
import warnings

import numpy as np
import pytest
import torch
from _robustness_kit import (
    LABELS,
    MODEL_METHODS,
    SCHEMA,
    make_model,
    make_sample,
    make_samples,
    run_cli,
    save_tiny_model,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import (
    MAX_CODES_PER_STEP,
    MAX_STEPS,
    create_sample_dataset,
    get_dataloader,
    length_buckets,
)
from ehrlens.data.dataset import sample_size
from ehrlens.data.processors import TruncationWarning
from ehrlens.explain import explain_cohort
from ehrlens.interpret.registry import make_interpreter
from ehrlens.metrics import Evaluator


@pytest.fixture(scope="module")
def dataset():
    return create_sample_dataset(make_samples(), SCHEMA, LABELS)


def _outlier_cohort(n: int = 30, long_every: int = 10, seed: int = 0) -> list[dict]:
    """Short patients, and every ``long_every``-th one with 60 visits and 80 codes."""
    rng = random.Random(seed)
    samples = make_samples(n, seed)
    for i in range(0, n, long_every):
        samples[i] = make_sample(f"long{i}", rng, lengths={"codes": 80, "visits": 60, "labs": 40})
    return samples


# ----------------------------------------------------------------------------- caps


def test_a_visit_with_too_many_codes_is_refused_naming_sample_feature_and_size():
    samples = make_samples(3)
    samples[2]["visits"] = [["C1"], ["C2"] * (MAX_CODES_PER_STEP + 5), ["C3"]]
    with pytest.raises(ValueError) as error:
        create_sample_dataset(samples, SCHEMA, LABELS)
    assert str(error.value) == (
        f"sample 2 (patient_id='p2'), feature 'visits': visit 1 has {MAX_CODES_PER_STEP + 5} "
        f"codes, more than max_codes_per_step={MAX_CODES_PER_STEP}; allow it with a larger "
        "max_codes_per_step= (None: no limit)"
    )
    relaxed = create_sample_dataset(samples, SCHEMA, LABELS, max_codes_per_step=None)
    assert relaxed[2]["visits"].shape == (3, MAX_CODES_PER_STEP + 5)


def test_a_stagenet_step_with_too_many_codes_is_refused():
    samples = make_samples(3)
    samples[1]["steps"] = ([0.0, 1.0], [["C1"], ["C2"] * 9])  # sample 0 has 8 codes at most
    with pytest.raises(ValueError, match=r"^sample 1 \(patient_id='p1'\), feature 'steps': step 1 "
                       r"has 9 codes, more than max_codes_per_step=8"):  # fmt: skip
        create_sample_dataset(samples, SCHEMA, LABELS, max_codes_per_step=8)
    create_sample_dataset(samples, SCHEMA, LABELS, max_codes_per_step=9)


@pytest.mark.parametrize("key", ["codes", "visits", "steps", "labs"])
def test_too_many_steps_are_refused_or_cut_with_max_length(key):
    samples = make_samples(4)
    samples[3] = make_sample("huge", random.Random(1), lengths={key: 12})
    with pytest.raises(ValueError, match=rf"^sample 3 \(patient_id='huge'\), feature '{key}': "
                       r"12 steps, more than max_steps=10; keep the most recent steps with "
                       r"max_length="):  # fmt: skip
        create_sample_dataset(samples, SCHEMA, LABELS, max_steps=10)
    with pytest.warns(TruncationWarning, match=rf"feature '{key}': 1 of 4 samples"):
        cut = create_sample_dataset(samples, SCHEMA, LABELS, max_steps=10, max_length={key: 10})
    values = cut[3][key]
    assert (values[1] if isinstance(values, tuple) else values).shape[0] == 10


def test_the_default_caps_fit_every_ordinary_cohort_and_refuse_a_5m_code_line():
    assert (MAX_STEPS, MAX_CODES_PER_STEP) == (10_000, 1_000)
    samples = make_samples(3)
    samples[0]["codes"] = ["C1"] * (MAX_STEPS + 1)  # a sequence: every code is a step
    with pytest.raises(ValueError, match=r"feature 'codes': 10001 steps, more than max_steps"):
        create_sample_dataset(samples, SCHEMA, LABELS)
    samples[0]["codes"] = ["C1"] * MAX_STEPS  # at the limit: accepted
    assert create_sample_dataset(samples, SCHEMA, LABELS)[0]["codes"].shape == (MAX_STEPS,)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_caps_must_be_positive_ints(value):
    with pytest.raises(ValueError, match=r"max_steps must be None or an int >= 1"):
        create_sample_dataset(make_samples(2), SCHEMA, LABELS, max_steps=value)


def test_the_cli_applies_the_caps_and_lets_them_be_lifted(dataset, tmp_path):
    model_dir = save_tiny_model(tmp_path, dataset)
    samples = make_samples(4)
    samples[1]["visits"] = [["C1"] * 1500]
    data = write_jsonl(samples, tmp_path / "p.jsonl")
    args = ("explain", "--model", model_dir, "--data", data, "-q")
    refused = run_cli(*args, "--out", tmp_path / "a")
    assert refused.exit_code == 1
    assert "sample 1 (patient_id='p1'), feature 'visits': visit 0 has 1500 codes" in refused.stderr
    lifted = run_cli(*args, "--out", tmp_path / "b", "--max-codes-per-step", "0")
    assert lifted.exit_code == 0, lifted.output


# ----------------------------------------------------------------------------- bucketing


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=25), st.integers(1, 6))
def test_buckets_partition_the_indices_shortest_first(lengths, batch_size):
    samples = [
        {"patient_id": str(i), "codes": ["a"] * n, "y": i % 2} for i, n in enumerate(lengths)
    ]
    data = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"})
    buckets = length_buckets(data, batch_size)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert all(len(b) == batch_size for b in buckets[:-1])
    sizes = [[lengths[i] for i in b] for b in buckets]
    for left, right in itertools.pairwise(sizes):
        assert max(left) <= min(right)
    # a stable sort: equal lengths keep their input order
    flat = [i for b in buckets for i in b]
    assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))


def test_an_outlier_no_longer_pads_the_batches_of_short_patients():
    data = create_sample_dataset(_outlier_cohort(), SCHEMA, LABELS)
    plain = [b["visits"].shape for b in get_dataloader(data, 8)]
    bucketed = get_dataloader(data, 8, bucket_by_length=True)
    shapes = [b["visits"].shape for b in bucketed]
    # long patients 0, 10 and 20 pad three of the four plain batches to 60 visits
    assert [shape[1] == 60 for shape in plain] == [True, True, True, False]
    assert sum(shape[1] == 60 for shape in shapes) == 1  # the three long ones share one batch
    assert sorted(i for b in bucketed.batch_sampler.batches for i in b) == list(range(30))
    assert max(sample_size(data[i], data.feature_keys) for i in range(1, 10)) < sample_size(
        data[0], data.feature_keys
    )
    with pytest.raises(ValueError, match=r"bucket_by_length=True .* cannot shuffle"):
        get_dataloader(data, 8, shuffle=True, bucket_by_length=True)


@pytest.mark.parametrize("name", ["Transformer", "StageAttentionNet"])
def test_bucketed_explain_gives_the_same_rows_in_input_order(name, tmp_path):
    data = create_sample_dataset(_outlier_cohort(), SCHEMA, LABELS)
    model = make_model(name, data)
    methods = [m for m in MODEL_METHODS if m != "rollout_low_memory"]
    methods = [{"raw": "raw_attention"}.get(m, m) for m in methods]
    plain = explain_cohort(model, data, methods, batch_size=8, shard_size=16).to_frame()
    bucketed = explain_cohort(
        model, data, methods, batch_size=8, shard_size=16, bucket_by_length=True,
        out_dir=tmp_path / "attr",
    ).to_frame()  # fmt: skip
    floats = ["score", "predicted_probability", "explained_probability"]
    keys = [c for c in plain.columns if c not in floats]
    assert bucketed[keys].equals(plain[keys])  # same rows, same order
    for column in floats[1:]:  # the model's probabilities, padded otherwise: float32 rounding
        np.testing.assert_allclose(bucketed[column], plain[column], rtol=1e-5, atol=1e-6)
    assert list(dict.fromkeys(bucketed["patient_id"])) == data.patient_ids
    # only the padding around each patient changed: float32 rounding, no more
    np.testing.assert_allclose(bucketed["score"], plain["score"], rtol=0, atol=1e-6)


def test_bucketed_evaluation_equals_the_unbucketed_one(dataset):
    data = create_sample_dataset(_outlier_cohort(), SCHEMA, LABELS)
    model = make_model("Transformer", data)
    evaluator = Evaluator(model, n_bootstrap=200, seed=0)
    method = make_interpreter("rollout", model)
    plain = evaluator.evaluate(get_dataloader(data, 8), method)
    bucketed = evaluator.evaluate(get_dataloader(data, 8, bucket_by_length=True), method)
    assert set(bucketed.per_sample) == set(plain.per_sample)
    for metric, values in plain.per_sample.items():  # same patients, same order
        np.testing.assert_allclose(bucketed.per_sample[metric], values, rtol=0, atol=1e-6)
    for metric, summary in plain.summaries.items():  # the bootstrap draws the same patients
        other = bucketed.summaries[metric]
        assert (other.low, other.mean, other.high) == pytest.approx(
            (summary.low, summary.mean, summary.high), abs=1e-6
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(
            torch.tensor(bucketed.curve["comprehensiveness"]),
            torch.tensor(plain.curve["comprehensiveness"]),
        )
