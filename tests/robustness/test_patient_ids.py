"""Item 5 of the hostile-input issue: patient ids that repeat, or that differ only in type
(``7`` and ``"7"`` both become patient ``"7"``), are refused by every reader, naming both
occurrences, instead of being merged into one patient downstream.

A sample is identified by its ``patient_id`` plus, where a patient has several samples, its
``visit_id``; attribution tables are keyed by ``patient_id`` alone, so ``explain`` needs one
sample per patient.
"""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from _robustness_kit import LABELS, SCHEMA, make_samples, run_cli, save_tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrlens.core.ids import find_id_clash, find_id_collision
from ehrlens.core.jsonl import read_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.data.events import from_events
from ehrlens.explain import explain_cohort

EVENTS = {"dx": "sequence"}


def _lines(path, samples) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


# ----------------------------------------------------------------------------- JSON Lines


def test_jsonl_refuses_an_id_written_once_as_number_and_once_as_text(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"patient_id": "7", "dx": ["a"]}\n\n{"patient_id": 8, "dx": ["b"]}\n'
        '{"patient_id": 7, "dx": ["c"]}\n'
    )  # line 2 is blank: the lines named are the file's own
    with pytest.raises(ValueError) as error:
        read_jsonl(path)
    assert str(error.value) == (
        f"{path}:4: line 4 has patient_id 7 and line 1 has '7': both are patient '7' as "
        "text; write every patient_id the same way (all strings, or all numbers)"
    )


def test_jsonl_refuses_a_repeated_id_naming_both_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    _lines(path, [{"patient_id": f"P{i}", "dx": ["a"]} for i in (1, 2, 3, 2)])
    with pytest.raises(ValueError, match=r"p\.jsonl:4: line 4 repeats patient_id 'P2' of line 2"):
        read_jsonl(path)


def test_jsonl_keeps_several_samples_of_a_patient_with_distinct_visits(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"patient_id": "P1", "visit_id": v, "dx": ["a"]} for v in ("v1", "v2")]
    _lines(path, rows)
    assert read_jsonl(path) == rows
    _lines(path, [*rows, {"patient_id": "P1", "visit_id": "v1", "dx": ["b"]}])
    with pytest.raises(ValueError, match=r":3: line 3 repeats patient_id 'P1' of line 1; .*visit"):
        read_jsonl(path)


# ----------------------------------------------------------------------------- in memory


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", 7, "b", "7"], r"^sample 3 has patient_id '7' and sample 1 has 7: both are "),
        (["a", "b", "a"], r"^sample 2 repeats patient_id 'a' of sample 0; "),
        ([True, "True"], r"^sample 1 has patient_id 'True' and sample 0 has True"),
    ],
)
def test_create_sample_dataset_refuses_clashing_ids(ids, message):
    samples = make_samples(len(ids))
    for sample, pid in zip(samples, ids, strict=True):
        sample["patient_id"] = pid
    with pytest.raises(ValueError, match=message):
        create_sample_dataset(samples, SCHEMA, LABELS)


def test_create_sample_dataset_refuses_ids_colliding_with_the_training_schema():
    fitted = create_sample_dataset(make_samples(4), SCHEMA, LABELS).schema
    samples = make_samples(3)
    samples[0]["patient_id"], samples[2]["patient_id"] = 12, "12"
    with pytest.raises(ValueError, match=r"sample 2 has patient_id '12' and sample 0 has 12"):
        create_sample_dataset(samples, schema=fitted)


# ----------------------------------------------------------------------------- event tables


def test_event_table_refuses_ids_of_two_types_naming_both_rows():
    table = pd.DataFrame(
        {
            "patient_id": pd.Series(["a", 7, "a", "7"], dtype=object),
            "time": [0, 1, 2, 3],
            "feature": "dx",
            "code": ["x", "y", "z", "w"],
        }
    )
    with pytest.raises(ValueError) as error:
        from_events(table, EVENTS)
    assert str(error.value) == (
        "event table: row 4 has patient_id '7' and row 2 has 7: both are patient '7' as text; "
        "write every patient_id the same way (all strings, or all numbers)"
    )
    # one patient over many rows is what an event table is: no clash
    table["patient_id"] = ["a", "b", "a", "b"]
    assert [s["patient_id"] for s in from_events(table, EVENTS)] == ["a", "b"]


