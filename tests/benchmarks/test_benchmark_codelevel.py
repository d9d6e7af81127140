"""The code-level benchmark runs end to end in --quick mode and writes a complete report.

Structure, plus the one property that holds by construction: attention on the visit-level
model scores every code of a visit alike, so its signal AUROC within visits is exactly 0.5.
No assertion on which model or method wins, and none on times.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "codelevel.py"
VISIT, CODE = "Transformer (visit tokens)", "CodeTransformer (code tokens)"
COMMON = {"random", "rollout", "flow", "chefer", "integrated_gradients"}
SPLITS = {"visit_split(rollout)", "visit_split(chefer)"}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("ehrlens_benchmark_codelevel", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_codelevel_benchmark_quick(tmp_path, capsys):
    out = tmp_path / "c.json"
    load_benchmark().main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["command"].startswith("python benchmarks/codelevel.py --quick")
    assert set(report["models"]) == {VISIT, CODE}
    assert set(report["models"][VISIT]["methods"]) == COMMON | SPLITS
    assert set(report["models"][CODE]["methods"]) == COMMON
    for name, model in report["models"].items():
        auroc = model["test_roc_auc"]
        assert auroc["low"] <= auroc["mean"] <= auroc["high"], name
        for method, result in model["methods"].items():
            for metric in ("within_visit_signal_auroc", "comprehensiveness", "sufficiency"):
                s = result[metric]
                assert math.isfinite(s["mean"]) and s["n"] > 0, (name, method, metric)
                assert s["low"] <= s["mean"] <= s["high"], (name, method, metric)
    for method in ("rollout", "flow", "chefer"):  # the tie, by construction
        tie = report["models"][VISIT]["methods"][method]["within_visit_signal_auroc"]
        assert tie["mean"] == tie["low"] == tie["high"] == 0.5
    assert "| model | method | signal AUROC within visits ↑" in capsys.readouterr().out
