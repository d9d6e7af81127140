"""`ehrlens report` puts the model card, the explained class and `evaluate`'s table in the
report header."""

from __future__ import annotations

import json
import re

import pytest

from _cli_invoke import TINY_TRAIN, invoke
from _html_tree import parse, patient_sections
from ehrlens.explain import read_attributions
from ehrlens.models.directory import load_model_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data, model = root / "data", root / "model"
    invoke("synthetic", data, "--patients", 60, "--seed", 1)
    samples = data / "samples.jsonl"
    invoke(
        "train", "--data", samples, "--schema", data / "schema.json", "--out", model,
        "--seed", 0, *TINY_TRAIN,
    )  # fmt: skip
    invoke(
        "explain", "--model", model, "--data", samples, "-m", "rollout",
        "--out", root / "attr", "--target", 0, "-q",
    )  # fmt: skip
    invoke(
        "explain", "--model", model, "--data", data / "events.parquet",
        "--labels", data / "labels.csv", "-m", "rollout", "--out", root / "from_events", "-q",
    )  # fmt: skip
    invoke(
        "evaluate", "--model", model, "--data", samples, "-m", "rollout,random",
        "--split", "test", "--bootstrap", 20, "--out", root / "eval.json", "-q",
    )  # fmt: skip
    return root, data, model


@pytest.mark.slow
def test_report_header_has_the_card_class_and_faithfulness(run):
    root, data, model = run
    invoke(
        "report", "--model", model, "--data", data / "samples.jsonl",
        "--attributions", root / "attr", "--out", root / "r.html",
        "--evaluation", root / "eval.json", "--max-patients", 5,
    )  # fmt: skip
    tree = parse((root / "r.html").read_text(encoding="utf-8"))
    _, card = load_model_dir(model)
    items = {
        d.attrs["data-item"]: "".join(d.text_parts)
        for d in tree.root.find_all("div", "card")[0].children
    }
    assert items["model"] == f"CodeTransformer {card['model_id']}"  # default on visits
    assert items["test"].startswith(f"AUROC {card['test_metrics']['roc_auc']:.3f}")
    assert items["explains"] == "class 0"  # explain ran with --target 0
    header = tree.root.find_all("header")[0].child("p").text()
    assert header == "5 of 60 explained patients shown · methods: rollout"
    # the risk shown is the probability of the explained class, named as such
    pills = [p.text() for p in next(iter(patient_sections(tree).values())).find_all("span", "pill")]
    assert re.fullmatch(r"predicted [01], probability 0\.\d{3}", pills[0])
    assert pills[1].startswith("explained 0, probability ")
    table = tree.root.find_all("table", "faithfulness")[0]
    rows = json.loads((root / "eval.json").read_text())["results"]
    cells = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]
    assert [c[0] for c in cells] == ["rollout", "random"]
    for row, got in zip(rows, cells, strict=True):
        assert got[1].startswith(f"{row['comprehensiveness']:.3f} [")
        assert got[2].startswith(f"{row['sufficiency']:.3f} [")
        assert got[3] == str(row["n_scored"])


@pytest.mark.slow
def test_report_refuses_a_file_that_is_not_an_evaluation(run):
    root, data, model = run
    bad = root / "not_eval.json"
    bad.write_text(json.dumps({"rows": []}))
    result = invoke(
        "report", "--model", model, "--data", data / "samples.jsonl",
        "--attributions", root / "attr", "--out", root / "bad.html", "--evaluation", bad,
        expect=1,
    )  # fmt: skip
    assert "not_eval.json: expected evaluation rows" in result.stderr
    assert not (root / "bad.html").exists()


