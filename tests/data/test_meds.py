"""MEDS datasets -> samples: exact samples of a hand-built dataset, no event after the
prediction time, label kinds, splits, and clear errors for data that are not MEDS."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _meds_kit import (
    generated,
    generated_labels,
    static_sample,
    t,
    write_codes,
    write_labels,
    write_rows,
    write_splits,
)
from ehrlens.data import create_sample_dataset
from ehrlens.data.meds import MedsWarning, from_meds, read_labels

FEATURES = {"dx": ["ICD9CM", "ICD10CM"], "labs": ["LAB"], "static": ["SEX", "HEIGHT"]}


@pytest.fixture
def hand_built(tmp_path):
    """Two shards; static rows, equal timestamps, numeric values, two prediction times per
    subject, and LEAK//AFTER events after every prediction time."""
    root = tmp_path / "meds"
    write_rows(
        root / "data" / "a.parquet",
        [
            (1, None, "SEX//F", None),
            (1, None, "HEIGHT", 170.0),
            (1, t("2020-01-01T08:00"), "ICD10CM//I10", None),
            (1, t("2020-01-01T08:00"), "LAB//HR", 80.0),
            (1, t("2020-01-01T08:00"), "LAB//TEMP", 37.0),
            (1, t("2020-01-02T09:30"), "ICD10CM//E11", None),
            (1, t("2020-01-02T09:30"), "LAB//HR", 95.0),
            (1, t("2020-01-05T00:00"), "LEAK//AFTER", None),
        ],
    )
    write_rows(
        root / "data" / "b.parquet",
        [
            (2, None, "SEX//M", None),
            (2, t("2021-03-01T10:00"), "ICD9CM//250", None),
            (2, t("2021-03-01T10:00"), "LAB//HR", 120.0),
            (2, t("2021-03-03T12:00"), "ICD10CM//N18", None),
            (2, t("2021-03-04T00:00"), "LEAK//AFTER", None),
            (3, t("2021-06-01T00:00"), "ICD10CM//I10", None),
        ],
    )
    labels = write_labels(
        tmp_path / "labels.parquet",
        [
            (1, t("2020-01-02T09:30"), True),  # inclusive: the 09:30 events count
            (1, t("2020-01-01T12:00"), False),
            (2, t("2021-03-02T00:00"), False),
            (2, t("2021-03-03T12:00"), True),
            (3, t("2021-05-01T00:00"), False),  # before subject 3's first event
        ],
    )
    write_codes(root, {"ICD10CM//I10": "Essential hypertension", "LAB//HR": "Heart rate"})
    return root, labels


def _read(root, labels, **options):
    with pytest.warns(MedsWarning) as caught:
        data = from_meds(root, labels, **options)
    return data, [str(w.message) for w in caught]


