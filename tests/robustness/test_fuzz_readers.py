"""Fuzzing the readers: random and corrupt input never escapes as an unhandled exception.

Every reader raises only its documented error types, with a message that says where:

- ``read_jsonl`` / ``load_samples``: ``ValueError`` naming the file (and the line);
- ``from_events`` (event tables, as DataFrames or CSV / Parquet files): ``ValueError`` naming
  rows, patients, features or columns (skipped rows are an ``EventTableWarning``);
- ``create_sample_dataset``: ``ValueError`` / ``TypeError`` naming the key (or the sample);
- ``FittedSchema.from_state_dict`` (the schema inside a checkpoint): ``ValueError``.

Whatever a reader accepts, the next step accepts or refuses the same way: no crash between.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _robustness_kit import LABELS, SCHEMA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrlens.core.jsonl import read_jsonl, write_jsonl
from ehrlens.data import FittedSchema, create_sample_dataset
from ehrlens.data.events import EventTableWarning, from_events
from ehrlens.data.sources import load_samples

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KEYS = [*SCHEMA, *LABELS]

#: Where a dataset error may point: a schema key (quoted), a sample, or the schemas.
DATASET_WHERE = re.compile(
    "|".join(f"'{re.escape(k)}'" for k in [*KEYS, "patient_id"]) + r"|sample|schema"
)


def _dataset_or_documented_error(samples, **kwargs) -> None:
    """``create_sample_dataset`` succeeds, or raises ValueError / TypeError saying where."""
    try:
        create_sample_dataset(samples, SCHEMA, LABELS, **kwargs)
    except (ValueError, TypeError) as error:
        assert DATASET_WHERE.search(str(error)), f"error names no key or sample: {error}"


# ----------------------------------------------------------------------------- sample values

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
#: Python values that JSON cannot carry: NaN, inf, huge ints, tuples, bytes, sets, arrays.
PYTHON = JSON | st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        10**400,
        b"I10",
        {"I10"},
        ("a", "b"),
        (None, ["a"]),
        ([0.0], [[math.nan]]),
        ([0.0, 1.0], [[1.0], [2.0, 3.0]]),
        ([1.0, 0.0], [["a"], ["b"]]),
        torch.tensor([1.0, math.inf]),
        np.array([1.0, 2.0]),
        [10**400, 1.0, 2.0],
    ]
)

VALID = {
    "codes": st.lists(st.sampled_from(["A", "B", "C", 7]), max_size=4),
    "visits": st.lists(st.lists(st.sampled_from(["A", "B", "C"]), max_size=3), max_size=3),
    "steps": st.integers(0, 3).map(lambda n: ([float(t) for t in range(n)], [["A"]] * n)),
    "labs": st.integers(1, 3).map(lambda n: ([float(t) for t in range(n)], [[0.5, 1.0]] * n)),
    "demo": st.just([0.1, 0.2, 0.3]),
    "y": st.sampled_from([0, 1]),
    "patient_id": st.text(min_size=1, max_size=3),
}


@st.composite
def samples(draw, values=PYTHON):
    """Mostly valid patients; any field may be missing or replaced by garbage."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        sample = {}
        for key, valid in VALID.items():
            kind = draw(st.sampled_from(["valid", "valid", "valid", "garbage", "missing"]))
            if kind == "valid":
                sample[key] = draw(valid)
            elif kind == "garbage":
                sample[key] = draw(values)
        out.append(sample)
    if draw(st.booleans()):
        out.append(draw(values))  # something that is not a dict at all
    return out


@FUZZ
@given(batch=samples())
def test_create_sample_dataset_on_random_samples(batch):
    _dataset_or_documented_error(batch)


