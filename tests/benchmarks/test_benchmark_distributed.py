"""The distributed benchmark runs in --quick mode, checks Ray's rows, and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed.py"


@pytest.mark.slow
def test_quick_run_writes_table_and_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_distributed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "distributed.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["method"], r["engine"], r["workers"]) for r in rows] == [
        ("rollout", "single process", None),
        ("rollout", "ray", 1),
        ("rollout", "ray", 2),
        ("flow", "single process", None),
        ("flow", "ray", 1),
        ("flow", "ray", 2),
    ]
    assert all(r["rows_equal_single_process"] for r in rows)
    assert all(r["patients_per_s"] == pytest.approx(40 / r["seconds"]) for r in rows)
    for r in rows:
        if r["engine"] == "single process":
            assert r["vs_single_process"] == 1.0
    printed = capsys.readouterr().out
    assert "| flow | ray | 2 |" in printed
