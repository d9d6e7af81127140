"""The training split carried by patient id (ehrlens.app.splits)."""

from __future__ import annotations

import pytest

from ehrlens.app.splits import SPLIT_CHOICES, recorded_patients, select_recorded_split
from ehrlens.app.workflow import select_split, split_record
from ehrlens.cli.app import SPLIT_CHOICES as CLI_SPLIT_CHOICES
from ehrlens.data import create_sample_dataset, generate_cohort

SEED = 3


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(40, layout="sequence", seed=1)


@pytest.fixture(scope="module")
def dataset(cohort):
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def card(dataset):
    parts = {p: select_split(dataset, p, SEED) for p in ("train", "val", "test")}
    return {
        "data": {"sha256": "a" * 64, "split": {"seed": SEED, "patient_ids": split_record(parts)}}
    }


def test_the_command_line_offers_the_same_choices():
    assert CLI_SPLIT_CHOICES == SPLIT_CHOICES == ("all", "train", "val", "test", "new")


def test_split_record_lists_distinct_ids_in_order(dataset):
    doubled = dataset.subset([0, 1, 0, 2])
    record = split_record(
        {"train": doubled, "val": dataset.subset([3]), "test": dataset.subset([])}
    )
    ids = dataset.patient_ids
    assert record == {"train": [ids[0], ids[1], ids[2]], "val": [ids[3]], "test": []}


def test_on_the_training_data_the_parts_are_the_seeded_split(dataset, card):
    assert select_recorded_split(dataset, "all", card) is dataset
    for part in ("train", "val", "test"):
        chosen = select_recorded_split(dataset, part, card)
        assert chosen.patient_ids == select_split(dataset, part, SEED).patient_ids, part
    with pytest.raises(ValueError, match="no patient in the data is new"):
        select_recorded_split(dataset, "new", card)
    with pytest.raises(ValueError, match="split must be one of"):
        select_recorded_split(dataset, "holdout", card)


def test_on_changed_data_the_parts_keep_their_patients(cohort, dataset, card):
    """One patient removed and two added: a redrawn split would move patients between parts;
    selection by id keeps every test patient in test and makes the added ones new."""
    removed = card["data"]["split"]["patient_ids"]["train"][0]
    samples = [s for s in cohort.samples if s["patient_id"] != removed]
    extra = [dict(s, patient_id=f"NEW{i}") for i, s in enumerate(cohort.samples[:2])]
    changed = create_sample_dataset(samples + extra, schema=dataset.schema)
    recorded = card["data"]["split"]["patient_ids"]
    redrawn = set(select_split(changed, "test", SEED).patient_ids)
    assert redrawn & set(recorded["train"])  # the leak this module exists to prevent
    for part in ("train", "val", "test"):
        chosen = select_recorded_split(changed, part, card).patient_ids
        expected = [p for p in changed.patient_ids if p in set(recorded[part])]
        assert chosen == expected, part
    assert removed not in select_recorded_split(changed, "train", card).patient_ids
    assert select_recorded_split(changed, "new", card).patient_ids == ["NEW0", "NEW1"]


def test_no_recorded_patient_in_the_data_is_an_error(cohort, dataset, card):
    test_ids = set(card["data"]["split"]["patient_ids"]["test"])
    others = [s for s in cohort.samples if s["patient_id"] not in test_ids]
    without_test = create_sample_dataset(others, schema=dataset.schema)
    with pytest.raises(ValueError) as error:
        select_recorded_split(without_test, "test", card)
    assert str(error.value) == (
        f"none of the {len(test_ids)} 'test' patients recorded in the model's card is in the data"
    )


def test_a_card_without_ids_redraws_only_on_the_training_file(dataset, card):
    legacy = {"data": {"sha256": "a" * 64, "split": {"seed": SEED}}}
    chosen = select_recorded_split(dataset, "test", legacy, data_sha256="a" * 64)
    assert chosen.patient_ids == select_split(dataset, "test", SEED).patient_ids
    with pytest.raises(ValueError) as error:
        select_recorded_split(dataset, "test", legacy, data_sha256="b" * 64)
    message = str(error.value)
    assert message.startswith(
        "--split test: the data (SHA-256 bbbbbbbbbbbb) is not the training file (SHA-256 "
        "aaaaaaaaaaaa in the card)"
    )
    assert "would put training patients into 'test'" in message
    assert "Use --split all, or retrain" in message
    with pytest.raises(ValueError, match="the card records no data SHA-256 or split seed"):
        select_recorded_split(dataset, "val", {"data": {"split": {"seed": 0}}}, "a" * 64)
    with pytest.raises(ValueError, match="new patients cannot be told apart"):
        select_recorded_split(dataset, "new", legacy, "a" * 64)
    assert recorded_patients(legacy) is None and recorded_patients({}) is None


def test_a_malformed_record_is_an_error(dataset):
    bad = {"data": {"split": {"patient_ids": {"train": ["a"], "val": "b", "test": []}}}}
    with pytest.raises(ValueError, match="must hold a list of ids for each of"):
        select_recorded_split(dataset, "test", bad)
