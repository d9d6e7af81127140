"""benchmarks/stored_predictions.py --quick runs and writes both timings (no timing asserts)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stored_predictions.py"


@pytest.mark.slow
def test_quick_run_times_both_settings(tmp_path):
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_stored_predictions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "p.json"
    assert module.main(["--quick", "--methods", "rollout", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["method"] == "rollout" and row["with_s"] > 0 and row["without_s"] > 0
