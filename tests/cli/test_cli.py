"""The `ehrlens` command: end to end on a small synthetic cohort, exit codes and messages,
and a real process killed in the middle of `explain`, then resumed."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from _cli_invoke import TINY_TRAIN, invoke
from _tolerance import assert_same_rows
from ehrlens.core.files import file_sha256
from ehrlens.core.jsonl import read_jsonl, write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.data.events import to_events
from ehrlens.explain import explain_cohort
from ehrlens.explain.shards import manifest_digest
from ehrlens.explain.table import arrow_schema
from ehrlens.models.directory import load_model_dir
from ehrlens.report import patient_predictions

N_PATIENTS = 120
COMMANDS = ("synthetic", "train", "explain", "evaluate", "report", "demo")


def count_units(sample, input_schema) -> int:
    """Non-padding input units of one raw (JSON) sample, counted from the sample itself."""
    total = 0
    for key, schema in input_schema.items():
        value = sample[key]
        if schema == "sequence":
            total += len(value)
        elif schema in ("nested_sequence",):
            total += sum(len(visit) for visit in value)
        elif schema == "stagenet":
            total += sum(len(s) if isinstance(s, list) else 1 for s in value[1])
        elif schema == "timeseries":
            total += len(value[1]) * len(value[1][0]) if value[1] else 0
        elif schema == "tensor":
            total += len(value)
        else:
            raise AssertionError(schema)
    return total


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_shards(folder: Path) -> pd.DataFrame:
    paths = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)


VOID_TAGS = frozenset({"meta", "br", "img", "link", "input", "hr"})


class _Elements(HTMLParser):
    """Flat list of (tag, attrs, ancestors' (tag, attrs)) plus text per element id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.elements: list[tuple[str, dict, tuple]] = []
        self.texts: list[tuple[tuple, str]] = []
        self.styles = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs, tuple(self.stack)))
        if tag not in VOID_TAGS:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, tag
        self.stack.pop()

    def handle_data(self, data):
        self.texts.append((tuple(self.stack), data))
        if self.stack and self.stack[-1][0] == "style":
            self.styles += data


def parse_html(text: str) -> _Elements:
    parser = _Elements()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    return parser


