"""Names from data are data, never paths; no command replaces a file it did not make.

Issue "Hostile input, concurrent runs and wrong files", items 1 and 2.
"""

from __future__ import annotations

import csv
import re
import shutil

import pytest
from _cli_kit import invoke, tree

from ehrlens.core.jsonl import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def _hostile_ids(tmp_path) -> list[str]:
    """Ids that would be paths: up and out, absolute (inside the test's folder, so that a
    regression writes there and not at the root), folders, dot names, separators."""
    return [
        "../../escaped",
        str(tmp_path / "abs" / "victim"),
        "sub/dir/id",
        "..",
        ".hidden",
        "back\\slash",
        "nul\x00byte",
        "P000007",
    ]


def test_item_1_patient_ids_never_become_paths(cli_cohort, tmp_path):
    """Item 1: ids like ``../../escaped`` or an absolute path wrote PNGs outside the heatmap
    folder and ids with ``/`` created folders. Now every heatmap is a plain file directly in
    the folder, named by rank, and index.csv gives each file's patient id verbatim."""
    hostile = _hostile_ids(tmp_path)
    samples = read_jsonl(cli_cohort / "data" / "samples.jsonl")[:12]
    for sample, pid in zip(samples, hostile, strict=False):
        sample["patient_id"] = pid
    work = tmp_path / "deep" / "er" / "work"  # so that ../../ from work/heat stays in tmp_path
    data = write_jsonl(samples, work / "hostile.jsonl")
    model = cli_cohort / "model"
    invoke(
        "explain", "--model", model, "--data", data, "-m", "rollout", "--out", work / "attr", "-q"
    )
    before = tree(tmp_path)
    heat = work / "heat"
    report = [
        "report", "--model", model, "--data", data, "--attributions", work / "attr",
        "--out", work / "report.html", "--max-patients", 0, "--heatmaps", heat,
    ]  # fmt: skip
    invoke(*report)
    after = tree(tmp_path)
    written = sorted(set(after) - set(before))
    prefix = "deep/er/work/"
    assert all(name.startswith(prefix) for name in written), written  # nothing outside work/
    inside = [name[len(prefix) :] for name in written]
    assert "report.html" in inside
    pictures = [n for n in inside if n != "report.html"]
    assert pictures[0] == "heat" and after[f"{prefix}heat"] is None  # the folder itself
    files = [n[len("heat/") :] for n in pictures[1:]]
    assert all("/" not in f for f in files)  # no sub-folder was created
    assert all(after[f"{prefix}heat/{f}"] is not None for f in files)
    assert not (tmp_path / "abs").exists() and not (tmp_path / "deep" / "escaped.png").exists()
    for f in files:
        assert f == "index.csv" or re.fullmatch(r"\d{4}(-[A-Za-z0-9_-]+)?\.png", f), f
    with (heat / "index.csv").open(newline="", encoding="utf-8") as f:
        index = list(csv.reader(f))
    assert index[0] == ["file", "patient_id"]
    assert sorted(row[0] for row in index[1:]) == sorted(f for f in files if f != "index.csv")
    assert sorted(row[1] for row in index[1:]) == sorted(s["patient_id"] for s in samples)

    # item 1, second half: files already in the heatmap folder are not replaced unasked
    (work / "report.html").rename(work / "first.html")
    snapshot = tree(work)
    result = invoke(*report, expect=3)
    assert f"{heat / 'index.csv'}, {heat / '0001-'}" in result.stderr
    assert "pass --overwrite to replace them; nothing was changed" in result.stderr
    assert tree(work) == snapshot  # not even report.html was written
    invoke(*report, "--overwrite")


def test_item_1_a_user_file_named_like_a_heatmap_is_kept(cli_cohort, tmp_path):
    data = cli_cohort / "data" / "samples.jsonl"
    model = cli_cohort / "model"
    invoke(
        "explain", "--model", model, "--data", data, "-m", "random", "--out", tmp_path / "a", "-q"
    )
    heat = tmp_path / "heat"
    heat.mkdir()
    (heat / "index.csv").write_text("my own index\n")
    args = [
        "report", "--model", model, "--data", data, "--attributions", tmp_path / "a",
        "--out", tmp_path / "r.html", "--max-patients", 2, "--heatmaps", heat,
    ]  # fmt: skip
    result = invoke(*args, expect=3)
    assert result.stderr.strip() == (
        f"error: {heat / 'index.csv'} exists; pass --overwrite to replace it; nothing was changed"
    )
    assert (heat / "index.csv").read_text() == "my own index\n"
    assert not (tmp_path / "r.html").exists()
    assert sorted(p.name for p in heat.iterdir()) == ["index.csv"]


def test_item_2_synthetic_keeps_the_users_files(tmp_path):
    """Item 2: ``ehrlens synthetic DIR`` replaced an existing labels.csv / schema.json."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "labels.csv").write_text("patient_id,label\nmine,1\n")
    (folder / "schema.json").write_text('{"mine": true}')
    before = tree(folder)
    result = invoke("synthetic", folder, "--patients", 20, expect=3)
    assert result.stderr.strip() == (
        f"error: {folder / 'labels.csv'}, {folder / 'schema.json'} exist; pass --overwrite to "
        "replace them; nothing was changed"
    )
    assert tree(folder) == before  # and none of the other four files was written
    invoke("synthetic", folder, "--patients", 20, "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["samples.jsonl", "events.parquet", "labels.csv", "schema.json", "codes.csv",
         "ground_truth.json", "risk.csv"]
    )  # fmt: skip
    assert (folder / "labels.csv").read_text().startswith("patient_id,label\nP000000,")


def test_item_2_evaluate_keeps_the_users_files(cli_cohort, tmp_path):
    """Item 2: ``evaluate --out results.json --plot curves.png`` replaced existing files."""
    args = [
        "evaluate", "--model", cli_cohort / "model", "--data",
        cli_cohort / "data" / "samples.jsonl", "-m", "random", "--bootstrap", 5, "-q",
        "--out", tmp_path / "results.json", "--plot", tmp_path / "curves.png",
    ]  # fmt: skip
    (tmp_path / "results.json").write_text("my results")
    result = invoke(*args, expect=3)
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'results.json'} exists; pass --overwrite to replace it; nothing "
        "was changed"
    )
    assert (tmp_path / "results.json").read_text() == "my results"
    assert not (tmp_path / "curves.png").exists()
    shutil.move(tmp_path / "results.json", tmp_path / "kept.json")
    (tmp_path / "curves.png").write_bytes(b"my picture")
    result = invoke(*args, expect=3)
    assert f"error: {tmp_path / 'curves.png'} exists" in result.stderr
    assert (tmp_path / "curves.png").read_bytes() == b"my picture"
    assert not (tmp_path / "results.json").exists()
    invoke(*args, "--overwrite")
    assert (tmp_path / "results.json").read_text().startswith('{\n  "results"')
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_item_2_train_keeps_a_card_json_it_did_not_write(cli_cohort, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "card.json").write_text('{"my": "notes"}')
    result = invoke(
        "train", "--data", cli_cohort / "data" / "samples.jsonl", "--schema",
        cli_cohort / "data" / "schema.json", "--out", folder, "--epochs", 1, "-q", expect=3,
    )  # fmt: skip
    assert result.stderr.strip() == (
        f"error: {folder / 'card.json'} exists; pass --overwrite to replace it; nothing was changed"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["card.json"]
    assert (folder / "card.json").read_text() == '{"my": "notes"}'
