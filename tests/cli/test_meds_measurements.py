"""MEDS lab measurements keep their codes and values, from the rows to the report, and
diagnoses are scored per code by default on MEDS data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from _cli_invoke import invoke
from _html_tree import parse, patient_sections
from _meds_kit import t, write_codes, write_labels, write_rows

TINY = ["--epochs", "1", "--embedding-dim", "8", "--layers", "1", "--heads", "2", "-q"]
CREATININE, GLUCOSE = "LOINC//2160-0", "LOINC//2345-7"


def creatinine(subject: int) -> float:
    return round(0.5 + 0.25 * subject, 2)  # exact in float32


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    root = tmp_path_factory.mktemp("labs")
    meds = root / "meds"
    rows = []
    for subject in range(1, 15):
        rows += [(subject, t("2020-01-01T08:00"), "DX//A", None)]
        rows += [(subject, t("2020-01-01T08:00"), CREATININE, creatinine(subject))]
        rows += [(subject, t("2020-01-02T08:00"), GLUCOSE, 5.5)]
        if subject % 2:
            rows += [(subject, t("2020-01-02T08:00"), "DX//RISK", None)]
    write_rows(meds / "data" / "0.parquet", rows)
    write_codes(meds, {CREATININE: "Creatinine [Mass/volume] in Serum", "DX//RISK": "risk"})
    labels = write_labels(
        root / "labels.parquet", [(s, t("2020-01-03T00:00"), bool(s % 2)) for s in range(1, 15)]
    )
    data = ["--data", f"meds:{meds}", "--labels", labels]
    model, attr = root / "model", root / "attr"
    trained = invoke(
        "train", *data, "--out", model, *TINY, "--feature", "dx=DX", "--feature", "labs=LOINC",
        "--numeric", "labs",
    )  # fmt: skip
    invoke("explain", "--model", model, *data, "-m", "rollout", "--out", attr, "-q")
    report = root / "r.html"
    invoke("report", "--model", model, *data, "--attributions", attr, "--out", report)
    return root, trained, pd.read_parquet(attr), report.read_text(encoding="utf-8")


def test_lab_rows_carry_the_measurement_code_and_its_value(labs):
    _, _, frame, _ = labs
    lab = frame[frame["feature"] == "labs"]
    assert set(lab["code"]) == {CREATININE, GLUCOSE}
    one = lab[lab["subject_id"] == 3].sort_values(["visit", "position"])
    # step 0: creatinine measured, glucose not yet (0 before its first value); step 1: glucose
    # measured, creatinine carried forward: what the model was given
    assert one[["visit", "code", "value"]].values.tolist() == [
        [0, CREATININE, creatinine(3)], [0, GLUCOSE, 0.0],
        [1, CREATININE, creatinine(3)], [1, GLUCOSE, 5.5],
    ]  # fmt: skip
    assert frame.loc[frame["feature"] == "dx", "value"].isna().all()


def test_meds_data_train_a_code_level_model_by_default(labs):
    root, trained, frame, _ = labs
    card = json.loads((root / "model" / "card.json").read_text())
    assert card["training"]["model"] == "code_transformer"
    assert "code_transformer" in trained.stdout  # says which model it chose, and why
    assert set(frame.loc[frame["feature"] == "dx", "level"]) == {"code"}


def test_the_report_shows_lab_codes_descriptions_and_values(labs):
    _, _, frame, page = labs
    tree = parse(page)
    pid = frame.loc[frame["subject_id"] == 3, "patient_id"].iloc[0]
    section = patient_sections(tree)[pid]
    chips = [
        (c.attrs["data-code"], c.attrs.get("data-value"))
        for c in section.find_all("span", "code")
        if c.attrs["data-code"].startswith("LOINC")
    ]
    assert (CREATININE, f"{creatinine(3):g}") in chips and (GLUCOSE, "5.5") in chips
    text = section.text()
    assert "Creatinine [Mass/volume] in Serum" in text
    assert f"= {creatinine(3):g}" in text