def assert_self_contained(parsed: _Elements) -> None:
    for tag, attrs, _ in parsed.elements:
        for name in ("src", "href", "srcset", "data", "action"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, value)
        assert not (tag == "script" and "src" in attrs)
        assert tag not in ("link", "iframe", "img", "object", "embed")
    assert "@import" not in parsed.styles.lower() and "url(" not in parsed.styles.lower()


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """synthetic -> train -> explain -> evaluate -> report, each through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data, model, attr = root / "data", root / "model", root / "attr"
    out = {"root": root, "data": data, "model": model, "attr": attr}
    out["synthetic"] = invoke("synthetic", data, "--patients", N_PATIENTS, "--seed", 0)
    out["train"] = invoke(
        "train", "--data", data / "samples.jsonl", "--schema", data / "schema.json",
        "--out", model, "--seed", 0, *TINY_TRAIN,
    )  # fmt: skip
    out["explain"] = invoke(
        "explain", "--model", model, "--data", data / "samples.jsonl",
        "-m", "rollout,chefer", "--method", "random", "--out", attr,
        "--shard-size", 25, "--batch-size", 16, "-q",
    )  # fmt: skip
    out["evaluate"] = invoke(
        "evaluate", "--model", model, "--data", data / "samples.jsonl", "-m", "rollout,random",
        "--split", "test", "--bootstrap", 50, "--out", root / "eval.json",
        "--plot", root / "curves.png", "-q",
    )  # fmt: skip
    out["report"] = invoke(
        "report", "--model", model, "--data", data / "samples.jsonl", "--attributions", attr,
        "--out", root / "report.html", "--codes", data / "codes.csv", "--top-k", 5,
        "--max-patients", 10, "--heatmaps", root / "heat",
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_synthetic_writes_every_input_format(pipeline):
    data = pipeline["data"]
    for name in ("samples", "events", "labels", "schema", "codes", "ground_truth", "risk"):
        assert re.search(rf"^{name}\s+\S+", pipeline["synthetic"].stdout, re.M), name
    assert sorted(p.name for p in data.iterdir()) == [
        "codes.csv",
        "events.parquet",
        "ground_truth.json",
        "labels.csv",
        "risk.csv",
        "samples.jsonl",
        "schema.json",
    ]
    assert len(read_jsonl(data / "samples.jsonl")) == N_PATIENTS


@pytest.mark.slow
def test_train_writes_a_model_directory_with_a_card(pipeline):
    model_dir, data = pipeline["model"], pipeline["data"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["card.json", "model.pt"]
    stdout = pipeline["train"].stdout
    assert re.search(r"^test: roc_auc \d\.\d{3}, ", stdout, re.M)
    assert f"wrote {model_dir / 'model.pt'} and {model_dir / 'card.json'}" in stdout
    _, card = load_model_dir(model_dir)
    # visits of codes: the default model is the one that scores each code, and train says so
    assert card["model_class"] == "CodeTransformer"
    assert re.search(r"^model: code_transformer \(the default for visits of codes", stdout, re.M)
    assert {k: card["hparams"][k] for k in ("embedding_dim", "num_layers", "heads")} == {
        "embedding_dim": 16,
        "num_layers": 1,
        "heads": 2,
    }
    assert card["data"]["path"] == str(data / "samples.jsonl")
    assert card["data"]["sha256"] == file_sha256(data / "samples.jsonl")
    assert card["data"]["n_patients"] == N_PATIENTS
    assert card["data"]["n_train"] + card["data"]["n_val"] + card["data"]["n_test"] == N_PATIENTS
    assert card["training"]["epochs"] == 1 and card["training"]["seed"] == 0
    assert len(card["training"]["history"]) == 1
    assert card["input_schema"] == json.loads((data / "schema.json").read_text())["input_schema"]


@pytest.mark.slow
def test_explain_writes_the_long_format_table(pipeline):
    attr, data = pipeline["attr"], pipeline["data"]
    samples = read_jsonl(data / "samples.jsonl")
    schema = json.loads((data / "schema.json").read_text())["input_schema"]
    units = {s["patient_id"]: count_units(s, schema) for s in samples}
    methods = ["rollout", "chefer", "random"]
    expected_rows = sum(units.values()) * len(methods)
    assert pipeline["explain"].stdout.strip() == (
        f"{N_PATIENTS} patients x 3 method(s): {expected_rows} rows in 5 shard(s) under {attr} "
        "(5 computed, 0 already complete)"
    )
    shards = sorted(p.name for p in attr.glob("part-*.parquet"))
    assert shards == [f"part-{i:05d}.parquet" for i in range(5)]
    for name in shards:
        assert pq.read_schema(attr / name).remove_metadata().equals(arrow_schema())
    frame = read_shards(attr)
    assert len(frame) == expected_rows
    assert list(frame.columns) == [
        "patient_id", "feature", "visit", "position", "code", "score", "method", "model_id",
        "predicted_class", "predicted_probability", "explained_class", "explained_probability",
        "value", "level",
    ]  # fmt: skip
    sizes = frame.groupby(["patient_id", "method"]).size()
    assert len(sizes) == N_PATIENTS * len(methods)
    assert all(sizes[(pid, m)] == n for pid, n in units.items() for m in methods)
    model, card = load_model_dir(pipeline["model"])
    assert set(frame["model_id"]) == {card["model_id"]}
    assert set(frame["feature"]) == set(schema)
    manifest = json.loads((attr / "_ehrlens_run.json").read_text())
    assert manifest["complete"] is True and manifest["rows"] == expected_rows
    # the Python API returns the same table (the command buckets batches by length)
    dataset = create_sample_dataset(samples, schema=model.schema)
    api = explain_cohort(
        model, dataset, {"rollout": {}, "chefer": {}, "random": {"seed": 0}},
        batch_size=16, shard_size=25, model_id=card["model_id"], bucket_by_length=True,
    )  # fmt: skip
    assert_same_rows(api.to_frame(), frame)  # another entry point: scores within rounding


@pytest.mark.slow
def test_evaluate_writes_the_faithfulness_table_and_curves(pipeline):
    root = pipeline["root"]
    lines = pipeline["evaluate"].stdout.splitlines()
    assert lines[0].split() == ["method", "comprehensiveness", "sufficiency", "s/1000", "pts"]
    assert lines[1].split() == ["(higher", "is", "better)", "(lower", "is", "better)"]
    number = r"-?\d\.\d{3}"
    for line, method in zip(lines[3:5], ["rollout", "random"], strict=True):
        cell = rf"{number} \[{number}, {number}\]"
        assert re.fullmatch(rf"{method}\s+{cell}\s+{cell}\s+\d+\.\d\d", line), line
    assert f"wrote {root / 'eval.json'}" in lines and f"wrote {root / 'curves.png'}" in lines
    results = json.loads((root / "eval.json").read_text())["results"]
    _, card = load_model_dir(pipeline["model"])
    assert [r["method"] for r in results] == ["rollout", "random"]
    for row in results:
        assert row["n_patients"] == card["data"]["n_test"]
        assert row["comprehensiveness_low"] <= row["comprehensiveness"]
        assert row["comprehensiveness"] <= row["comprehensiveness_high"]
        assert all(math.isfinite(row[k]) for k in ("sufficiency", "seconds_per_1000"))
    png = (root / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 8_000


@pytest.mark.slow
def test_evaluate_attnlrp_with_the_sanity_check(pipeline, tmp_path):
    result = invoke(
        "evaluate", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "attnlrp,random", "--split", "val", "--bootstrap", 20, "--batch-size", 8,
        "--sanity", tmp_path / "sanity.csv", "--sanity-plot", tmp_path / "sanity.png", "-q",
    )  # fmt: skip
    assert "sanity: rank correlation" in result.stdout
    frame = pd.read_csv(tmp_path / "sanity.csv")
    assert set(frame["method"]) == {"attnlrp", "random"}
    assert set(frame["check"]) == {"model_parameter_randomisation"}
    steps = frame[frame["method"] == "random"]["step"].tolist()
    assert steps[0] == "head" and len(steps) == len(set(steps))
    # random scores ignore the weights; AttnLRP's are destroyed once everything is redrawn
    assert float((frame[frame["method"] == "random"]["mean"] - 1.0).abs().max()) < 1e-9
    assert float(frame[frame["method"] == "attnlrp"]["mean"].iloc[-1]) < 0.5
    assert (tmp_path / "sanity.png").read_bytes()[:4] == b"\x89PNG"
    refused = invoke(
        "evaluate", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "random", "--sanity-plot", tmp_path / "other.png", "-q", expect=2,
    )  # fmt: skip
    assert "--sanity-plot needs --sanity" in refused.output


@pytest.mark.slow
def test_evaluate_csv_output(pipeline, tmp_path):
    invoke(
        "evaluate", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "random", "--split", "val", "--bootstrap", 10, "--out", tmp_path / "e.csv", "-q",
    )  # fmt: skip
    frame = pd.read_csv(tmp_path / "e.csv")
    assert frame["method"].tolist() == ["random"]
    _, card = load_model_dir(pipeline["model"])
    assert frame["n_patients"].tolist() == [card["data"]["n_val"]]


@pytest.mark.slow
def test_report_is_a_self_contained_page_of_the_riskiest_patients(pipeline):
    root, data = pipeline["root"], pipeline["data"]
    text = (root / "report.html").read_text(encoding="utf-8")
    parsed = parse_html(text)
    assert_self_contained(parsed)
    model, _ = load_model_dir(pipeline["model"])
    samples = read_jsonl(data / "samples.jsonl")
    dataset = create_sample_dataset(samples, schema=model.schema)
    predictions = patient_predictions(model, dataset)
    order = [s["patient_id"] for s in samples]  # ties keep table (dataset) order
    riskiest = sorted(order, key=lambda p: -predictions[p].probability)[:10]
    sections = [
        attrs["id"][2:]
        for tag, attrs, _ in parsed.elements
        if tag == "section" and attrs.get("class") == "patient"
    ]
    assert sections == riskiest
    assert pipeline["report"].stdout.splitlines()[0] == (
        f"wrote {root / 'report.html'} (10 of {N_PATIENTS} patients)"
    )
    frame = read_shards(pipeline["attr"])
    descriptions = dict(pd.read_csv(data / "codes.csv", dtype=str).values.tolist())
    for pid in riskiest:
        chips = []
        for tag, attrs, ancestors in parsed.elements:
            if tag != "span" or attrs.get("class") != "code":
                continue
            section = [a for t, a in ancestors if t == "section"]
            if section[0].get("id") != f"p-{pid}":
                continue
            chips.append((attrs["data-code"], attrs["title"]))
        rows = frame[frame["patient_id"] == pid]
        expected = [  # a visit-level score is shown once on its visit, not on each code
            (
                code,
                f"{code} — {descriptions[code]}: "
                + ("scored with its visit" if level == "visit" else f"score {score:.6g}"),
            )
            for code, score, level in zip(rows["code"], rows["score"], rows["level"], strict=True)
        ]
        assert Counter(chips) == Counter(expected), pid
        pills = [
            d for anc, d in parsed.texts if anc and anc[-1][1].get("class") == "pill"
            and any(a.get("id") == f"p-{pid}" for _, a in anc)
        ]  # fmt: skip
        label = next(s["label"] for s in samples if s["patient_id"] == pid)
        positive = predictions[pid].probability  # binary, no target: class 1 explained
        assert pills[:2] == [
            f"predicted {int(positive >= 0.5)}, probability {max(positive, 1 - positive):.3f}",
            f"explained 1, probability {positive:.3f}",
        ]
        assert re.fullmatch(rf"label {label}(\.0)?", pills[2]), pills  # 0/1 labels
        assert len(pills) == 3
    # heatmaps are named by rank (and the id, sanitised); index.csv says whose each one is
    expected = [f"{rank:04d}-{pid}.png" for rank, pid in enumerate(riskiest, start=1)]
    heatmaps = sorted(p.name for p in (root / "heat").iterdir())
    assert heatmaps == sorted([*expected, "index.csv"])
    index = pd.read_csv(root / "heat" / "index.csv", dtype=str)
    assert index.values.tolist() == [[f, p] for f, p in zip(expected, riskiest, strict=True)]
    assert (root / "heat" / expected[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_explain_split_explains_only_that_part(pipeline, tmp_path):
    from ehrlens.app.workflow import select_split

    model, card = load_model_dir(pipeline["model"])
    samples = read_jsonl(pipeline["data"] / "samples.jsonl")
    result = invoke(
        "explain", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "random", "--split", "test", "--out", tmp_path / "a", "-q",
    )  # fmt: skip
    dataset = create_sample_dataset(samples, schema=model.schema)
    test_ids = select_split(dataset, "test", card["data"]["split"]["seed"]).patient_ids
    assert len(test_ids) == card["data"]["n_test"]
    frame = read_shards(tmp_path / "a")
    assert list(dict.fromkeys(frame["patient_id"])) == test_ids
    assert result.stdout.startswith(f"{len(test_ids)} patients x 1 method(s): {len(frame)} rows")


@pytest.mark.slow
def test_report_counts_must_not_be_negative(pipeline, tmp_path):
    """--max-patients -1 would report all patients but one, --top-k 0 no code at all: bad
    usage (exit 2), not a silently cut report."""
    base = [
        "report", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "--attributions", pipeline["attr"], "--out", tmp_path / "r.html",
    ]  # fmt: skip
    for option, value in (("--max-patients", -1), ("--top-k", 0), ("--top-k", -3)):
        result = invoke(*base, option, value, expect=2)
        assert f"Invalid value for '{option}'" in result.stderr, (option, value)
        assert not (tmp_path / "r.html").exists()


# ----------------------------------------------------------------------------- event tables
@pytest.mark.slow
def test_explain_and_report_read_event_tables(pipeline, tmp_path):
    data, model = pipeline["data"], pipeline["model"]
    invoke(
        "explain", "--model", model, "--data", data / "events.parquet",
        "--labels", data / "labels.csv", "-m", "rollout", "--out", tmp_path / "from_events", "-q",
    )  # fmt: skip
    invoke(
        "explain", "--model", model, "--data", data / "samples.jsonl",
        "-m", "rollout", "--out", tmp_path / "from_jsonl", "-q",
    )  # fmt: skip
    events = read_shards(tmp_path / "from_events")
    jsonl = read_shards(tmp_path / "from_jsonl")
    # the same rows; those of the event table also name each unit's visit_id and time
    assert_same_rows(events[list(jsonl.columns)], jsonl)
    assert list(events.columns) == [*jsonl.columns, "visit_id", "event_time"]
    visits = events[events["visit"].notna()]
    assert (visits["visit_id"] == visits["patient_id"] + "-" + visits["visit"].astype(str)).all()
    # without labels the report says so instead of failing
    result = invoke(
        "report", "--model", model, "--data", data / "events.parquet",
        "--attributions", tmp_path / "from_events", "--out", tmp_path / "r.html",
        "--max-patients", 0,
    )  # fmt: skip
    assert f"({N_PATIENTS} of {N_PATIENTS} patients)" in result.stdout
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert text.count("<span class='pill' data-pill='label'>label unknown</span>") == N_PATIENTS


@pytest.mark.slow
def test_numeric_event_features_keep_the_training_column_order(tmp_path):
    """The schema file's ``columns`` order measurements at training; explaining the same event
    table must use the same order, or every lab value lands in another lab's column."""
    cohort = generate_cohort(60, layout="nested", seed=3, include_labs=True)
    names = ["sodium", "glucose", "creatinine"]  # not sorted: the order is the schema's
    table = to_events(cohort.samples, cohort.input_schema, columns={"labs": names})
    table["label"] = table["patient_id"].map({s["patient_id"]: s["label"] for s in cohort.samples})
    table.to_parquet(tmp_path / "events.parquet", index=False)
    write_jsonl(cohort.samples, tmp_path / "samples.jsonl")
    schema = {**{"input_schema": cohort.input_schema}, "output_schema": {"label": "binary"}}
    (tmp_path / "schema.json").write_text(json.dumps({**schema, "columns": {"labs": names}}))
    invoke(
        "train", "--data", tmp_path / "events.parquet", "--schema", tmp_path / "schema.json",
        "--out", tmp_path / "model", *TINY_TRAIN,
    )  # fmt: skip
    for source in ("events.parquet", "samples.jsonl"):
        invoke(
            "explain", "--model", tmp_path / "model", "--data", tmp_path / source,
            "--out", tmp_path / f"attr-{source}", "-q",
        )  # fmt: skip
    from_events = read_shards(tmp_path / "attr-events.parquet")
    from_samples = read_shards(tmp_path / "attr-samples.jsonl")
    assert_same_rows(from_events[list(from_samples.columns)], from_samples)