def test_hand_built_dataset_gives_exactly_the_expected_samples(hand_built):
    root, labels = hand_built
    data, messages = _read(root, labels, features=FEATURES, numeric=["labs"])
    f, e = t("2020-01-01T08:00"), t("2020-01-02T09:30")
    m, n = t("2021-03-01T10:00"), t("2021-03-03T12:00")
    assert data.samples == [
        {
            "patient_id": "1@2020-01-01T12:00:00",
            "subject_id": 1,
            "prediction_time": t("2020-01-01T12:00"),
            "dx": [[], ["ICD10CM//I10"]],
            "static": [["SEX//F", "HEIGHT"], []],
            "labs": ([0.0], [[80.0, 37.0]]),
            "label": 0,
            "step_identity": {
                "dx": {"event_time": [None, f]},
                "static": {"event_time": [None, f]},
                "labs": {"event_time": [f]},
            },
        },
        {
            "patient_id": "1@2020-01-02T09:30:00",
            "subject_id": 1,
            "prediction_time": e,
            "dx": [[], ["ICD10CM//I10"], ["ICD10CM//E11"]],
            "static": [["SEX//F", "HEIGHT"], [], []],
            "labs": ([0.0, 25.5 / 24], [[80.0, 37.0], [95.0, 37.0]]),  # TEMP carried forward
            "label": 1,
            "step_identity": {
                "dx": {"event_time": [None, f, e]},
                "static": {"event_time": [None, f, e]},
                "labs": {"event_time": [f, e]},
            },
        },
        {
            "patient_id": "2@2021-03-02T00:00:00",
            "subject_id": 2,
            "prediction_time": t("2021-03-02T00:00"),
            "dx": [[], ["ICD9CM//250"]],
            "static": [["SEX//M"], []],
            "labs": ([0.0], [[120.0, 0.0]]),  # no TEMP yet: 0.0
            "label": 0,
            "step_identity": {
                "dx": {"event_time": [None, m]},
                "static": {"event_time": [None, m]},
                "labs": {"event_time": [m]},
            },
        },
        {
            "patient_id": "2@2021-03-03T12:00:00",
            "subject_id": 2,
            "prediction_time": n,
            "dx": [[], ["ICD9CM//250"], ["ICD10CM//N18"]],
            "static": [["SEX//M"], [], []],
            "labs": ([0.0], [[120.0, 0.0]]),
            "label": 1,
            "step_identity": {
                "dx": {"event_time": [None, m, n]},
                "static": {"event_time": [None, m, n]},
                "labs": {"event_time": [m]},
            },
        },
    ]
    assert data.input_schema == {
        "dx": "nested_sequence",
        "labs": "timeseries",
        "static": "nested_sequence",
    }
    assert data.output_schema == {"label": "binary"}
    assert data.options.columns == {"labs": ["LAB//HR", "LAB//TEMP"]}
    assert data.descriptions == {"ICD10CM//I10": "Essential hypertension", "LAB//HR": "Heart rate"}
    assert data.parts is None  # no subject_splits.parquet
    assert any("left out 2 row(s) of 1 code(s)" in m and "LEAK//AFTER" in m for m in messages)
    assert any("left out 1 label(s)" in m and "3@2021-05-01T00:00:00" in m for m in messages)


def test_default_features_are_the_vocabulary_prefixes_and_no_event_after_prediction_leaks(
    hand_built,
):
    root, labels = hand_built
    data, _ = _read(root, labels)
    assert data.options.features == {
        "ICD10CM": ["ICD10CM"], "ICD9CM": ["ICD9CM"], "LAB": ["LAB"], "LEAK": ["LEAK"],
        "SEX": ["SEX"], "other": [""],
    }  # fmt: skip
    assert data.samples[0]["other"] == [["HEIGHT"], []]
    assert data.samples[1]["LAB"] == [[], ["LAB//HR", "LAB//TEMP"], ["LAB//HR"]]
    for sample in data.samples:  # the LEAK feature exists, and holds nothing
        assert sample["LEAK"] == [[] for _ in sample["LEAK"]]
        for steps in sample["step_identity"].values():
            assert all(s is None or s <= sample["prediction_time"] for s in steps["event_time"])
    dataset = create_sample_dataset(data.samples, data.input_schema, data.output_schema)
    assert "LEAK//AFTER" not in dataset.input_processors["LEAK"].vocabulary.code_to_id


