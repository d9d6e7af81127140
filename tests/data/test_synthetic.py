"""Synthetic cohorts: determinism, every layout converts, ground truth, planted signal."""

from __future__ import annotations

import numpy as np
import pytest

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.data.synthetic import FEATURES

LAYOUT_SCHEMA = {"sequence": "sequence", "nested": "nested_sequence", "stagenet": "stagenet"}


def _codes(value, layout: str) -> list[str]:
    """All codes of one feature of one sample, whatever the layout."""
    if layout == "sequence":
        return list(value)
    visits = value if layout == "nested" else value[1]
    return [code for visit in visits for code in visit]


@pytest.fixture(scope="module")
def cohorts() -> dict[str, object]:
    return {layout: generate_cohort(150, layout=layout, seed=7) for layout in LAYOUT_SCHEMA}


def test_same_seed_gives_same_cohort():
    a = generate_cohort(60, layout="stagenet", seed=3, include_labs=True)
    b = generate_cohort(60, layout="stagenet", seed=3, include_labs=True)
    assert a.samples == b.samples
    assert a.ground_truth == b.ground_truth
    assert a.signal_weights == b.signal_weights
    assert a.interaction == b.interaction
    assert a.distractors == b.distractors
    assert a.positive_rate == b.positive_rate


def test_other_seed_gives_other_cohort():
    a = generate_cohort(60, layout="sequence", seed=3)
    b = generate_cohort(60, layout="sequence", seed=4)
    assert a.samples != b.samples
    assert [s["diagnoses"] for s in a.samples] != [s["diagnoses"] for s in b.samples]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="layout"):
        generate_cohort(10, layout="flat")
    with pytest.raises(ValueError, match="n_patients"):
        generate_cohort(0)


@pytest.mark.parametrize("layout", sorted(LAYOUT_SCHEMA))
def test_every_layout_converts(cohorts, layout):
    cohort = cohorts[layout]
    assert cohort.input_schema == {f: LAYOUT_SCHEMA[layout] for f in FEATURES}
    assert cohort.output_schema == {"label": "binary"}
    assert len(cohort.samples) == 150
    assert len({s["patient_id"] for s in cohort.samples}) == 150
    ds = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    assert len(ds) == 150
    assert ds.feature_keys == list(FEATURES)
    batch = ds.collate(ds.items[:8])
    expected_rank = 2 if layout == "sequence" else 3
    for feature in FEATURES:
        assert batch[feature].dim() == expected_rank
    if layout == "stagenet":
        assert set(batch["times"]) == set(FEATURES)
        assert ds.input_processors["diagnoses"].nested is True
    labels = [s["label"] for s in cohort.samples]
    assert set(labels) == {0, 1}
    assert cohort.positive_rate == pytest.approx(np.mean(labels))


@pytest.mark.parametrize("layout", sorted(LAYOUT_SCHEMA))
def test_ground_truth_codes_occur_in_the_sample(cohorts, layout):
    cohort = cohorts[layout]
    main_effects = {}
    for feature, code in cohort.signal_weights:
        main_effects.setdefault(feature, set()).add(code)
    assert set(cohort.ground_truth) == {s["patient_id"] for s in cohort.samples}
    n_with_truth = 0
    for sample in cohort.samples:
        truth = cohort.ground_truth[sample["patient_id"]]
        assert set(truth) == set(FEATURES)
        for feature in FEATURES:
            present = set(_codes(sample[feature], layout))
            assert set(truth[feature]) <= present, (sample["patient_id"], feature)
            assert truth[feature] == sorted(truth[feature])
            # Every planted main-effect code the patient has is in the ground truth.
            assert main_effects.get(feature, set()) & present <= set(truth[feature])
            assert set(truth[feature]) <= {c for f, c in cohort.signal_codes if f == feature}
        n_with_truth += any(truth.values())
    assert n_with_truth > 0


def test_interaction_codes_count_only_together(cohorts):
    cohort = cohorts["sequence"]
    (fa, a), (fb, b), weight = cohort.interaction
    assert weight > 0
    for sample in cohort.samples:
        truth = cohort.ground_truth[sample["patient_id"]]
        both = a in sample[fa] and b in sample[fb]
        assert (a in truth[fa] and b in truth[fb]) == both