# ----------------------------------------------------------------------------- help, usage
def test_help_names_every_command_and_the_exit_codes():
    result = invoke("--help")
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), command
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 success; 1 bad input" in text
    assert "2 bad command-line usage; 3 the output already holds something" in text
    options = {
        "synthetic": ["--patients", "--layout", "--seed"],
        "train": ["--data", "--schema", "--labels", "--out", "--epochs", "--seed", "--overwrite"],
        "explain": ["--model", "--method", "--out", "--shard-size", "--split", "--seed"],
        "evaluate": ["--method", "--bootstrap", "--ablation", "--out", "--plot", "--seed"],
        "report": ["--attributions", "--codes", "--top-k", "--max-patients", "--heatmaps"],
        "demo": ["--full", "--patients", "--epochs", "--seed", "--out"],
    }
    for command, names in options.items():
        sub = invoke(command, "-h").stdout
        for name in names:
            assert name in sub, (command, name)
    assert invoke("--version").stdout.strip().endswith("0.1.0")


def test_usage_errors_exit_2(tmp_path):
    missing = invoke(
        "train", "--data", tmp_path / "nope.jsonl", "--schema", tmp_path / "s.json",
        "--out", tmp_path / "m", expect=2,
    )  # fmt: skip
    assert "Invalid value for '--data'" in missing.stderr and "does not exist" in missing.stderr
    assert "Missing option '--data'" in invoke("explain", "--model", tmp_path, expect=2).stderr
    bad_choice = invoke("synthetic", tmp_path / "d", "--layout", "tree", expect=2)
    assert "'tree' is not one of 'sequence', 'nested', 'stagenet'" in bad_choice.stderr
    assert "No such command 'explian'" in invoke("explian", expect=2).stderr


