"""Long-format event tables -> samples (ehrlens.data.events), and back."""

from __future__ import annotations

import gzip

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.data.events import EventTableWarning, from_events, read_table, to_events

COLUMNS = ["patient_id", "visit_id", "time", "feature", "code", "value"]
SCHEMA = {
    "dx": "nested_sequence",
    "px": "stagenet",
    "meds": "sequence",
    "labs": "timeseries",
    "demo": "tensor",
}

# One row per event; row numbers (1-based data rows) in the comments.
ROWS = [
    ("A", "v2", "2020-01-03", "dx", "I10", None),  # 1
    ("A", "v1", "2020-01-01", "dx", "E11", None),  # 2
    ("A", "v1", "2020-01-01T12:00:00", "px", "P1", None),  # 3
    ("A", "v2", "2020-01-03", "dx", "J45", None),  # 4
    ("A", "v1", "2020-01-01", "dx", "E78", None),  # 5
    ("A", None, "2020-01-01", "labs", "glucose", "5.5"),  # 6
    ("A", None, "2020-01-02", "labs", "sodium", "140"),  # 7
    ("A", None, "2020-01-02", "labs", "glucose", "6.0"),  # 8
    ("A", None, "2020-01-02", "labs", "glucose", "6.5"),  # 9: repeated at one time: new step
    ("A", None, "2020-01-01", "demo", "age", "0.5"),  # 10
    ("A", None, "2020-01-01", "demo", "sex", "1"),  # 11
    ("B", "w1", "2020-02-10", "dx", "I10", None),  # 12
    ("B", "w1", "2020-02-10", "demo", "sex", "0"),  # 13
    ("B", "w1", "2020-02-10", "demo", "age", "0.7"),  # 14
    ("B", "w1", "2020-02-11", "labs", "sodium", "135"),  # 15
    ("A", "v2", "2020-01-02T18:00:00", "meds", "M2", None),  # 16: v2's earliest event
    ("A", "v1", "2020-01-02T06:00:00", "meds", "M1", None),  # 17
    ("B", "w1", "2020-02-10", "meds", "M3", None),  # 18
    ("C", None, "2020-03-05", "dx", "X3", None),  # 19: no visit_id: visits are distinct times
    ("C", None, "2020-03-01", "dx", "X1", None),  # 20
    ("C", None, "2020-03-01", "dx", "X2", None),  # 21
    ("C", None, "2020-03-01", "demo", "age", "0.9"),  # 22
    ("C", None, "2020-03-01", "demo", "sex", "0"),  # 23
    ("C", None, "2020-03-05", "labs", "glucose", "7"),  # 24
]
LABELS = pd.DataFrame({"patient_id": ["C", "A", "B"], "label": [1, 1, 0]})

EXPECTED = [
    {
        "patient_id": "A",
        "dx": [["E11", "E78"], ["I10", "J45"]],
        "px": ([0.0, 1.75], [["P1"], []]),
        "meds": ["M1", "M2"],
        "labs": ([0.0, 1.0, 1.0], [[5.5, 0.0], [6.0, 140.0], [6.5, 140.0]]),
        "demo": [0.5, 1.0],
        "label": 1,
    },
    {
        "patient_id": "B",
        "dx": [["I10"]],
        "px": ([0.0], [[]]),
        "meds": ["M3"],
        "labs": ([1.0], [[0.0, 135.0]]),
        "demo": [0.7, 0.0],
        "label": 0,
    },
    {
        "patient_id": "C",
        "dx": [["X1", "X2"], ["X3"]],
        "px": ([0.0, 4.0], [[], []]),
        "meds": [],
        "labs": ([4.0], [[7.0, 0.0]]),
        "demo": [0.9, 0.0],
        "label": 1,
    },
]