def test_signal_codes_and_distractors_are_distinct():
    cohort = generate_cohort(5, seed=1, n_signal=6)
    assert len(cohort.signal_weights) == 6
    assert {f for f, _ in cohort.signal_weights} == {"diagnoses", "drugs"}
    assert set(cohort.distractors) == set(cohort.signal_weights)
    distractor_codes = set(cohort.distractors.values())
    assert distractor_codes.isdisjoint(cohort.signal_codes)
    assert all(w > 0 for w in cohort.signal_weights.values())


def test_label_is_associated_with_planted_signal():
    cohort = generate_cohort(1200, layout="sequence", seed=0)
    with_signal, without_signal = [], []
    for sample in cohort.samples:
        truth = cohort.ground_truth[sample["patient_id"]]
        (with_signal if any(truth.values()) else without_signal).append(sample["label"])
    assert len(with_signal) > 100
    assert len(without_signal) > 100
    rate_with, rate_without = np.mean(with_signal), np.mean(without_signal)
    assert rate_with > rate_without + 0.2, (rate_with, rate_without)


def test_distractor_correlates_without_causing():
    cohort = generate_cohort(1500, layout="sequence", seed=2)
    (feature, code), (d_feature, d_code) = next(iter(cohort.distractors.items()))
    with_signal = [s for s in cohort.samples if code in s[feature]]
    with_distractor = [s for s in cohort.samples if d_code in s[d_feature]]
    together = [s for s in with_distractor if code in s[feature]]
    # Among patients with the distractor, the signal code is far more common than overall.
    assert len(with_distractor) > 50
    assert len(together) / len(with_distractor) > 2 * len(with_signal) / len(cohort.samples)
    # Without any planted signal, having distractors does not raise the positive rate.
    distractor_codes = set(cohort.distractors.values())
    has, lacks = [], []
    for sample in cohort.samples:
        if any(cohort.ground_truth[sample["patient_id"]].values()):
            continue
        any_distractor = any(c in sample[f] for f, c in distractor_codes)
        (has if any_distractor else lacks).append(sample["label"])
    assert len(has) > 50
    assert len(lacks) > 50
    assert abs(np.mean(has) - np.mean(lacks)) < 0.1


@pytest.mark.parametrize("layout", ["sequence", "stagenet"])
def test_labs_and_demographics(layout):
    cohort = generate_cohort(
        80, layout=layout, seed=5, include_labs=True, include_demographics=True
    )
    assert cohort.input_schema["labs"] == "timeseries"
    assert cohort.input_schema["demographics"] == "tensor"
    for sample in cohort.samples:
        times, values = sample["labs"]
        assert len(times) == len(values) >= 1
        assert all(len(row) == 3 for row in values)
        assert times == sorted(times)
        age, sex = sample["demographics"]
        assert 0.18 <= age <= 0.99
        assert sex in (0.0, 1.0)
    ds = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    assert ds.input_processors["labs"].num_features == 3
    assert ds.input_processors["demographics"].size == 2
    batch = ds.collate(ds.items[:5])
    assert batch["labs"].shape[0] == 5
    assert batch["labs"].shape[2] == 3
    assert "labs" in batch["masks"]
    assert "labs" in batch["times"]
    assert batch["demographics"].shape == (5, 2)


def test_labs_and_demographics_absent_by_default(cohorts):
    sample = cohorts["nested"].samples[0]
    assert "labs" not in sample
    assert "demographics" not in sample
    assert "labs" not in cohorts["nested"].input_schema


def test_first_lab_rises_with_first_signal_code():
    cohort = generate_cohort(600, layout="sequence", seed=9, include_labs=True)
    feature, code = next(iter(cohort.signal_weights))
    means = {True: [], False: []}
    for sample in cohort.samples:
        first_lab = np.mean([row[0] for row in sample["labs"][1]])
        means[code in sample[feature]].append(first_lab)
    assert len(means[True]) > 20
    assert np.mean(means[True]) - np.mean(means[False]) > 0.8