@FUZZ
@given(batch=samples(), max_length=st.none() | st.integers(1, 3))
def test_new_patients_with_a_fitted_schema(batch, max_length):
    fit = [
        {"patient_id": "a", "codes": ["A"], "visits": [["A"]], "steps": ([0.0], [["A"]]),
         "labs": ([0.0], [[0.0, 0.0]]), "demo": [0.0, 0.0, 0.0], "y": 0},
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation warnings are tested elsewhere
        schema = create_sample_dataset(fit, SCHEMA, LABELS, max_length=max_length).schema
        try:
            create_sample_dataset(batch, schema=schema)
        except (ValueError, TypeError) as error:
            assert DATASET_WHERE.search(str(error)), f"error names no key or sample: {error}"


# ----------------------------------------------------------------------------- JSON Lines


def _jsonl_or_documented_error(path) -> None:
    try:
        loaded = load_samples(path)
    except ValueError as error:
        assert path.name in str(error), f"error names no file: {error}"
        return
    assert all(isinstance(s, dict) for s in loaded)
    _dataset_or_documented_error(loaded)


@FUZZ
@given(lines=st.lists(st.binary(max_size=40), min_size=0, max_size=5))
def test_random_bytes_as_jsonl(tmp_path, lines):
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(lines))
    _jsonl_or_documented_error(path)


@FUZZ
@given(lines=st.lists(JSON, min_size=1, max_size=4))
def test_random_json_values_as_jsonl(tmp_path, lines):
    path = tmp_path / "values.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in lines))
    _jsonl_or_documented_error(path)


@FUZZ
@given(batch=samples(values=JSON))
def test_random_json_samples_as_jsonl(tmp_path, batch):
    path = tmp_path / "samples.ndjson"
    path.write_text("\n".join(json.dumps(s) for s in batch))
    _jsonl_or_documented_error(path)


@pytest.fixture(scope="module")
def valid_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "valid.jsonl"
    rows = [
        {"patient_id": f"p{i}", "codes": ["A", "B"][: i + 1], "visits": [["A"], ["B", "C"]],
         "steps": ([0.0, 1.0], [["A"], ["B"]]), "labs": ([0.0], [[1.0, 2.0]]),
         "demo": [0.0, 1.0, 2.0], "y": i % 2}
        for i in range(3)
    ]  # fmt: skip
    write_jsonl(rows, path)
    create_sample_dataset(read_jsonl(path), SCHEMA, LABELS)  # the intact file is good
    return path.read_bytes()


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_jsonl(tmp_path, valid_jsonl, edits):
    data = bytearray(valid_jsonl)
    for where, byte in edits:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    path = tmp_path / "corrupt.jsonl"
    path.write_bytes(bytes(data))
    _jsonl_or_documented_error(path)


@FUZZ
@given(cut=st.floats(0, 1))
def test_truncated_jsonl(tmp_path, valid_jsonl, cut):
    path = tmp_path / "cut.jsonl"
    path.write_bytes(valid_jsonl[: int(cut * len(valid_jsonl))])
    _jsonl_or_documented_error(path)


# ----------------------------------------------------------------------------- event tables

EVENT_SCHEMA = {
    "codes": "sequence",
    "visits": "nested_sequence",
    "steps": "stagenet",
    "labs": "timeseries",
}
COLUMNS = ["patient_id", "visit_id", "time", "feature", "code", "value", "y"]
EVENT_WHERE = re.compile(r"row|patient|feature|column|label|event table|time|value", re.I)
CELL = (
    st.none()
    | st.text(max_size=5)
    | st.integers(-3, 10**20)
    | st.floats()
    | st.booleans()
    | st.sampled_from(["2020-01-01", "2020-13-45", "nan", "1e400", "", " ", "labs", "codes"])
)