def _table(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def test_hand_built_table_gives_exact_samples():
    samples = from_events(_table(), SCHEMA, labels=LABELS)
    assert samples == EXPECTED
    # the samples are what create_sample_dataset takes
    dataset = create_sample_dataset(samples, SCHEMA, {"label": "binary"})
    assert dataset.patient_ids == ["A", "B", "C"]


def test_time_unit_scales_dates_and_numeric_times_are_kept():
    hours = from_events(_table(), SCHEMA, labels=LABELS, time_unit="hours")
    assert hours[0]["px"] == ([0.0, 42.0], [["P1"], []])
    assert hours[0]["labs"][0] == [0.0, 24.0, 24.0]
    numeric = pd.DataFrame(
        {
            "patient_id": ["p", "p", "p"],
            "time": [10.5, 3.0, 10.5],
            "feature": ["px"] * 3,
            "code": ["b", "a", "c"],
        }
    )
    (sample,) = from_events(numeric, {"px": "stagenet"})
    assert sample == {"patient_id": "p", "px": ([3.0, 10.5], [["a"], ["b", "c"]])}


def test_csv_and_parquet_give_the_same_samples(tmp_path):
    table = _table()
    csv_path = tmp_path / "events.csv"
    table.to_csv(csv_path, index=False)
    typed = table.copy()
    typed["time"] = pd.to_datetime(typed["time"], format="ISO8601")
    typed["value"] = pd.to_numeric(typed["value"])
    parquet_path = tmp_path / "events.parquet"
    typed.to_parquet(parquet_path, index=False)
    assert pa.types.is_timestamp(pq.read_schema(parquet_path).field("time").type)
    labels_csv = tmp_path / "labels.csv"
    LABELS.to_csv(labels_csv, index=False)
    labels_parquet = tmp_path / "labels.parquet"
    LABELS.to_parquet(labels_parquet, index=False)
    from_csv = from_events(csv_path, SCHEMA, labels=labels_csv)
    from_parquet = from_events(parquet_path, SCHEMA, labels=labels_parquet)
    assert from_csv == EXPECTED
    assert from_parquet == EXPECTED
    # pyarrow Tables are read too
    assert from_events(pa.Table.from_pandas(typed), SCHEMA, labels=LABELS) == EXPECTED


def test_tsv_gzip_csv_and_a_byte_order_mark_are_read(tmp_path):
    table = pd.DataFrame(
        {"patient_id": ["007", "007", "010"], "time": [1, 2, 1], "feature": "dx", "code": "abc"}
    )
    expected = [
        {"patient_id": "007", "dx": ["a", "b"]},
        {"patient_id": "010", "dx": ["c"]},
    ]
    table["code"] = ["a", "b", "c"]
    text = table.to_csv(index=False)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as spreadsheet programs save CSV
    assert from_events(bom, {"dx": "sequence"}) == expected  # ids stay text: "007", not 7
    tsv = tmp_path / "events.tsv"
    table.to_csv(tsv, index=False, sep="\t")
    assert from_events(tsv, {"dx": "sequence"}) == expected
    for name, sep in (("events.csv.gz", ","), ("events.tsv.gz", "\t")):
        with gzip.open(tmp_path / name, "wt") as f:
            f.write(table.to_csv(index=False, sep=sep))
        assert from_events(tmp_path / name, {"dx": "sequence"}) == expected, name


@pytest.mark.parametrize("layout", ["sequence", "nested", "stagenet"])
def test_round_trip_of_synthetic_layouts(layout):
    cohort = generate_cohort(
        40, layout=layout, seed=3, include_labs=True, include_demographics=True
    )
    table = to_events(cohort.samples, cohort.input_schema)
    assert list(table.columns) == COLUMNS
    labels = pd.DataFrame(
        {
            "patient_id": [s["patient_id"] for s in cohort.samples],
            "label": [s["label"] for s in cohort.samples],
        }
    )
    samples = from_events(table, cohort.input_schema, labels=labels)
    assert samples == cohort.samples
    without_labels = from_events(table, cohort.input_schema)
    assert without_labels == [{k: v for k, v in s.items() if k != "label"} for s in cohort.samples]


def test_round_trip_keeps_the_order_of_more_than_ten_unnamed_columns():
    """Default names "0".."11" come back in numeric order, not text order ("10" < "2")."""
    vector = [float(i) for i in range(12)]
    samples = [
        {"patient_id": "a", "vitals": vector},
        {"patient_id": "b", "vitals": vector[::-1]},
    ]
    table = to_events(samples, {"vitals": "tensor"})
    assert from_events(table, {"vitals": "tensor"}) == samples
    mixed = pd.DataFrame(
        {
            "patient_id": ["a"] * 4,
            "time": [0.0] * 4,
            "feature": ["v"] * 4,
            "code": ["10", "2", "hr", "1"],
            "value": [10.0, 2.0, 60.0, 1.0],
        }
    )
    assert from_events(mixed, {"v": "tensor"})[0]["v"] == [1.0, 2.0, 10.0, 60.0]


def test_to_events_rows_and_measurement_names():
    samples = [
        {
            "patient_id": 7,
            "dx": [["a", "b"], ["c"]],
            "labs": ([0.0, 2.0], [[1.0, 2.0], [3.0, 4.0]]),
            "demo": [0.5, 1.0],
        }
    ]
    schema = {"dx": "nested_sequence", "labs": "timeseries", "demo": "tensor"}
    columns = {"labs": ["na", "k"], "demo": ["age", "sex"]}
    table = to_events(samples, schema, columns=columns)
    assert table.drop(columns=["visit_id", "value"]).values.tolist() == [
        ["7", 0.0, "dx", "a"],
        ["7", 0.0, "dx", "b"],
        ["7", 1.0, "dx", "c"],
        ["7", 0.0, "labs", "na"],
        ["7", 0.0, "labs", "k"],
        ["7", 2.0, "labs", "na"],
        ["7", 2.0, "labs", "k"],
        ["7", 0.0, "demo", "age"],
        ["7", 0.0, "demo", "sex"],
    ]
    assert table["visit_id"].tolist()[:3] == ["7-0", "7-0", "7-1"]
    assert table["visit_id"].isna().tolist() == [False] * 3 + [True] * 6
    assert table["value"].tolist()[3:] == [1.0, 2.0, 3.0, 4.0, 0.5, 1.0]
    assert table["value"].isna().tolist()[:3] == [True, True, True]
    back = from_events(table, schema, columns=columns)
    assert back == [
        {**samples[0], "patient_id": "7", "labs": ([0.0, 2.0], [[1.0, 2.0], [3.0, 4.0]])}
    ]
    with pytest.raises(ValueError, match="feature 'x': schema 'multihot' has no event form"):
        to_events([{"patient_id": "a", "x": [1]}], {"x": "multihot"})


def test_columns_fix_measurement_order_and_reject_unknown_names():
    samples = from_events(_table(), SCHEMA, labels=LABELS, columns={"labs": ["sodium", "glucose"]})
    assert samples[0]["labs"] == ([0.0, 1.0, 1.0], [[0.0, 5.5], [140.0, 6.0], [140.0, 6.5]])
    with pytest.raises(ValueError, match=r"feature 'labs': measurement\(s\) \['sodium'\] are not"):
        from_events(_table(), SCHEMA, labels=LABELS, columns={"labs": ["glucose"]})


# ----------------------------------------------------------------------------- bad rows
def _bad_table() -> pd.DataFrame:
    table = _table()
    table.loc[1, "patient_id"] = None  # row 2
    table.loc[3, "time"] = "not a date"  # row 4
    table.loc[6, "value"] = "abc"  # row 7: numeric feature
    table.loc[7, "code"] = "  "  # row 8: blank
    table.loc[11, "feature"] = None  # row 12
    table.loc[16, "time"] = None  # row 17
    table.loc[17, "value"] = "ignored for codes"  # row 18: fine, code features take no value
    return table


def test_bad_rows_error_names_rows_and_reasons():
    with pytest.raises(ValueError) as error:
        from_events(_bad_table(), SCHEMA, labels=LABELS)
    assert str(error.value) == (
        "event table: 6 bad row(s) of 24 — no patient_id: 1 (rows 2); no feature: 1 (rows 12); "
        "no code: 1 (rows 8); unparsable or missing time: 2 (rows 4, 17); unparsable or missing "
        "value (numeric feature): 1 (rows 7) (pass on_bad_rows='skip' to drop them)"
    )


def test_bad_rows_skip_warns_with_counts_and_drops_only_them():
    with pytest.warns(EventTableWarning) as record:
        samples = from_events(_bad_table(), SCHEMA, labels=LABELS, on_bad_rows="skip")
    messages = [str(w.message) for w in record]
    assert messages == [
        "event table: 6 bad row(s) of 24 — no patient_id: 1 (rows 2); no feature: 1 (rows 12); "
        "no code: 1 (rows 8); unparsable or missing time: 2 (rows 4, 17); unparsable or missing "
        "value (numeric feature): 1 (rows 7); skipped"
    ]
    a, b, c = samples
    assert a["dx"] == [["E78"], ["I10"]]  # rows 2 and 4 dropped
    assert a["meds"] == ["M2"]  # row 17 dropped
    assert a["px"] == ([0.0, 1.75], [["P1"], []])
    assert a["labs"] == ([0.0, 1.0], [[5.5, 0.0], [6.5, 0.0]])  # rows 7 and 8 dropped
    assert b["dx"] == [[]]  # row 12 dropped; B's visit w1 still has meds
    assert b["meds"] == ["M3"]
    assert c == EXPECTED[2]


def test_bad_rows_list_is_cut_after_ten_with_a_count():
    table = pd.DataFrame(
        {
            "patient_id": ["a"] * 14,
            "time": ["x"] * 12 + ["1", "2"],
            "feature": "dx",
            "code": "c",
        }
    )
    with pytest.raises(
        ValueError, match=r"time: 12 \(rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more\)"
    ):
        from_events(table, {"dx": "sequence"})


def test_one_malformed_numeric_time_is_one_bad_row():
    table = pd.DataFrame(
        {"patient_id": ["a", "a", "a", "b"], "time": ["1", "2.5", "x", "3"], "feature": "dx",
         "code": ["p", "q", "r", "s"]}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^event table: 1 bad row\(s\) of 4 — unparsable or "
                       r"missing time: 1 \(rows 3\)"):  # fmt: skip
        from_events(table, {"dx": "stagenet"})
    with pytest.warns(EventTableWarning, match=r"rows 3\); skipped"):
        samples = from_events(table, {"dx": "stagenet"}, on_bad_rows="skip")
    assert samples == [
        {"patient_id": "a", "dx": ([1.0, 2.5], [["p"], ["q"]])},
        {"patient_id": "b", "dx": ([3.0], [["s"]])},
    ]


def test_one_malformed_date_is_one_bad_row():
    table = pd.DataFrame(
        {"patient_id": ["a", "a", "a"], "time": ["2021-01-01", "garbage", "2021-01-11"],
         "feature": "dx", "code": ["p", "q", "r"]}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unparsable or missing time: 1 \(rows 2\)"):
        from_events(table, {"dx": "stagenet"})


def test_unknown_features_are_ignored_with_a_count():
    table = pd.concat(
        [
            _table(),
            pd.DataFrame(
                [("A", None, "2020-01-01", "notes", "n1", None)] * 3
                + [("B", None, "2020-02-10", "vitals", "hr", "80")],
                columns=COLUMNS,
            ),
        ],
        ignore_index=True,
    )
    with pytest.warns(EventTableWarning) as record:
        samples = from_events(table, SCHEMA, labels=LABELS)
    assert [str(w.message) for w in record] == [
        "event table: ignored 4 row(s) of feature(s) not in input_schema: ['notes', 'vitals']"
    ]
    assert samples == EXPECTED


def test_an_unknown_feature_only_table_has_no_usable_rows():
    with pytest.warns(EventTableWarning, match="ignored 24 row"):
        with pytest.raises(ValueError, match="no usable rows for the features in input_schema"):
            from_events(_table(), {"other": "sequence"})


# ----------------------------------------------------------------------------- labels
def test_labels_table_missing_a_patient_names_it():
    with pytest.raises(ValueError, match="patient 'B': no label 'label' in the labels table"):
        from_events(_table(), SCHEMA, labels=LABELS[LABELS["patient_id"] != "B"])


def test_labels_table_with_extra_patients_warns():
    extra = pd.concat([LABELS, pd.DataFrame({"patient_id": ["Z", "Y"], "label": [0, 1]})])
    with pytest.warns(EventTableWarning) as record:
        samples = from_events(_table(), SCHEMA, labels=extra)
    assert [str(w.message) for w in record] == [
        "labels: 2 labelled patient(s) have no usable events and were left out, e.g. ['Y', 'Z']"
    ]
    assert samples == EXPECTED


def test_labels_table_problems():
    with pytest.raises(ValueError, match=r"labels table lacks column\(s\) \['mortality'\]"):
        from_events(_table(), SCHEMA, labels=LABELS, label_key="mortality")
    holes = pd.DataFrame({"patient_id": ["A", None, "C"], "label": [1.0, 0.0, None]})
    with pytest.raises(
        ValueError, match=r"labels table: 2 row\(s\) without a patient_id .*rows 2, 3"
    ):
        from_events(_table(), SCHEMA, labels=holes)
    varying = pd.concat([LABELS, pd.DataFrame({"patient_id": ["A"], "label": [0]})])
    with pytest.raises(ValueError, match=r"patient 'A': label 'label' varies \(1 and 0\)"):
        from_events(_table(), SCHEMA, labels=varying)
    with pytest.raises(ValueError, match="give labels= or label_column=, not both"):
        from_events(_table().assign(label=1), SCHEMA, labels=LABELS, label_column="label")


def test_label_column_gives_labels_and_must_not_vary_within_a_patient():
    table = _table()
    table["y"] = table["patient_id"].map({"A": "1", "B": "0", "C": "1"})
    samples = from_events(table, SCHEMA, label_column="y", label_key="y")
    assert [s["y"] for s in samples] == [1, 0, 1]
    assert [{k: v for k, v in s.items() if k != "y"} for s in samples] == [
        {k: v for k, v in s.items() if k != "label"} for s in EXPECTED
    ]
    table.loc[20, "y"] = "0"  # row 21 belongs to patient C
    with pytest.raises(ValueError, match=r"patient 'C': label 'y' varies \(1 and 0\)"):
        from_events(table, SCHEMA, label_column="y", label_key="y")


# ----------------------------------------------------------------------------- columns, schema
def test_missing_columns_are_listed():
    table = _table().drop(columns=["time", "code"])
    with pytest.raises(ValueError) as error:
        from_events(table, {"dx": "sequence"})
    assert "event table lacks column(s) ['time', 'code']" in str(error.value)
    assert "it has ['patient_id', 'visit_id', 'feature', 'value']" in str(error.value)
    no_value = _table().drop(columns=["value"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['value'\]"):
        from_events(no_value, {"labs": "timeseries"})
    with pytest.warns(EventTableWarning, match=r"ignored 16 row\(s\)"):
        samples = from_events(no_value, {"dx": "nested_sequence"})
    assert samples[1] == {"patient_id": "B", "dx": [["I10"]]}
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['outcome'\]"):
        from_events(_table(), {"dx": "sequence"}, label_column="outcome")


def test_tensor_measurement_missing_or_repeated_is_an_error():
    table = _table().drop(index=13)  # row 14: B's age
    with pytest.raises(ValueError, match=r"patient 'B', feature 'demo': no value for \['age'\]"):
        from_events(table, SCHEMA, labels=LABELS)
    repeated = pd.concat(
        [
            _table(),
            pd.DataFrame([("A", None, "2020-01-05", "demo", "age", "0.51")], columns=COLUMNS),
        ],
        ignore_index=True,
    )  # row 25: a second age for A would silently replace the first
    with pytest.raises(ValueError) as error:
        from_events(repeated, SCHEMA, labels=LABELS)
    assert str(error.value) == (
        "patient 'A', feature 'demo': 2 values for 'age' (rows 10, 25); a tensor feature takes "
        "one value per measurement"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_bad_rows": "drop"}, "on_bad_rows must be 'error' or 'skip', got 'drop'"),
        ({"time_unit": "weeks"}, "time_unit must be one of"),
        ({"input_schema": {"dx": "multihot"}}, "feature 'dx': schema 'multihot' cannot be built"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"input_schema": {"dx": "sequence"}, **kwargs}
    with pytest.raises(ValueError, match=message):
        from_events(_table(), **kwargs)


def test_read_table_sources_and_errors(tmp_path):
    frame = _table()
    assert read_table(frame.set_index("code")).index.tolist() == list(range(24))
    assert read_table(pa.Table.from_pandas(frame)).shape == (24, 6)
    with pytest.raises(TypeError, match=r"expected a path to a \.parquet or \.csv file"):
        read_table(42)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "events.xlsx").write_bytes(b"PK")
    with pytest.raises(ValueError, match="unknown table format"):
        read_table(tmp_path / "events.xlsx")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable table"):
        read_table(tmp_path / "broken.parquet")
    csv = tmp_path / "e.csv"
    frame.to_csv(csv, index=False)
    read = read_table(csv)
    assert read["value"].iloc[5] == "5.5"  # CSV cells stay text until parsed
    assert read["visit_id"].isna().sum() == 12
