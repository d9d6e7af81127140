"""The MEDS benchmark runs in --quick mode, checks the Ray rows, and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "meds_ray.py"


@pytest.mark.slow
def test_quick_run_writes_table_and_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_meds_ray", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "meds_ray.json"
    assert module.main(["--quick", "--methods", "rollout", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["engine"], r["workers"]) for r in rows] == [
        ("single process", None),
        ("ray", 1),
        ("ray", 2),
    ]
    assert all(r["rows_equal_single_process"] for r in rows)
    assert all(r["subjects_per_s"] == pytest.approx(40 / r["seconds"]) for r in rows)
    assert rows[0]["vs_single_process"] == 1.0
    assert report["meta"]["data_shards"] == 2 and report["meta"]["samples"] > 40
    assert "| rollout | ray | 2 |" in capsys.readouterr().out
