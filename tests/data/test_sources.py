"""load_samples: JSON Lines or event tables, chosen by file extension."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import generate_cohort
from ehrlens.data.events import EventTableWarning, to_events
from ehrlens.data.sources import load_samples


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(30, layout="nested", seed=5, include_labs=True)


def _plain(samples):
    """Samples as JSON gives them back (tuples become lists)."""
    return json.loads(json.dumps(samples))


def test_jsonl_and_ndjson_are_read_as_they_are(tmp_path, cohort):
    for name in ("patients.jsonl", "patients.NDJSON"):
        path = write_jsonl(cohort.samples, tmp_path / name)
        assert load_samples(path) == _plain(cohort.samples)
        # an input_schema is not needed, and does not filter JSON Lines samples
        assert load_samples(path, {"diagnoses": "nested_sequence"}) == _plain(cohort.samples)


def test_jsonl_with_a_labels_file_is_refused(tmp_path, cohort):
    path = write_jsonl(cohort.samples, tmp_path / "p.jsonl")
    with pytest.raises(ValueError, match="JSON Lines samples carry their labels; drop --labels"):
        load_samples(path, labels=tmp_path / "labels.csv")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_event_table_with_labels_file(tmp_path, cohort, suffix):
    table = to_events(cohort.samples, cohort.input_schema)
    path = tmp_path / f"events{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"patient_id": [s["patient_id"] for s in cohort.samples], "outcome": [1, 0] * 15}
    ).to_csv(labels, index=False)
    samples = load_samples(path, cohort.input_schema, labels=labels, label_key="outcome")
    expected = [
        {**{k: v for k, v in s.items() if k != "label"}, "outcome": [1, 0][i % 2]}
        for i, s in enumerate(cohort.samples)
    ]
    assert samples == expected


def test_event_table_label_column_is_found_by_name(tmp_path, cohort):
    table = to_events(cohort.samples, cohort.input_schema)
    table["label"] = table["patient_id"].map({s["patient_id"]: s["label"] for s in cohort.samples})
    parquet, csv = tmp_path / "events.parquet", tmp_path / "events.csv"
    table.to_parquet(parquet, index=False)
    table.to_csv(csv, index=False)
    assert load_samples(parquet, cohort.input_schema) == cohort.samples
    assert load_samples(csv, cohort.input_schema) == cohort.samples
    # without such a column there are no labels
    table.drop(columns="label").to_parquet(parquet, index=False)
    assert load_samples(parquet, cohort.input_schema) == [
        {k: v for k, v in s.items() if k != "label"} for s in cohort.samples
    ]


def test_event_table_options_reach_from_events(tmp_path):
    table = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "c"],
            "time": [0, 1, 0, "never"],
            "feature": ["labs", "labs", "labs", "labs"],
            "code": ["na", "k", "k", "na"],
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    path = tmp_path / "events.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"unparsable or missing time: 1 \(rows 4\)"):
        load_samples(path, {"labs": "timeseries"})
    with pytest.warns(EventTableWarning, match=r"1 bad row\(s\) of 4"):
        samples = load_samples(
            path, {"labs": "timeseries"}, columns={"labs": ["na", "k"]}, on_bad_rows="skip"
        )
    assert samples == [
        {"patient_id": "a", "labs": ([0.0, 1.0], [[1.0, 0.0], [1.0, 2.0]])},
        {"patient_id": "b", "labs": ([0.0], [[0.0, 3.0]])},
    ]


def test_errors(tmp_path):
    (tmp_path / "events.csv").write_text("patient_id,time,feature,code\na,1,dx,x\n")
    with pytest.raises(ValueError, match="an event table needs an input_schema"):
        load_samples(tmp_path / "events.csv")
    (tmp_path / "patients.json").write_text("[]")
    with pytest.raises(ValueError, match=r"patients\.json: unknown file type"):
        load_samples(tmp_path / "patients.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_samples(tmp_path / "absent.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_samples(tmp_path / "absent.parquet", {"dx": "sequence"})