@pytest.mark.slow
def test_unknown_method_exits_2_and_lists_the_choices(pipeline, tmp_path):
    result = invoke(
        "explain", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "rollout,lime", "--out", tmp_path / "a", expect=2,
    )  # fmt: skip
    assert "unknown method 'lime'; choose from rollout, flow, chefer" in result.stderr
    assert not (tmp_path / "a").exists()
    result = invoke(
        "evaluate", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "shap", expect=2,
    )  # fmt: skip
    assert "unknown method 'shap'" in result.stderr


# ----------------------------------------------------------------------------- bad input: 1
def test_bad_schema_file_exits_1_naming_it(tmp_path):
    data = tmp_path / "samples.jsonl"
    write_jsonl(generate_cohort(12, seed=0).samples, data)
    schema = tmp_path / "schema.json"
    schema.write_text('{"input_schema": {"diagnoses": "sequence"}')
    result = invoke(
        "train", "--data", data, "--schema", schema, "--out", tmp_path / "m", *TINY_TRAIN, expect=1
    )
    assert result.stderr.startswith(f"error: {schema}: not valid JSON")
    schema.write_text('{"input_schema": {"diagnoses": "sequence"}, "output_schema": ["label"]}')
    result = invoke(
        "train", "--data", data, "--schema", schema, "--out", tmp_path / "m", *TINY_TRAIN, expect=1
    )
    assert result.stderr.strip() == (
        f"error: {schema}: expected 'output_schema' as an object of schema strings"
    )
    assert not (tmp_path / "m").exists()