@pytest.mark.slow
def test_visits_are_labelled_by_the_event_times_of_the_rows(run):
    root, data, model = run
    invoke(
        "report", "--model", model, "--data", data / "events.parquet",
        "--labels", data / "labels.csv", "--attributions", root / "from_events",
        "--out", root / "timed.html", "--max-patients", 3,
    )  # fmt: skip
    frame = read_attributions(root / "from_events")
    assert "event_time" in frame.columns
    sections = patient_sections(parse((root / "timed.html").read_text(encoding="utf-8")))
    assert len(sections) == 3
    for pid, section in sections.items():
        rows = frame[(frame["patient_id"] == pid) & frame["visit"].notna()]
        first = rows.groupby("visit")["event_time"].min()
        stamps = [t.strftime("%Y-%m-%d") if hasattr(t, "strftime") else f"t={t:g}" for t in first]
        feature = section.find_all("div", "feature")[0]  # every visit of the patient
        assert [v.text() for v in feature.find_all("div", "vlabel")] == stamps


def test_evaluate_scores_planted_code_recovery_from_ground_truth(run, tmp_path):
    root, data, model = run
    out = tmp_path / "recovery.json"
    result = invoke(
        "evaluate", "--model", model, "--data", data / "samples.jsonl", "-m", "rollout,random",
        "--split", "test", "--bootstrap", 20, "--ground-truth", data / "ground_truth.json",
        "--k", 3, "--out", out, "-q",
    )  # fmt: skip
    assert "planted codes recovered" in result.stdout
    rows = json.loads(out.read_text())["results"]
    for row in rows:
        for metric in ("signal_auroc", "precision@3", "recall@3"):
            assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"], (row, metric)
        assert 0.0 <= row["precision@3"] <= 1.0
    # the report's faithfulness table shows them, each saying which way is better
    invoke(
        "report", "--model", model, "--data", data / "samples.jsonl", "--attributions",
        root / "attr", "--evaluation", out, "--out", tmp_path / "r.html",
    )  # fmt: skip
    table = parse((tmp_path / "r.html").read_text(encoding="utf-8")).root.find_all(
        "table", "faithfulness"
    )[0]
    heads = [th.attrs.get("data-metric") for th in table.find_all("th")]
    assert {"signal_auroc", "precision@", "recall@"} <= set(heads)


def test_evaluate_refuses_ground_truth_of_another_cohort(run, tmp_path):
    _, data, model = run
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"X1": {"diagnoses": ["D001"]}}))
    result = invoke(
        "evaluate", "--model", model, "--data", data / "samples.jsonl", "-m", "random",
        "--split", "test", "--bootstrap", 5, "--ground-truth", other, "-q", expect=1,
    )  # fmt: skip
    assert "other.json: no ground truth for" in result.stderr


@pytest.mark.slow
def test_report_opens_an_attribution_folder_without_the_data_or_the_model_running(run, monkeypatch):
    """The rows carry each patient's prediction: without --data the report shows the same
    patients in the same order with the same probabilities, and the model never runs."""
    root, data, model = run
    invoke(
        "report", "--model", model, "--data", data / "samples.jsonl",
        "--attributions", root / "attr", "--out", root / "with-data.html", "--max-patients", 8,
    )  # fmt: skip
    from ehrlens.models import Transformer

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(Transformer, "forward", refuse)
    invoke(
        "report", "--model", model, "--attributions", root / "attr",
        "--out", root / "no-data.html", "--max-patients", 8,
    )  # fmt: skip

    def shown(path):
        tree = parse(path.read_text(encoding="utf-8"))
        return {
            pid: next(p.text() for p in section.find_all("span", "pill"))
            for pid, section in patient_sections(tree).items()
        }

    with_data, no_data = shown(root / "with-data.html"), shown(root / "no-data.html")
    assert list(no_data) == list(with_data) and len(no_data) == 8
    assert no_data == with_data
    frame = read_attributions(root / "attr")
    first = frame.drop_duplicates("patient_id").set_index("patient_id")
    for pid, pill in no_data.items():
        predicted = first.loc[pid, "predicted_class"]
        probability = first.loc[pid, "predicted_probability"]
        assert pill == f"predicted {predicted}, probability {probability:.3f}"
