"""The column-sliced event reader gives exactly the samples of the per-patient reference.

Issue "Eighteen more ways the promises break", item 17: 100,000 one-code patients took 94 s
in ``from_events`` (a pandas group per patient and per feature); 1,000,000 did not finish in
20 minutes. ``build_samples`` now sorts once and slices plain columns; the per-patient pandas
loop it replaced is kept here as the reference, and both must give identical samples on
messy tables (every input schema, dates and numbers, visit ids present and absent, ties in
time, rows out of order, several features per patient, identity on and off). The speed is
measured by ``benchmarks/events_scale.py``, not here.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

import ehrlens.data.events as events_module
from ehrlens.data.events import EventRows, from_events

SCHEMA = {
    "codes": "sequence",
    "visits": "nested_sequence",
    "steps": "stagenet",
    "labs": "timeseries",
    "demo": "tensor",
}


def reference_build_samples(
    frame, processors, *, columns=None, labels=None, label_key="label", dated=False,
    identity=True,
) -> list[dict[str, Any]]:  # fmt: skip
    """The reader before column slicing: one pandas group per patient, then per feature."""
    kinds = {key: processor.event_kind for key, processor in processors.items()}
    frame = frame.sort_values(["time", "row"], kind="stable")
    names = events_module._measurement_names(frame, kinds, columns)
    code_features = {k for k, kind in kinds.items() if kind == "codes"}
    samples = []
    order = pd.unique(frame.sort_values("row")["patient_id"])
    groups = dict(tuple(frame.groupby("patient_id", sort=False)))
    for pid in order:
        rows = groups[pid]
        sample: dict[str, Any] = {"patient_id": pid}
        start = rows["time"].min() if dated else 0.0
        visit_time: dict[Any, float] = {}
        for feature, visit, time in zip(
            rows["feature"].tolist(), rows["visit"].tolist(), rows["time"].tolist(), strict=True
        ):
            if feature in code_features and visit not in visit_time:
                visit_time[visit] = time
        identity_of = events_module._step_identity(rows) if identity else None
        by_feature = dict(tuple(rows.groupby("feature", sort=False)))
        steps = {}
        for key, processor in processors.items():
            events = EventRows(
                key=key, patient_id=pid, rows=by_feature.get(key, rows.iloc[0:0]),
                visits=list(visit_time), visit_times=visit_time, start=start,
                names=names.get(key),
            )  # fmt: skip
            sample[key] = processor.from_events(events)
            keyed = None if identity_of is None else processor.event_steps(events)
            if identity_of is not None and keyed is not None:
                steps[key] = identity_of(keyed)
        if steps:
            sample["step_identity"] = steps
        if labels is not None:
            sample[label_key] = labels[pid]
        samples.append(sample)
    return samples


def messy_table(seed: int, dated: bool) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for p in range(rng.randint(3, 9)):
        pid = f"P{rng.randint(0, 999)}-{p}"
        label = rng.randint(0, 1)
        for name in ("a", "b"):  # the tensor feature: one value per measurement
            rows.append((pid, None, 0, "demo", name, rng.uniform(-1, 1), label))
        for _ in range(rng.randint(1, 8)):
            t = rng.choice([0, 1, 1, 2, 5, 7.5])  # ties on purpose
            visit = rng.choice([None, f"v{rng.randint(0, 2)}", ""])
            feature = rng.choice(["codes", "visits", "steps", "labs", "labs"])
            if feature == "labs":
                rows.append((pid, visit, t, feature, rng.choice(["2", "10", "hr"]),
                             rng.uniform(0, 9), label))  # fmt: skip
            else:
                rows.append((pid, visit, t, feature, f"C{rng.randint(0, 5)}", None, label))
    rng.shuffle(rows)
    frame = pd.DataFrame(
        rows, columns=["patient_id", "visit_id", "time", "feature", "code", "value", "label"]
    )
    if dated:
        base = pd.Timestamp("2021-03-04T05:06:07")
        frame["time"] = [base + pd.Timedelta(hours=float(t)) for t in frame["time"]]
    return frame


def _both(frame, monkeypatch, **kwargs):
    def read():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return from_events(frame, SCHEMA, label_column="label", **kwargs)

    now = read()
    with monkeypatch.context() as patch:
        patch.setattr(events_module, "build_samples", reference_build_samples)
        before = read()
    return now, before


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("dated", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_item_17_same_samples_as_the_per_patient_reader(monkeypatch, seed, dated, identity):
    frame = messy_table(seed, dated)
    now, before = _both(frame, monkeypatch, identity=identity)
    assert now == before
    assert [type(s["patient_id"]) for s in now] == [type(s["patient_id"]) for s in before]


def test_item_17_one_code_patients_in_first_row_order(monkeypatch):
    """The shape of the benchmark: many one-code patients, ids not sorted."""
    n = 500
    index = np.random.default_rng(0).permutation(n)
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in index],
            "time": pd.Timestamp("2020-01-01") + pd.to_timedelta(index % 30, unit="D"),
            "feature": "visits",
            "code": [f"C{i % 7}" for i in index],
            "label": index % 2,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        now = from_events(frame, {"visits": "nested_sequence"}, label_column="label")
    with monkeypatch.context() as patch:
        patch.setattr(events_module, "build_samples", reference_build_samples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = from_events(frame, {"visits": "nested_sequence"}, label_column="label")
    assert now == before
    assert [s["patient_id"] for s in now] == [f"P{i}" for i in index]
