"""The attention-flow benchmark runs in --quick mode and writes a valid JSON report."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flow.py"

ROW_KEYS = {
    "seq",
    "layers",
    "batch",
    "ehrlens_s_per_sample",
    "ehrlens_n_jobs2_s_per_sample",
    "networkx_s_per_sample",
    "networkx_extrapolated",
    "networkx_tokens_timed",
    "networkx_tokens_total",
    "networkx_timing",
    "speedup",
    "rollout_s_per_sample",
    "max_rel_diff",
    "tokens_compared",
    "n_jobs2_identical",
}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_flow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flow_benchmark_quick(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "flow.json"
    assert load_benchmark().main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the benchmark restores the thread setting
    report = json.loads(out.read_text())
    assert {"meta", "rows"} <= set(report)
    assert report["meta"]["quick"] is True
    rows = report["rows"]
    assert [(r["seq"], r["layers"]) for r in rows] == [(8, 2), (16, 2)]
    for row in rows:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        for key in ROW_KEYS - {"networkx_timing", "networkx_extrapolated", "n_jobs2_identical"}:
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), key
        assert row["max_rel_diff"] < 1e-6
        assert row["tokens_compared"] >= 2
        assert row["n_jobs2_identical"] is True
    measured, extrapolated = rows
    assert not measured["networkx_extrapolated"]
    assert measured["networkx_tokens_timed"] == measured["networkx_tokens_total"] == 8
    assert extrapolated["networkx_extrapolated"]
    assert extrapolated["networkx_tokens_timed"] == 2
    assert extrapolated["networkx_tokens_total"] == 16
    assert extrapolated["networkx_timing"] == "extrapolated from 2 of 16 tokens"
    printed = capsys.readouterr().out
    assert "| seq | layers |" in printed
    assert "extrapolated from 2 of 16 tokens" in printed