def test_bad_data_exits_1_naming_file_and_line_or_rows(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps({"input_schema": {"dx": "sequence"}, "output_schema": {"label": "binary"}})
    )
    data = tmp_path / "samples.jsonl"
    data.write_text('{"patient_id": "a", "dx": ["x"], "label": 1}\n\n{"patient_id": NaN}\n')
    result = invoke("train", "--data", data, "--schema", schema, "--out", tmp_path / "m", expect=1)
    assert result.stderr.strip() == f"error: {data}:3: NaN is not allowed in samples"
    events = tmp_path / "events.csv"
    events.write_text("patient_id,time,feature,code,label\na,1,dx,x,1\n,2,dx,y,1\nb,soon,dx,z,0\n")
    result = invoke(
        "train", "--data", events, "--schema", schema, "--out", tmp_path / "m", expect=1
    )
    assert "error: event table: 2 bad row(s) of 3 — no patient_id: 1 (rows 2)" in result.stderr
    assert "unparsable or missing time: 1 (rows 3)" in result.stderr
    result = invoke(
        "train", "--data", data, "--schema", schema, "--labels", events,
        "--out", tmp_path / "m", expect=1,
    )  # fmt: skip
    assert "JSON Lines samples carry their labels; drop --labels" in result.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_not_a_model_directory_and_foreign_attributions_exit_1(pipeline, tmp_path):
    samples = pipeline["data"] / "samples.jsonl"
    result = invoke(
        "explain", "--model", tmp_path, "--data", samples, "--out", tmp_path / "a", expect=1
    )
    assert result.stderr.strip() == f"error: {tmp_path}: not a model directory (no model.pt)"
    (tmp_path / "empty").mkdir()
    result = invoke(
        "report", "--model", pipeline["model"], "--data", samples,
        "--attributions", tmp_path / "empty", "--out", tmp_path / "r.html", expect=1,
    )  # fmt: skip
    assert "no _ehrlens_run.json; is it a folder written by `explain`?" in result.stderr
    # an unfinished run is refused until `explain` has completed it
    unfinished = tmp_path / "unfinished"
    shutil.copytree(pipeline["attr"], unfinished)
    manifest = unfinished / "_ehrlens_run.json"
    record = json.loads(manifest.read_text())
    record["complete"] = False  # as an interrupted run leaves it (sealed by ehrlens)
    record["digest"] = manifest_digest(record)
    manifest.write_text(json.dumps(record))
    result = invoke(
        "report", "--model", pipeline["model"], "--data", samples,
        "--attributions", unfinished, "--out", tmp_path / "r.html", expect=1,
    )  # fmt: skip
    assert "the explain run is unfinished" in result.stderr
    # shards edited after the run (here: rewritten with another model id) do not verify
    edited = tmp_path / "edited"
    shutil.copytree(pipeline["attr"], edited)
    for path in edited.glob("part-*.parquet"):
        table = pq.read_table(path)
        frame = table.to_pandas().assign(model_id="0123456789ab")
        frame.to_parquet(path, index=False)
    result = invoke(
        "report", "--model", pipeline["model"], "--data", samples,
        "--attributions", edited, "--out", tmp_path / "r.html", expect=1,
    )  # fmt: skip
    assert f"error: {edited / 'part-00000.parquet'}: does not verify" in result.stderr
    # attributions of another model are not reported against this one
    model, _ = load_model_dir(pipeline["model"])
    dataset = create_sample_dataset(read_jsonl(samples), schema=model.schema)
    other = tmp_path / "other"
    explain_cohort(model, dataset, ["random"], out_dir=other, model_id="0123456789ab")
    result = invoke(
        "report", "--model", pipeline["model"], "--data", samples,
        "--attributions", other, "--out", tmp_path / "r.html", expect=1,
    )  # fmt: skip
    assert "holds attributions of model(s) ['0123456789ab'], not only of" in result.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_bad_code_descriptions_exit_1_naming_the_file(pipeline, tmp_path):
    codes = tmp_path / "codes.csv"
    codes.write_text("icd,text\nI10,hypertension\n")
    result = invoke(
        "report", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "--attributions", pipeline["attr"], "--out", tmp_path / "r.html", "--codes", codes,
        expect=1,
    )  # fmt: skip
    assert result.stderr.strip() == (
        f"error: {codes}: expected a CSV header 'code,description', got ['icd', 'text']"
    )
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_interrupted_explain_exits_130_and_says_how_to_resume(pipeline, tmp_path, monkeypatch):
    import ehrlens.explain

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ehrlens.explain.LocalExecutor, "run", interrupted)
    result = invoke(
        "explain", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "--out", tmp_path / "a", "-q", expect=130,
    )  # fmt: skip
    assert result.stderr.strip() == "error: interrupted; run the same command again to resume"


