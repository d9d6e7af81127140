"""The bucketing benchmark runs in --quick mode, checks its rows, and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bucketing.py"


@pytest.mark.slow
def test_quick_run_writes_table_and_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_bucketing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bucketing.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["method"] for r in report["rows"]] == ["rollout", "chefer"]
    for row in report["rows"]:
        assert row["same_rows_in_order"] is True
        assert row["max_abs_score_difference"] < 1e-6
        assert row["speed_up"] == pytest.approx(row["seconds_unbucketed"] / row["seconds_bucketed"])
    meta = report["meta"]
    assert meta["patients"] == 40 and meta["long_patients"] == 4
    # 40 patients in 5 batches of 8; outliers (30 visits x 6 codes) are patients 5, 15, 25
    # and 35. Unbucketed, 4 batches hold one and are padded to 8 x 30 x 6 slots; bucketed,
    # the 4 outliers share the last batch, and the other 4 batches of short patients (at
    # most 6 visits of 4 codes) hold at most 8 x 6 x 4 slots each.
    outlier_batch = 8 * 30 * 6
    assert meta["padded_code_slots_unbucketed"] >= 4 * outlier_batch
    assert meta["padded_code_slots_bucketed"] <= outlier_batch + 4 * 8 * 6 * 4
    assert "| rollout |" in capsys.readouterr().out
