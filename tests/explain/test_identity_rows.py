"""Attribution rows carry the identity of the input: each step's original visit_id and event
time (event tables, MEDS) and each sample's subject_id / prediction_time (MEDS)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.data.events import from_events
from ehrlens.data.identity import item_identity, unit_identity
from ehrlens.explain import explain_cohort
from ehrlens.explain.shards import table_digest
from ehrlens.models import Transformer

SCHEMA = {"dx": "nested_sequence", "meds": "sequence"}


def _events():
    return pd.DataFrame(
        {
            "patient_id": ["A", "A", "A", "A", "B", "B"],
            "visit_id": ["v1", "v1", "v2", "v2", None, None],
            "time": [
                "2020-01-01T00:00:00", "2020-01-01T06:00:00", "2020-01-03T12:00:00",
                "2020-01-03T12:00:00", "2021-05-01T00:00:00", "2021-05-02T00:00:00",
            ],
            "feature": ["dx", "meds", "dx", "dx", "dx", "meds"],
            "code": ["I10", "M1", "E11", "E78", "J45", "M2"],
        }
    )  # fmt: skip


def test_event_table_steps_keep_their_visit_id_and_time():
    samples = from_events(_events(), SCHEMA, labels=None, identity=True)
    a, b = samples
    jan1, jan3 = datetime(2020, 1, 1), datetime(2020, 1, 3, 12)
    assert a["step_identity"] == {
        "dx": {"visit_id": ["v1", "v2"], "event_time": [jan1, jan3]},
        # a code of a sequence: its visit's id, and the visit's time
        "meds": {"visit_id": ["v1"], "event_time": [datetime(2020, 1, 1)]},
    }  # fmt: skip
    assert b["step_identity"] == {  # no visit_id: visits are the distinct times
        "dx": {"visit_id": [None, None], "event_time": [datetime(2021, 5, d) for d in (1, 2)]},
        "meds": {"visit_id": [None], "event_time": [datetime(2021, 5, 2)]},
    }  # fmt: skip
    assert (
        "step_identity" not in from_events(_events(), SCHEMA)[0]
    )  # the default keeps samples as before


def test_rows_carry_each_units_visit_id_and_event_time():
    samples = from_events(_events(), SCHEMA, identity=True)
    for i, sample in enumerate(samples):
        sample["label"] = i
    dataset = create_sample_dataset(samples, SCHEMA, {"label": "binary"})
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1).eval()
    frame = explain_cohort(model, dataset, ["rollout"]).to_frame()
    got = frame[["patient_id", "feature", "visit", "position", "code", "visit_id", "event_time"]]
    assert got.astype(object).where(got.notna(), None).values.tolist() == [
        ["A", "dx", 0, 0, "I10", "v1", pd.Timestamp("2020-01-01")],
        ["A", "dx", 1, 0, "E11", "v2", pd.Timestamp("2020-01-03T12:00")],
        ["A", "dx", 1, 1, "E78", "v2", pd.Timestamp("2020-01-03T12:00")],
        ["A", "meds", None, 0, "M1", "v1", pd.Timestamp("2020-01-01")],
        ["B", "dx", 0, 0, "J45", None, pd.Timestamp("2021-05-01")],
        ["B", "meds", None, 0, "M2", None, pd.Timestamp("2021-05-02")],
    ]
    assert "subject_id" not in frame.columns  # only what the input has


def test_numeric_times_stay_numbers(tmp_path):
    events = _events().assign(time=[0.0, 0.25, 2.5, 2.5, 10.0, 11.0])
    samples = from_events(events, SCHEMA, identity=True)
    for i, sample in enumerate(samples):
        sample["label"] = i
    dataset = create_sample_dataset(samples, SCHEMA, {"label": "binary"})
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1).eval()
    result = explain_cohort(model, dataset, ["rollout"], out_dir=tmp_path / "attr")
    table = pq.read_table(result.shards[0])
    assert str(table.schema.field("event_time").type) == "double"
    assert table.column("event_time").to_pylist() == [0.0, 2.5, 2.5, 0.0, 10.0, 11.0]
    # the content digest covers identity columns: changing one changes it
    changed = table.set_column(
        table.schema.get_field_index("visit_id"),
        "visit_id",
        table.column("visit_id").fill_null("x"),
    )
    assert table_digest(changed) != table_digest(table)


def test_item_identity_follows_truncation_and_refuses_short_lists():
    sample = {
        "patient_id": "p", "subject_id": 7, "prediction_time": datetime(2020, 1, 9),
        "step_identity": {"dx": {"event_time": [datetime(2020, 1, d) for d in (1, 2, 3)]}},
    }  # fmt: skip
    kept = item_identity(sample, {"dx": torch.zeros(2, 1)}, "sample 0")  # the last 2 kept
    assert kept["step_identity"]["dx"]["event_time"] == [datetime(2020, 1, 2), datetime(2020, 1, 3)]
    assert kept["identity"] == {"subject_id": 7, "prediction_time": datetime(2020, 1, 9)}
    assert unit_identity(kept, "dx", 1, 0, "event_time") == datetime(2020, 1, 3)
    assert unit_identity(kept, "dx", None, 0, "event_time") == datetime(2020, 1, 2)
    assert unit_identity(kept, "other", 0, 0, "event_time") is None
    with pytest.raises(
        ValueError,
        match=r"sample 0, feature 'dx': 'step_identity' lists 3 event_time value\(s\) "
        r"for 4 step\(s\)",
    ):
        item_identity(sample, {"dx": torch.zeros(4, 1)}, "sample 0")