# ----------------------------------------------------------------------------- conflicts: 3
@pytest.mark.slow
def test_explain_into_another_runs_folder_exits_3_and_changes_nothing(pipeline, tmp_path):
    folder = tmp_path / "attr"
    shutil.copytree(pipeline["attr"], folder)
    (folder / ".part-00003.parquet.abc.tmp").write_bytes(b"left by someone")
    before = snapshot(folder)
    result = invoke(
        "explain", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "rollout", "--out", folder, "--shard-size", 25, "--batch-size", 16, "-q", expect=3,
    )  # fmt: skip
    assert result.stderr.startswith(f"error: {folder} holds attributions of a different run")
    # only what differs is named: the methods this run leaves out
    assert 'methods.chefer: ["CheferRelevance"' in result.stderr
    assert 'methods.random: ["RandomBaseline"' in result.stderr
    assert "methods.rollout" not in result.stderr and "model_id" not in result.stderr
    assert "nothing was changed" in result.stderr
    assert snapshot(folder) == before
    # the same arguments are not a conflict: everything is reused
    result = invoke(
        "explain", "--model", pipeline["model"], "--data", pipeline["data"] / "samples.jsonl",
        "-m", "rollout,chefer", "-m", "random", "--out", folder, "--shard-size", 25,
        "--batch-size", 16, "-q",
    )  # fmt: skip
    assert result.stdout.strip().endswith("(0 computed, 5 already complete)")
    assert not (folder / ".part-00003.parquet.abc.tmp").exists()
    pd.testing.assert_frame_equal(read_shards(folder), read_shards(pipeline["attr"]))


