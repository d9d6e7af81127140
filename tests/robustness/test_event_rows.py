"""Item 11 of the hostile-input issue: event tables and JSON Lines treat dates, reserved
tokens and empty codes alike, and every error names the row (tables) or the sample, feature
and position (samples).

- Far dates (9999-12-31, an OMOP "no end" date) are read exactly instead of overflowing
  nanosecond timestamps; dates nothing can represent are bad rows, named.
- A time column of numbers with one date (or of dates with one number) blames that row,
  not every other one.
- ``<pad>`` and ``<unk>`` in data are refused, never turned into padding or the unknown code.
- An empty or blank code is refused by every reader.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _robustness_kit import LABELS, SCHEMA, make_samples

from ehrlens.core.jsonl import read_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.data.events import EventTableWarning, from_events
from ehrlens.data.sources import load_samples

STAGES = {"dx": "stagenet"}
DATES = [dt.date(2020, 1, 1), dt.date(9999, 12, 31), dt.date(2020, 1, 3)]
#: Days after the first event, computed with Python's own calendar.
EXPECTED_DAYS = [float((d - DATES[0]).days) for d in sorted(DATES)]


def _events(times, codes=("x", "y", "z")):
    return pd.DataFrame({"patient_id": "a", "time": times, "feature": "dx", "code": list(codes)})


def _as_csv(tmp_path, times) -> object:
    path = tmp_path / "events.csv"
    _events(times).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "source",
    ["strings", "dates", "datetimes", "datetime64", "csv", "parquet-date32", "parquet-timestamp"],
)
def test_a_date_in_year_9999_is_read_exactly(tmp_path, source):
    text = [d.isoformat() for d in DATES]
    if source == "strings":
        events = _events(text)
    elif source == "dates":
        events = _events(DATES)
    elif source == "datetimes":
        events = _events([dt.datetime(d.year, d.month, d.day) for d in DATES])
    elif source == "datetime64":
        events = _events(np.array(text, dtype="datetime64[us]"))
    elif source == "csv":
        events = _as_csv(tmp_path, text)
    else:
        kind = pa.date32() if source == "parquet-date32" else pa.timestamp("us")
        values = DATES if kind == pa.date32() else [dt.datetime(*d.timetuple()[:3]) for d in DATES]
        table = pa.table(
            {"patient_id": ["a"] * 3, "time": pa.array(values, kind), "feature": ["dx"] * 3,
             "code": ["x", "y", "z"]}
        )  # fmt: skip
        events = tmp_path / "events.parquet"
        pq.write_table(table, events)
    [sample] = from_events(events, STAGES)
    assert sample["dx"] == (EXPECTED_DAYS, [["x"], ["z"], ["y"]])  # 9999 sorts last


@pytest.mark.parametrize("bad", ["99999-01-01", "2020-13-01", "2020-02-30"])
def test_a_date_nothing_can_represent_is_a_named_bad_row(bad):
    with pytest.raises(ValueError) as error:
        from_events(_events(["2020-01-01", "2020-01-02", bad]), STAGES)
    assert str(error.value).startswith(
        "event table: 1 bad row(s) of 3 — unparsable or missing time: 1 (rows 3)"
    )


def test_one_date_in_a_numeric_time_column_blames_that_row(tmp_path):
    rows = ["patient_id,time,feature,code"]
    rows += [f"p{i % 5},{'2020-01-01' if i == 3 else i},dx,c{i}" for i in range(256)]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError) as error:
        load_samples(path, {"dx": "sequence"})
    assert str(error.value) == (
        "event table: 1 bad row(s) of 256 — a date among numeric times: 1 (rows 4) (pass "
        "on_bad_rows='skip' to drop them)"
    )
    with pytest.warns(EventTableWarning, match=r"1 bad row\(s\) of 256 .*rows 4\); skipped"):
        samples = from_events(path, {"dx": "sequence"}, on_bad_rows="skip")
    assert sum(len(s["dx"]) for s in samples) == 255
    assert "c3" not in {c for s in samples for c in s["dx"]}


def test_one_number_in_a_date_column_blames_that_row():
    times = ["2020-01-01", "2020-01-02", "17", "2020-01-04", "2020-01-05"]
    events = pd.DataFrame(
        {"patient_id": "a", "time": times, "feature": "dx", "code": list("vwxyz")}
    )
    with pytest.raises(ValueError, match=r"^event table: 1 bad row\(s\) of 5 — a number among "
                       r"dates: 1 \(rows 3\)"):  # fmt: skip
        from_events(events, STAGES)


def test_a_tie_keeps_the_old_reading_of_numbers_with_one_unparsable_cell():
    """Half numbers, half garbage: still numeric times, the garbage rows bad (as before)."""
    events = pd.DataFrame({"patient_id": "a", "time": ["1", "x", "2", "y"], "feature": "dx",
                           "code": list("abcd")})  # fmt: skip
    with pytest.raises(ValueError, match=r"unparsable or missing time: 2 \(rows 2, 4\)"):
        from_events(events, STAGES)


# ----------------------------------------------------------------------------- reserved codes


@pytest.mark.parametrize("token", ["<pad>", "<unk>"])
@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("codes", ["C1", "{t}"], "position 1"),
        ("visits", [["C1"], ["C2", "{t}"]], "visit 1, position 1"),
        ("steps", ([0.0, 1.0], [["{t}"], ["C1"]]), "step 0, position 0"),
    ],
)
def test_reserved_tokens_in_samples_are_refused(tmp_path, token, key, value, where):
    samples = make_samples(3)
    samples[2][key] = json.loads(json.dumps(value).replace("{t}", token))
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    with pytest.raises(ValueError) as error:
        create_sample_dataset(read_jsonl(path), SCHEMA, LABELS)
    assert str(error.value) == (
        f"sample 2, feature '{key}': {where}: code '{token}' is reserved (ids 0 and 1 are "
        "<pad>, <unk>); rename it"
    )


def test_reserved_tokens_in_new_patients_are_refused_too():
    fitted = create_sample_dataset(make_samples(), SCHEMA, LABELS).schema
    samples = make_samples(2)
    samples[1]["codes"] = ["<pad>"]  # would otherwise become padding: silently dropped
    with pytest.raises(ValueError, match=r"sample 1, feature 'codes': position 0: code '<pad>'"):
        create_sample_dataset(samples, schema=fitted)


def test_reserved_tokens_in_event_tables_are_named_bad_rows():
    events = pd.DataFrame(
        {"patient_id": ["a", "a", "b", "b"], "time": [0, 1, 0, 1], "feature": "dx",
         "code": ["x", "<unk>", "<pad>", "y"]}
    )  # fmt: skip
    with pytest.raises(ValueError) as error:
        from_events(events, STAGES)
    assert str(error.value) == (
        "event table: 2 bad row(s) of 4 — reserved code (<pad>, <unk>): 2 (rows 2, 3) (pass "
        "on_bad_rows='skip' to drop them)"
    )
    # measurement names of numeric features are not codes: "<pad>" is a valid column name
    labs = pd.DataFrame({"patient_id": "a", "time": [0.0], "feature": "labs", "code": ["<pad>"],
                         "value": [1.5]})  # fmt: skip
    [sample] = from_events(labs, {"labs": "timeseries"})
    assert sample["labs"] == ([0.0], [[1.5]])


# ----------------------------------------------------------------------------- empty codes


@pytest.mark.parametrize("empty", ["", " ", "\t"])
def test_an_empty_code_is_refused_by_every_reader(tmp_path, empty):
    samples = make_samples(3)
    samples[1]["visits"] = [["C1", empty]]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    with pytest.raises(ValueError) as error:
        create_sample_dataset(load_samples(path), SCHEMA, LABELS)
    assert str(error.value) == (
        f"sample 1, feature 'visits': visit 0, position 1: empty code {empty!r}"
    )
    events = pd.DataFrame({"patient_id": "a", "time": [0, 1], "feature": "dx",
                           "code": ["x", empty]})  # fmt: skip
    with pytest.raises(ValueError, match=r"no code: 1 \(rows 2\)"):
        from_events(events, STAGES)


def test_labels_and_integer_codes_are_untouched():
    """The checks are for codes: integer codes (0 included) and multilabel labels pass."""
    samples = make_samples(3)
    samples[0]["codes"] = [0, 1, "C1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = create_sample_dataset(samples, SCHEMA, LABELS)
    vocabulary = ds.input_processors["codes"].vocabulary.code_to_id
    assert {"0", "1"} <= set(vocabulary) and ds[0]["codes"].tolist()[:2] == [
        vocabulary["0"],
        vocabulary["1"],
    ]
    tags = [{"patient_id": f"t{i}", "codes": ["C1"], "tags": t} for i, t in
            enumerate([["", "a"], ["<pad>"]])]  # fmt: skip
    labelled = create_sample_dataset(tags, {"codes": "sequence"}, {"tags": "multilabel"})
    assert labelled.output_processors["tags"].classes == ["", "<pad>", "a"]
