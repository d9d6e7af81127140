"""Data that is not the data a model or an explanation was made on.

Issue "Hostile input, concurrent runs and wrong files", items 3 and 6: ``--split test`` on a
file with one line removed re-split the patients (6 of 9 "test" patients had been trained
on); ``report`` drew the timeline from attributions of one file and the risk from another.
"""

from __future__ import annotations

import json
import shutil

import pytest
from _cli_kit import invoke

from ehrlens.app.workflow import select_split
from ehrlens.core.jsonl import read_jsonl, write_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.explain import read_attributions
from ehrlens.models.directory import load_model_dir

pytestmark = pytest.mark.slow


def _explained(folder) -> list[str]:
    return list(dict.fromkeys(read_attributions(folder)["patient_id"]))


def test_item_3_the_test_split_is_carried_by_patient_id(cli_cohort, tmp_path):
    model_dir, samples_path = cli_cohort / "model", cli_cohort / "data" / "samples.jsonl"
    model, card = load_model_dir(model_dir)
    recorded = card["data"]["split"]["patient_ids"]
    samples = read_jsonl(samples_path)
    # the attack: the training file with one line removed
    shorter = [s for s in samples if s["patient_id"] != recorded["train"][0]]
    data = write_jsonl(shorter, tmp_path / "shorter.jsonl")
    redrawn = select_split(create_sample_dataset(shorter, schema=model.schema), "test", 0)
    leaked = set(redrawn.patient_ids) & set(recorded["train"])
    assert leaked, "re-splitting the shorter file must move training patients into test"

    invoke("explain", "--model", model_dir, "--data", data, "-m", "random", "--split", "test",
           "--out", tmp_path / "test", "-q")  # fmt: skip
    explained = _explained(tmp_path / "test")
    assert explained == [s["patient_id"] for s in shorter if s["patient_id"] in recorded["test"]]
    assert not set(explained) & (set(recorded["train"]) | set(recorded["val"]))
    result = invoke("evaluate", "--model", model_dir, "--data", data, "-m", "random",
                    "--split", "test", "--bootstrap", 5, "-q")  # fmt: skip
    assert any(line.startswith("random") for line in result.stdout.splitlines()), result.stdout

    # a patient the model never saw is "new", never "test"
    newcomer = dict(samples[0], patient_id="NEWCOMER")
    data = write_jsonl([*shorter, newcomer], tmp_path / "with_new.jsonl")
    for split, expected in (("test", explained), ("new", ["NEWCOMER"])):
        out = tmp_path / f"{split}_with_new"
        invoke("explain", "--model", model_dir, "--data", data, "-m", "random", "--split", split,
               "--out", out, "-q")  # fmt: skip
        assert _explained(out) == expected, split


def test_item_3_a_card_without_ids_refuses_other_data_and_says_why(cli_cohort, tmp_path):
    legacy = tmp_path / "legacy_model"
    shutil.copytree(cli_cohort / "model", legacy)
    card = json.loads((legacy / "card.json").read_text())
    recorded = card["data"]["split"].pop("patient_ids")
    (legacy / "card.json").write_text(json.dumps(card))
    samples = read_jsonl(cli_cohort / "data" / "samples.jsonl")
    data = write_jsonl(samples[1:], tmp_path / "shorter.jsonl")
    result = invoke("explain", "--model", legacy, "--data", data, "-m", "random",
                    "--split", "test", "--out", tmp_path / "a", "-q", expect=1)  # fmt: skip
    message = result.stderr
    assert message.startswith("error: --split test: the data (SHA-256 ")
    assert "is not the training file" in message and "would put training patients" in message
    assert not (tmp_path / "a").exists()
    # on the training file itself the seeded split is the training split
    invoke("explain", "--model", legacy, "--data", cli_cohort / "data" / "samples.jsonl",
           "-m", "random", "--split", "test", "--out", tmp_path / "b", "-q")  # fmt: skip
    assert _explained(tmp_path / "b") == recorded["test"]


def test_item_6_report_refuses_attributions_of_other_data(cli_cohort, tmp_path):
    model_dir, samples_path = cli_cohort / "model", cli_cohort / "data" / "samples.jsonl"
    invoke("explain", "--model", model_dir, "--data", samples_path, "-m", "rollout",
           "--out", tmp_path / "attr", "-q")  # fmt: skip
    samples = read_jsonl(samples_path)
    report = ["report", "--model", model_dir, "--attributions", tmp_path / "attr",
              "--out", tmp_path / "r.html"]  # fmt: skip

    edited = json.loads(json.dumps(samples))
    visits = edited[4]["diagnoses"]
    old = visits[0][0]
    new = next(c for s in samples for v in s["diagnoses"] for c in v if c != old)
    visits[0][0] = new
    data = write_jsonl(edited, tmp_path / "edited.jsonl")
    result = invoke(*report, "--data", data, expect=1)
    pid = edited[4]["patient_id"]
    assert result.stderr.startswith(
        f"error: patient {pid!r}, method 'rollout': the attributions and the data differ "
        f"(feature 'diagnoses', visit 0, position 0: code {old!r} in the attributions, {new!r} "
        "in the data); the attributions were computed on other data."
    )
    assert not (tmp_path / "r.html").exists()

    data = write_jsonl(samples[:-1], tmp_path / "fewer.jsonl")
    result = invoke(*report, "--data", data, expect=1)
    last = samples[-1]["patient_id"]
    assert result.stderr.startswith(
        f"error: 1 explained patient(s) are not in the data (first: [{last!r}])"
    )
    assert not (tmp_path / "r.html").exists()
    # the data that was explained, in another order, is fine
    data = write_jsonl(samples[::-1], tmp_path / "reversed.jsonl")
    invoke(*report, "--data", data)
    assert (tmp_path / "r.html").exists()