@pytest.mark.slow
def test_train_and_report_refuse_to_overwrite_without_the_flag(pipeline, tmp_path):
    data = pipeline["data"]
    model = tmp_path / "model"
    shutil.copytree(pipeline["model"], model)
    before = snapshot(model)
    args = ["train", "--data", data / "samples.jsonl", "--schema", data / "schema.json"]
    result = invoke(*args, "--out", model, *TINY_TRAIN, expect=3)
    assert result.stderr.strip() == (
        f"error: {model} already holds a model; pass --overwrite to replace it, or choose a "
        "new --out"
    )
    assert snapshot(model) == before
    invoke(*args, "--out", model, "--seed", 0, "--overwrite", *TINY_TRAIN)
    # same data, same seed: the same model (the card's created time may differ)
    assert load_model_dir(model)[1]["model_id"] == load_model_dir(pipeline["model"])[1]["model_id"]
    invoke(*args, "--out", tmp_path / "seed1", "--seed", 1, *TINY_TRAIN)
    assert (
        load_model_dir(tmp_path / "seed1")[1]["model_id"] != (load_model_dir(model)[1]["model_id"])
    )

    page = tmp_path / "r.html"
    page.write_text("keep me")
    report = [
        "report", "--model", pipeline["model"], "--data", data / "samples.jsonl",
        "--attributions", pipeline["attr"], "--out", page, "--max-patients", 2,
    ]  # fmt: skip
    result = invoke(*report, expect=3)
    assert f"error: {page} exists; pass --overwrite to replace it" in result.stderr
    assert page.read_text() == "keep me"
    invoke(*report, "--overwrite")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# ----------------------------------------------------------------------------- progress, seed
