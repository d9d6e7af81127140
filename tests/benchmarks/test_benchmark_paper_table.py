"""The Abnar & Zuidema table benchmark runs in --quick mode and writes a complete report.

Structure only: 6 layers x 3 methods x 2 references, each a correlation in [-1, 1] or nan;
no assertion on which method correlates best.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_table.py"
METHODS = {"raw_attention", "rollout", "flow"}
REFERENCES = {"blank_out", "input_gradient"}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _correlation(value) -> bool:
    return isinstance(value, (int, float)) and (math.isnan(value) or -1 <= value <= 1)


def _check_table(correlations: dict, where: str) -> None:
    tables = {k: v for k, v in correlations.items() if k != "patients_used"}
    assert set(tables) == REFERENCES, where
    for reference, per_method in tables.items():
        assert set(per_method) == METHODS, (where, reference)
        for method, layers in per_method.items():
            assert [row["layer"] for row in layers] == [1, 2, 3, 4, 5, 6], (where, method)
            for row in layers:
                assert _correlation(row["mean"]), (where, reference, method, row)
                assert row["n"] + row["n_nan"] == row["n_patients"], (where, method, row)


@pytest.mark.slow
def test_paper_table_benchmark_quick(tmp_path, capsys):
    out = tmp_path / "paper.json"
    assert load_benchmark().main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is True
    assert report["meta"]["layers"] == 6
    assert report["meta"]["scope"] == "all"
    assert 0 < report["patients_used"]["all"] <= report["n_test_scored"]
    _check_table(report["correlations"], "all")
    assert set(report["per_feature"]) == {"diagnoses", "procedures", "drugs"}
    for key, correlations in report["per_feature"].items():
        _check_table(correlations, key)
    split = report["by_predicted_class"]
    assert set(split) == {"positive", "negative"}
    assert sum(split[c]["patients_used"] for c in split) == report["patients_used"]["all"]
    for label, correlations in split.items():
        _check_table(correlations, label)
    # The hand-written rollout and flow of the last layer match ehrlens's interpreters.
    for value in report["checks"].values():
        assert value < 1e-5
    printed = capsys.readouterr().out
    assert printed.count("| layer | raw attention | rollout | flow |") == 2
