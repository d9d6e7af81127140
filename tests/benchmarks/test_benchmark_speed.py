"""The speed/memory benchmark runs end to end in --quick mode and writes every expected row.

No timing or memory assertions: only the structure of the JSON it writes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
METHODS = {
    "inference",
    "rollout",
    "rollout_low_memory",
    "rollout_old_way",
    "forward_backward",
    "chefer",
    "flow",
    "integrated_gradients",
}
FLOORS = {
    "inference": "inference",
    "rollout": "inference",
    "rollout_low_memory": "inference",
    "rollout_old_way": "inference",
    "forward_backward": "forward_backward",
    "chefer": "forward_backward",
    "flow": "inference",
    "integrated_gradients": "forward_backward",
}


def _load_script():
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_run_writes_every_expected_row(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert _load_script().main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| layers | seq | batch | method | median s |" in printed
    assert "| layers | seq | batch | method | peak MiB |" in printed

    result = json.loads(out.read_text())
    assert set(result) >= {"meta", "time", "memory", "dataloader", "large"}
    meta = result["meta"]
    for key in ("torch", "threads", "device", "platform", "total_runtime_s"):
        assert key in meta, key
    assert meta["device"] == "cpu"
    assert meta["quick"] is True

    # Time: layers 2, seq 16 and 32, batch 1 and 4, every method (flow included).
    expected = {(2, s, b, m) for s in (16, 32) for b in (1, 4) for m in METHODS}
    time_rows = {(r["layers"], r["seq"], r["batch"], r["method"]): r for r in result["time"]}
    assert set(time_rows) == expected
    assert len(result["time"]) == len(expected)
    for key, row in time_rows.items():
        assert row["skipped"] is None, key
        assert row["floor"] == FLOORS[key[3]]
        assert _positive(row["median_s"]), key
        assert _positive(row["ratio_to_floor"]), key
        assert row["repeats"] == 2
        assert len(row["samples_s"]) == 2
        if key[3] == row["floor"]:
            assert row["ratio_to_floor"] == pytest.approx(1.0)
        if key[3] == "rollout_old_way":
            # The baseline computes the same rollout as ehrlens, the long way round.
            assert row["same_scores_as_ehrlens_rollout"] is True, key

    # Memory: one small config, one fresh subprocess per method.
    memory_rows = {(r["layers"], r["seq"], r["batch"], r["method"]): r for r in result["memory"]}
    assert set(memory_rows) == {(2, 32, 4, m) for m in METHODS}
    for key, row in memory_rows.items():
        assert "error" not in row, row.get("error")
        assert row["skipped"] is None, key
        # Linux: the child's own RSS high-water mark (its ru_maxrss starts at the parent's).
        expected_metric = "VmHWM" if sys.platform.startswith("linux") else "ru_maxrss"
        assert row["metric"].startswith(expected_metric), row["metric"]
        assert _positive(row["peak_mib"]), key
        assert row["extra_mib"] >= 0, key
        assert row["peak_mib"] >= row["baseline_mib"], key
        assert "extra_ratio_to_inference" in row

    # Dataloader throughput: inference and rollout over the whole loader.
    loader = result["dataloader"]
    assert loader["n_patients"] > 0 and loader["batches"] > 0
    assert {r["method"] for r in loader["rows"]} == {"inference", "rollout"}
    for row in loader["rows"]:
        assert _positive(row["patients_per_s"])
        assert _positive(row["median_s"])

    # The batch-256 memory case is left out of --quick.
    assert result["large"] is None