def test_labels_table_refuses_ids_of_two_types():
    events = pd.DataFrame({"patient_id": ["7"], "time": [0], "feature": "dx", "code": ["x"]})
    labels = pd.DataFrame({"patient_id": pd.Series([7, "7"], dtype=object), "label": [1, 0]})
    with pytest.raises(ValueError, match=r"^labels table: row 2 has patient_id '7' and row 1"):
        from_events(events, EVENTS, labels=labels)


# ----------------------------------------------------------------------------- explain


def test_explain_cohort_refuses_two_samples_of_one_patient(tmp_path):
    """Distinct visit ids make a valid dataset, but attribution rows would share one key."""
    from _robustness_kit import make_model

    samples = make_samples(4)
    samples[3]["patient_id"] = samples[1]["patient_id"]
    samples[1]["visit_id"], samples[3]["visit_id"] = "v1", "v2"
    dataset = create_sample_dataset(samples, SCHEMA, LABELS)
    model = make_model("Transformer", dataset)
    out = tmp_path / "attr"
    with pytest.raises(ValueError, match=r"sample 3 repeats patient_id 'p1' of sample 1; patient"):
        explain_cohort(model, dataset, ["rollout"], out_dir=out)
    assert not out.exists()


def test_cli_explain_refuses_colliding_ids_and_writes_nothing(tmp_path):
    dataset = create_sample_dataset(make_samples(), SCHEMA, LABELS)
    model_dir = save_tiny_model(tmp_path, dataset)
    samples = make_samples(3)
    samples[0]["patient_id"], samples[2]["patient_id"] = "7", 7
    data = tmp_path / "p.jsonl"
    _lines(data, samples)
    out = tmp_path / "attr"
    result = run_cli("explain", "--model", model_dir, "--data", data, "--out", out, "-q")
    assert result.exit_code == 1, result.output
    assert f"{data}:3: line 3 has patient_id 7 and line 1 has '7'" in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- the rule itself

IDS = st.one_of(st.integers(-3, 12), st.sampled_from(["1", "2", "7", "a", "-3"]), st.booleans())


def _reference(samples, strict):
    """Brute force over all pairs: the first (by second position, then first) that clashes."""
    for j, i in ((b, a) for b in range(len(samples)) for a in range(b)):
        a, b = samples[i], samples[j]
        if str(a["patient_id"]) != str(b["patient_id"]):
            continue
        kind = {type(a["patient_id"]), type(b["patient_id"])}
        if len(kind) > 1:
            return i, j, "collision"
        visits = (None, None) if strict else (a.get("visit_id"), b.get("visit_id"))
        if visits[0] == visits[1]:
            return i, j, "duplicate"
    return None


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.tuples(IDS, st.sampled_from([None, "v1", "v2"])), max_size=8),
    st.booleans(),
)
def test_find_id_clash_matches_a_brute_force_reference(pairs, strict):
    samples = [
        {"patient_id": pid, **({} if visit is None else {"visit_id": visit})}
        for pid, visit in pairs
    ]
    clash = find_id_clash(samples, strict=strict)
    expected = _reference(samples, strict)
    if expected is None:
        assert clash is None
    else:
        assert clash is not None
        assert (clash.first, clash.second, clash.reason) == expected


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.one_of(IDS, st.none()), max_size=10))
def test_find_id_collision_flags_only_values_of_two_kinds(values):
    clash = find_id_collision(values)
    pairs = [
        (i, j)
        for i, j in itertools.combinations(range(len(values)), 2)
        if values[i] is not None
        and values[j] is not None
        and str(values[i]) == str(values[j])
        and type(values[i]) is not type(values[j])
    ]
    if not pairs:
        assert clash is None
    else:
        assert clash is not None and clash.reason == "collision"
        assert str(clash.first_value) == str(clash.second_value) == clash.text
        assert type(clash.first_value) is not type(clash.second_value)
        assert clash.second == min(j for _, j in pairs)
