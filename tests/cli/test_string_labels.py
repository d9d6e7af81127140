"""A cohort whose binary labels are the words ``low`` / ``high``: the positive class is named,
never guessed from the spelling, and every surface keeps the predicted and explained class
apart."""

from __future__ import annotations

import json
import re

import pytest

from _cli_invoke import TINY_TRAIN, invoke
from _html_tree import parse, patient_sections
from ehrlens.models.directory import load_model_dir


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    root = tmp_path_factory.mktemp("words")
    data = root / "data"
    invoke("synthetic", data, "--patients", 80, "--seed", 2)
    samples = root / "samples.jsonl"
    with samples.open("w") as out:
        for line in (data / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            sample["label"] = "high" if sample["label"] == 1 else "low"
            out.write(json.dumps(sample) + "\n")
    return root, data, samples


def test_two_words_without_a_positive_class_are_refused(words):
    root, data, samples = words
    result = invoke(
        "train", "--data", samples, "--schema", data / "schema.json", "--out", root / "no",
        *TINY_TRAIN, expect=1,
    )  # fmt: skip
    assert "'high' and 'low'" in result.stderr
    assert "--positive-class high or --positive-class low" in result.stderr
    assert not (root / "no" / "model.pt").exists()


@pytest.mark.slow
def test_the_named_class_is_positive_and_every_surface_says_so(words):
    root, data, samples = words
    model = root / "model"
    trained = invoke(
        "train", "--data", samples, "--schema", data / "schema.json", "--out", model,
        "--positive-class", "high", *TINY_TRAIN,
    )  # fmt: skip
    assert "classes (output order): 0: low, 1: high; positive class: high" in trained.stdout
    _, card = load_model_dir(model)
    assert card["task"]["classes"] == ["low", "high"]
    assert card["task"]["positive_class"] == "high"
    described = invoke("describe", "--model", model).stdout
    assert "0: low, 1: high" in described and re.search(r"positive\s+high", described)
    refused = invoke(
        "explain", "--model", model, "--data", samples, "--target", "2", "--out",
        root / "none", "-q", expect=2,
    )  # fmt: skip
    assert "--target 2 is out of range; classes in output order: 0: low, 1: high" in (
        refused.stderr
    )
    invoke(
        "explain", "--model", model, "--data", samples, "-m", "rollout", "--target", "high",
        "--out", root / "attr", "-q",
    )  # fmt: skip
    invoke(
        "report", "--model", model, "--data", samples, "--attributions", root / "attr",
        "--out", root / "r.html", "--max-patients", 0,
    )  # fmt: skip
    tree = parse((root / "r.html").read_text(encoding="utf-8"))
    sections = patient_sections(tree)
    assert len(sections) == 80
    for pid, section in sections.items():
        pills = [p.text() for p in section.find_all("span", "pill")]
        explained = re.fullmatch(r"explained high, probability (0\.\d{3}|1\.000)", pills[1])
        assert explained, (pid, pills)
        p_high = float(explained.group(1))
        # the predicted class is the more probable one, whatever class is explained
        predicted = re.fullmatch(r"predicted (low|high), probability (\d\.\d{3})", pills[0])
        assert predicted, (pid, pills)
        name, p_predicted = predicted.group(1), float(predicted.group(2))
        assert p_predicted >= 0.5, pills
        if name == "high":
            assert p_predicted == p_high, pills
        else:  # both printed to 3 decimals, each rounded once
            assert abs(p_predicted - (1 - p_high)) <= 0.0011, pills
        assert re.fullmatch(r"label (low \(0\)|high \(1\))", pills[2]), pills