@pytest.mark.slow
def test_progress_bars_unless_quiet(pipeline, tmp_path):
    samples = pipeline["data"] / "samples.jsonl"
    args = ["explain", "--model", pipeline["model"], "--data", samples, "--batch-size", 40]
    loud = invoke(*args, "--out", tmp_path / "a")
    assert "explain:" in loud.stderr and "batch/s" in loud.stderr
    quiet = invoke(*args, "--out", tmp_path / "b", "-q")
    assert quiet.stderr == ""


def test_synthetic_seed(tmp_path):
    invoke("synthetic", tmp_path / "a", "--patients", 20, "--seed", 1, "--layout", "sequence")
    invoke("synthetic", tmp_path / "b", "--patients", 20, "--seed", 1, "--layout", "sequence")
    invoke("synthetic", tmp_path / "c", "--patients", 20, "--seed", 2, "--layout", "sequence")
    a, b, c = (tmp_path / x / "samples.jsonl" for x in "abc")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert json.loads((tmp_path / "a" / "schema.json").read_text())["input_schema"] == {
        "diagnoses": "sequence",
        "procedures": "sequence",
        "drugs": "sequence",
    }


@pytest.mark.slow
def test_demo_command(tmp_path):
    out = tmp_path / "demo"
    result = invoke(
        "demo", "--patients", 60, "--epochs", 1, "--explain", 2, "--seed", 0, "--out", out, "-q"
    )
    assert "synthetic cohort of 60 patients, seed 0" in result.stdout
    assert "Transformer: generate the cohort and train 1 epoch(s)" in result.stdout
    assert "test AUROC" in result.stdout
    for method in ("rollout", "flow", "chefer"):
        assert result.stdout.count(f"{method:8s} top 5:") == 2, method
    assert result.stdout.splitlines()[-1] == f"report: {(out / 'report.html').resolve()}"
    assert "--full" in invoke("demo", "--help").stdout


# ----------------------------------------------------------------------------- kill and resume
def _explain_command(pipeline, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "ehrlens", "explain",
        "--model", str(pipeline["model"]), "--data", str(pipeline["data"] / "samples.jsonl"),
        "-m", "flow,integrated_gradients", "--out", str(out),
        "--shard-size", "3", "--batch-size", "3", "-q",
    ]  # fmt: skip


@pytest.mark.slow
def test_killed_explain_process_resumes_to_the_uninterrupted_output(pipeline, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    n_shards = math.ceil(N_PATIENTS / 3)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _explain_command(pipeline, killed),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(killed.glob("part-*.parquet")):
            assert process.poll() is None, (
                "explain ended before writing a shard: " + process.stderr.read().decode()
            )
            assert time.monotonic() < deadline, "no shard after 120 s"
            time.sleep(0.005)
        assert process.poll() is None  # still running when killed
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    complete = snapshot(killed)
    shards = sorted(k for k in complete if k.startswith("part-"))
    assert 1 <= len(shards) < n_shards, len(shards)
    manifest = json.loads((killed / "_ehrlens_run.json").read_text())
    assert manifest["complete"] is False

    resumed = subprocess.run(
        _explain_command(pipeline, killed), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().endswith(
        f"({n_shards - len(shards)} computed, {len(shards)} already complete)"
    )
    after = snapshot(killed)
    assert all(after[name] == complete[name] for name in shards)  # reused, not rewritten
    assert sorted(after) == ["_ehrlens_run.json"] + [
        f"part-{i:05d}.parquet" for i in range(n_shards)
    ]  # no stale temporary files

    fresh = tmp_path / "fresh"
    uninterrupted = subprocess.run(
        _explain_command(pipeline, fresh), env=env, capture_output=True, text=True, timeout=300
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert uninterrupted.stdout.strip().endswith(f"({n_shards} computed, 0 already complete)")
    frame = read_shards(killed)
    # the same command in the same environment: the same computation, exact
    pd.testing.assert_frame_equal(frame, read_shards(fresh), check_exact=True)
    samples = read_jsonl(pipeline["data"] / "samples.jsonl")
    schema = json.loads((pipeline["data"] / "schema.json").read_text())["input_schema"]
    assert len(frame) == 2 * sum(count_units(s, schema) for s in samples)
    keys = ["patient_id", "feature", "visit", "position", "method"]
    assert not frame.duplicated(subset=keys).any()
