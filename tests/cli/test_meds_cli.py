"""`ehrlens train / explain / evaluate / report --data meds:ROOT --labels ...`: the full path on
the MEDS sample of meds_testing_helpers, on a generated MEDS dataset of a few hundred
subjects, and on a hand-built one whose rows are known exactly."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from _cli_invoke import invoke
from _meds_kit import (
    generated,
    generated_labels,
    static_sample,
    t,
    write_codes,
    write_labels,
    write_rows,
)
from ehrlens.data.meds import read_labels, sample_id

TINY = ["--epochs", "1", "--embedding-dim", "8", "--layers", "1", "--heads", "2", "-q"]


def full_path(tmp_path, root, labels, *train_options):
    data = ["--data", f"meds:{root}", "--labels", labels]
    model, attr = tmp_path / "model", tmp_path / "attr"
    invoke("train", *data, "--out", model, *TINY, *train_options)
    invoke("explain", "--model", model, *data, "-m", "rollout,chefer", "--out", attr, "-q")
    evaluation = tmp_path / "eval.json"
    invoke(
        "evaluate", "--model", model, *data, "-m", "rollout", "--split", "test",
        "--bootstrap", 20, "--out", evaluation, "-q",
    )  # fmt: skip
    report = tmp_path / "report.html"
    invoke("report", "--model", model, *data, "--attributions", attr, "--out", report)
    card = json.loads((model / "card.json").read_text())
    return card, pd.read_parquet(attr), json.loads(evaluation.read_text()), report.read_text()


@pytest.mark.slow
def test_full_path_on_the_static_sample_with_its_task(tmp_path):
    root, labels = static_sample(tmp_path / "static")
    card, frame, evaluation, page = full_path(tmp_path, root, labels)
    expected = read_labels(labels)[0]
    ids = {
        sample_id(s, w.to_pydatetime())
        for s, w in zip(expected["subject_id"], expected["prediction_time"], strict=False)
    }
    assert set(frame["patient_id"]) == ids
    # the split is the dataset's own: the held-out subject's samples are the test part
    assert {p.split("@")[0] for p in card["data"]["split"]["patient_ids"]["test"]} == {"1500733"}
    assert {p.split("@")[0] for p in card["data"]["split"]["patient_ids"]["val"]} == {"754281"}
    assert card["meds"]["options"]["features"] == {
        "ADMISSION": ["ADMISSION"],
        "EYE_COLOR": ["EYE_COLOR"],
        "other": [""],
    }
    assert {"subject_id", "prediction_time", "event_time"} <= set(frame.columns)
    assert (
        frame["patient_id"]
        == [
            sample_id(s, w.to_pydatetime())
            for s, w in zip(frame["subject_id"], frame["prediction_time"], strict=False)
        ]
    ).all()
    assert (
        frame["event_time"].dropna() <= frame.loc[frame["event_time"].notna(), "prediction_time"]
    ).all()
    assert evaluation["results"][0]["method"] == "rollout"
    assert (
        "Heart Rate" in page and "Brown Eyes. The most common eye color." in page
    )  # codes.parquet


@pytest.mark.slow
def test_full_path_on_a_generated_dataset_of_a_few_hundred_subjects(tmp_path):
    root = generated(tmp_path / "gen", 300)
    labels = generated_labels(root, tmp_path / "labels.parquet")
    card, frame, evaluation, _ = full_path(tmp_path, root, labels, "--time-bucket", "1D")
    assert frame["patient_id"].nunique() == pq.read_metadata(labels).num_rows
    assert card["meds"]["options"]["time_bucket"] == "1D"
    assert set(frame["feature"]) == {"dynamic", "static"}
    assert card["data"]["n_train"] > card["data"]["n_test"] > 0
    subjects = {
        part: {p.split("@")[0] for p in ids}
        for part, ids in card["data"]["split"]["patient_ids"].items()
    }
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"])
    assert len(evaluation["results"]) == 1


def test_hand_built_dataset_gives_the_expected_rows(tmp_path):
    root = tmp_path / "meds"
    rows = []
    for subject in range(1, 13):  # 12 subjects, every second one with the risk code
        rows += [(subject, None, "SEX//F" if subject % 3 else "SEX//M", None)]
        rows += [(subject, t("2020-01-01T08:00"), "DX//A", None)]
        if subject % 2:
            rows += [(subject, t("2020-01-02T08:00"), "DX//RISK", None)]
        rows += [(subject, t("2020-01-09T08:00"), "DX//AFTER", None)]
    write_rows(root / "data" / "0.parquet", rows)
    write_codes(root, {"DX//RISK": "the planted risk code"})
    labels = write_labels(
        tmp_path / "labels.parquet",
        [(s, t("2020-01-03T00:00"), bool(s % 2)) for s in range(1, 13)],
    )
    data = ["--data", f"meds:{root}", "--labels", labels]
    model, attr = tmp_path / "model", tmp_path / "attr"
    invoke("train", *data, "--out", model, *TINY, "--feature", "dx=DX", "--feature", "sex=SEX")
    invoke("explain", "--model", model, *data, "--out", attr, "-q")
    frame = pd.read_parquet(attr)
    one = frame[frame["subject_id"] == 1]
    assert one[["feature", "visit", "position", "code"]].values.tolist() == [
        ["dx", 1, 0, "DX//A"], ["dx", 2, 0, "DX//RISK"], ["sex", 0, 0, "SEX//F"],
    ]  # fmt: skip
    assert one["event_time"].tolist()[:2] == [
        pd.Timestamp("2020-01-01T08:00"),
        pd.Timestamp("2020-01-02T08:00"),
    ]
    assert pd.isna(one["event_time"].tolist()[2])  # static
    assert "DX//AFTER" not in set(frame["code"])  # after every prediction time
    assert len(frame) == 12 * 2 + 6  # A and SEX for each, RISK for the odd ones
    invoke("report", "--model", model, *data, "--attributions", attr, "--out", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "the planted risk code" in page  # metadata/codes.parquet
    assert "2020-01-02 08:00" in page  # the visits' real times, from event_time


def test_meds_usage_errors(tmp_path):
    root = tmp_path / "meds"
    write_rows(root / "data" / "0.parquet", [(1, t("2020-01-01"), "DX//A", None)])
    result = invoke(
        "train", "--data", f"meds:{tmp_path / 'nope'}", "--out", tmp_path / "m", expect=2
    )
    assert "does not exist" in result.stderr
    result = invoke("train", "--data", f"meds:{root}", "--out", tmp_path / "m", expect=2)
    assert "needs --labels" in result.stderr
    result = invoke(
        "train",
        "--data",
        f"meds:{tmp_path}",
        "--labels",
        root / "data" / "0.parquet",
        "--out",
        tmp_path / "m",
        expect=1,
    )
    assert "not a MEDS dataset (no data/ folder" in result.stderr
    result = invoke(
        "train",
        "--data",
        f"meds:{root}",
        "--labels",
        root / "data" / "0.parquet",
        "--out",
        tmp_path / "m",
        "--feature",
        "dx",
        expect=2,
    )
    assert "expected NAME=PREFIX" in result.stderr