@st.composite
def event_tables(draw):
    """Plausible event rows with a few cells replaced by garbage, or columns dropped."""
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        feature = draw(st.sampled_from([*EVENT_SCHEMA, "unknown"]))
        patient = draw(st.sampled_from(["a", "b", "c"]))
        rows.append(
            {
                "patient_id": patient,
                "visit_id": draw(st.sampled_from(["v1", "v2"])),
                "time": draw(st.floats(0, 10) | st.sampled_from(["2021-03-04", "2021-03-05"])),
                "feature": feature,
                "code": draw(st.sampled_from(["m1", "m2"] if feature == "labs" else ["x", "y"])),
                "value": draw(st.floats(-5, 5)),
                "y": {"a": 0, "b": 1, "c": 1}[patient],
            }
        )
    for _ in range(draw(st.integers(0, 3))):
        rows[draw(st.integers(0, len(rows) - 1))][draw(st.sampled_from(COLUMNS))] = draw(CELL)
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.drop(columns=draw(st.sets(st.sampled_from(["visit_id", "value", "time"]))))


def _events_or_documented_error(source, on_bad_rows: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            samples = from_events(source, EVENT_SCHEMA, label_key="y", label_column="y",
                                  on_bad_rows=on_bad_rows)  # fmt: skip
        except ValueError as error:
            assert EVENT_WHERE.search(str(error)), f"error says not where: {error}"
            return
    assert all(issubclass(w.category, EventTableWarning) for w in caught), caught
    try:
        create_sample_dataset(samples, EVENT_SCHEMA, LABELS)
    except (ValueError, TypeError) as error:
        assert DATASET_WHERE.search(str(error)), f"error names no key or sample: {error}"


@FUZZ
@given(table=event_tables(), on_bad_rows=st.sampled_from(["error", "skip"]))
def test_random_event_tables(table, on_bad_rows):
    _events_or_documented_error(table, on_bad_rows)


@FUZZ
@given(table=event_tables(), on_bad_rows=st.sampled_from(["error", "skip"]))
def test_random_event_tables_as_csv(tmp_path, table, on_bad_rows):
    path = tmp_path / "events.csv"
    table.to_csv(path, index=False)
    _events_or_documented_error(path, on_bad_rows)


def _table_file_or_documented_error(path) -> None:
    try:
        load_samples(path, EVENT_SCHEMA, label_key="y")
    except ValueError as error:
        assert path.name in str(error) or EVENT_WHERE.search(str(error)), str(error)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_as_a_parquet_table(tmp_path, data):
    path = tmp_path / "events.parquet"
    path.write_bytes(data)
    _table_file_or_documented_error(path)


@FUZZ
@given(text=st.text(max_size=200), suffix=st.sampled_from([".csv", ".tsv"]))
def test_random_text_as_a_csv_table(tmp_path, text, suffix):
    path = tmp_path / f"events{suffix}"
    path.write_text(text, encoding="utf-8")
    _table_file_or_documented_error(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_csv_that_is_not_utf8_names_the_file(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes("patient_id,time,feature,code\nJos\xe9,1,codes,x\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path.name}: not a readable table"):
        load_samples(path, EVENT_SCHEMA, label_key="y")


# ----------------------------------------------------------------------------- saved schemas


@pytest.fixture(scope="module")
def schema_state():
    fit = [
        {"patient_id": "a", "codes": ["A"], "visits": [["A"]], "steps": ([0.0], [["A"]]),
         "labs": ([0.0], [[0.0, 0.0]]), "demo": [0.0, 0.0, 0.0], "y": 0},
    ]  # fmt: skip
    return create_sample_dataset(fit, SCHEMA, LABELS).schema.state_dict()


def _leaves(state, path=()):
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _leaves(value, (*path, key))
    yield path


def _replace(state, path, value):
    if not path:
        return value
    out = dict(state)
    out[path[0]] = _replace(state[path[0]], path[1:], value)
    return out


@FUZZ
@given(data=st.data())
def test_corrupt_saved_schemas_raise_value_error(schema_state, data):
    path = data.draw(st.sampled_from(sorted(_leaves(schema_state), key=str)))
    state = _replace(schema_state, path, data.draw(JSON))
    try:
        FittedSchema.from_state_dict(state)
    except ValueError:
        pass
