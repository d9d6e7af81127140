"""benchmarks/shards.py --quick runs and writes every step (no timing asserts)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "shards.py"
STEPS = {
    "write, metadata only",
    "write, with digest",
    "verify, metadata only",
    "verify, content digest",
    "read, no verification",
    "read_attributions (verified)",
    "digest of in-memory tables",
}


@pytest.mark.slow
def test_quick_run_times_every_step(tmp_path):
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_shards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "shards.json"
    assert module.main(["--quick", "--shards", "3", "--patients", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["shards"] == 3 and report["patients_per_shard"] == 4
    assert report["rows"] % len(module.METHODS) == 0 and report["rows"] >= 3 * 4 * 3
    assert report["megabytes"] > 0
    for key in ("seconds", "cpu_seconds"):
        assert set(report[key]) == STEPS
        assert all(math.isfinite(v) and v >= 0 for v in report[key].values())
    assert report["meta"]["repeats"] == 2