def test_leakage_property_on_a_generated_dataset(tmp_path):
    """Every event a sample holds happened at or before its prediction time, and every event
    at or before it is held: counted against the raw shards."""
    root = generated(tmp_path / "gen", 60)
    labels = generated_labels(root, tmp_path / "labels.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = from_meds(root, labels)
    raw = pa.concat_tables(pq.read_table(p) for p in sorted((root / "data").rglob("*.parquet")))
    frame = raw.to_pandas()
    assert len(data.samples) == len(pq.read_table(labels))
    for sample in data.samples:
        events = frame[frame["subject_id"] == sample["subject_id"]]
        allowed = events[events["time"].isna() | (events["time"] <= sample["prediction_time"])]
        held = sum(len(codes) for key in data.input_schema for codes in sample[key])
        assert held == len(allowed)
        for steps in sample["step_identity"].values():
            assert all(s is None or s <= sample["prediction_time"] for s in steps["event_time"])
    assert data.options.features == {"dynamic": ["dynamic"], "static": ["static"]}


def test_time_buckets_merge_the_events_of_one_interval(hand_built):
    root, labels = hand_built
    data, _ = _read(root, labels, features=FEATURES, time_bucket="2D")
    # 2020-01-01 and 2020-01-02 share a 2-day bucket (from the epoch): one step after the
    # static one
    assert data.samples[1]["dx"] == [[], ["ICD10CM//I10", "ICD10CM//E11"]]
    assert data.samples[1]["step_identity"]["dx"]["event_time"] == [None, t("2020-01-01T08:00")]


def test_label_kinds_set_the_output_schema(hand_built, tmp_path):
    root, _ = hand_built
    rows = [(1, t("2020-01-02T09:30"), 2), (2, t("2021-03-03T12:00"), 0)]
    for column, kind, values, expected in [
        ("integer_value", pa.int64(), [2, 0], "multiclass"),
        ("float_value", pa.float32(), [1.5, -2.0], "regression"),
        ("categorical_value", pa.string(), ["high", "low"], "multiclass"),
    ]:
        labels = write_labels(
            tmp_path / f"{column}.parquet",
            [(s, w, v) for (s, w, _), v in zip(rows, values, strict=True)],
            column,
            kind,
        )
        data, _ = _read(root, labels, features=FEATURES)
        assert data.output_schema == {"label": expected}
        assert [s["label"] for s in data.samples] == values


def test_splits_come_from_subject_splits(hand_built):
    root, labels = hand_built
    write_splits(root, {1: "train", 2: "held_out", 3: "tuning"})
    data, _ = _read(root, labels, features=FEATURES)
    assert data.parts == {
        "1@2020-01-01T12:00:00": "train",
        "1@2020-01-02T09:30:00": "train",
        "2@2021-03-02T00:00:00": "test",
        "2@2021-03-03T12:00:00": "test",
    }


def test_static_sample_of_meds_testing_helpers(tmp_path):
    root, labels = static_sample(tmp_path / "static")
    data = from_meds(root, labels)
    assert len(data.samples) == len(read_labels(labels)[0]) == 21
    assert data.output_schema == {"label": "binary"}
    assert set(data.parts.values()) == {"train", "val", "test"}
    assert data.descriptions["HR"] == "Heart Rate"
    first = next(s for s in data.samples if s["patient_id"] == "239684@2010-05-11T18:00:00")
    # static EYE_COLOR and HEIGHT, birth, then the admission at 17:41:51 and 17:48:48 only
    assert first["other"] == [["HEIGHT"], ["MEDS_BIRTH"], ["HR", "TEMP"], ["HR", "TEMP"]]
    assert first["ADMISSION"] == [[], [], ["ADMISSION//CARDIAC"], []]
    assert first["EYE_COLOR"] == [["EYE_COLOR//BROWN"], [], [], []]


# ---------------------------------------------------------------- bad input


def test_a_folder_without_data_is_not_meds(tmp_path):
    labels = write_labels(tmp_path / "l.parquet", [(1, t("2020-01-01"), True)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a MEDS dataset \(no data/ folder"):
        from_meds(tmp_path / "empty", labels)
    (tmp_path / "nofiles" / "data").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no \.parquet data shards"):
        from_meds(tmp_path / "nofiles", labels)


def test_wrong_column_types_name_the_file(tmp_path):
    root = tmp_path / "meds"
    schema = pa.schema(
        [("subject_id", pa.string()), ("time", pa.timestamp("us")), ("code", pa.string())]
    )
    write_rows(root / "data" / "0.parquet", [("1", t("2020-01-01"), "A//1")], schema)
    labels = write_labels(tmp_path / "l.parquet", [(1, t("2020-01-02"), True)])
    with pytest.raises(
        ValueError, match=r"0.parquet: not MEDS data: .*subject_id \(want int64, got string\)"
    ):
        from_meds(root, labels)
    schema = pa.schema(
        [("subject_id", pa.int64()), ("time", pa.timestamp("ns")), ("code", pa.string())]
    )
    write_rows(root / "data" / "0.parquet", [(1, t("2020-01-01"), "A//1")], schema)
    with pytest.raises(
        ValueError, match=r"0.parquet: not MEDS data: .*time \(want timestamp\[us\]"
    ):
        from_meds(root, labels)


def test_a_subject_in_two_shards_is_refused(tmp_path):
    root = tmp_path / "meds"
    write_rows(root / "data" / "0.parquet", [(1, t("2020-01-01"), "A//1", None)])
    write_rows(root / "data" / "1.parquet", [(1, t("2020-01-02"), "A//2", None)])
    labels = write_labels(tmp_path / "l.parquet", [(1, t("2020-01-03"), True)])
    with pytest.raises(
        ValueError, match=r"subject 1 is in two data shards, .*0.parquet and .*1.parquet"
    ):
        from_meds(root, labels)


def test_unsorted_or_split_subjects_are_refused(tmp_path):
    root = tmp_path / "meds"
    labels = write_labels(tmp_path / "l.parquet", [(1, t("2020-01-03"), True)])
    write_rows(
        root / "data" / "0.parquet",
        [(1, t("2020-01-02"), "A//1", None), (1, t("2020-01-01"), "A//2", None)],
    )
    with pytest.raises(ValueError, match=r"0.parquet: subject 1's times are not sorted"):
        from_meds(root, labels)
    write_rows(
        root / "data" / "0.parquet",
        [(1, t("2020-01-01"), "A//1", None), (2, t("2020-01-01"), "A//1", None),
         (1, t("2020-01-02"), "A//2", None)],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"0.parquet: subject 1's rows are not contiguous"):
        from_meds(root, labels)


def test_labels_for_unknown_subjects_and_bad_label_files(hand_built, tmp_path):
    root, _ = hand_built
    labels = write_labels(
        tmp_path / "u.parquet", [(1, t("2020-01-02"), True), (99, t("2020-01-02"), True)]
    )
    with pytest.raises(
        ValueError, match=r"u.parquet: 1 labelled subject\(s\) are in no data shard.*\[99\]"
    ):
        from_meds(root, labels)
    twice = write_labels(
        tmp_path / "d.parquet", [(1, t("2020-01-02"), True), (1, t("2020-01-02"), False)]
    )
    with pytest.raises(ValueError, match=r"d.parquet: subject 1 has 2 labels for prediction time"):
        from_meds(root, twice)
    table = pa.table(
        {
            "subject_id": pa.array([1], pa.int64()),
            "prediction_time": pa.array([t("2020-01-02")], pa.timestamp("us")),
        }
    )
    pq.write_table(table, tmp_path / "none.parquet")
    with pytest.raises(ValueError, match=r"none.parquet: expected exactly one label column"):
        from_meds(root, tmp_path / "none.parquet")
    table = table.append_column("boolean_value", pa.array([None], pa.bool_())).append_column(
        "float_value", pa.array([1.0], pa.float32())
    )
    pq.write_table(table, tmp_path / "float.parquet")  # an all-null column is ignored
    assert read_labels(tmp_path / "float.parquet")[1] == "float_value"


def test_every_label_before_any_event_is_an_error(hand_built, tmp_path):
    root, _ = hand_built
    early = datetime(1990, 1, 1)
    labels = write_labels(
        tmp_path / "e.parquet", [(1, early, True), (2, early + timedelta(1), False)]
    )
    with (
        pytest.warns(MedsWarning, match="left out 2 label"),
        pytest.raises(ValueError, match="no sample has an event at or before its prediction time"),
    ):
        from_meds(root, labels, features=FEATURES)


def test_bad_options_are_named(hand_built):
    root, labels = hand_built
    with pytest.raises(ValueError, match="time_bucket 'often' is not a fixed pandas frequency"):
        from_meds(root, labels, time_bucket="often")
    with pytest.raises(ValueError, match=r"numeric feature\(s\) \['vitals'\] are not among"):
        from_meds(root, labels, features=FEATURES, numeric=["vitals"])
