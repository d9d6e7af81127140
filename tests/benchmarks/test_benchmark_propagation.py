"""benchmarks/propagation.py --quick runs and writes the expected JSON (no timing asserts)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "propagation.py"


@pytest.mark.slow
def test_quick_run_writes_every_method_with_matching_scores(tmp_path):
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_propagation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "propagation.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    methods = {row["method"] for row in rows}
    assert methods == {
        "inference",
        "rollout (row)",
        "rollout (full matrix)",
        "chefer (row)",
        "chefer (full matrix)",
    }
    for row in rows:
        assert row["median_s"] > 0
        if row["method"] != "inference":
            assert row["same_scores_as_full_matrix"] is True
