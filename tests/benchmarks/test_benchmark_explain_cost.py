"""benchmarks/explain_cost.py and hf_memory.py --quick run and write their JSON (no timing
asserts)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"ehrlens_benchmark_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_explain_cost_quick_run_agrees_with_the_defaults(tmp_path):
    out = tmp_path / "explain_cost.json"
    assert load("explain_cost").main(["--quick", "--no-memory", "--out", str(out)]) == 0
    rows = {row["method"]: row for row in json.loads(out.read_text())["time"]}
    assert set(rows) == {
        "inference", "inference_explicit", "inference_in_blocks", "rollout",
        "rollout_keep_maps", "rollout_low_memory", "forward_backward",
        "forward_backward_explicit", "chefer", "chefer_per_head", "attnlrp",
    }  # fmt: skip
    assert rows["inference_explicit"]["max_abs_diff_to_inference"] < 1e-5
    assert rows["forward_backward_explicit"]["max_abs_diff_to_forward_backward"] < 1e-5
    assert rows["inference_in_blocks"]["max_abs_diff_to_inference"] < 1e-5
    assert rows["chefer_per_head"]["max_abs_diff_to_chefer"] < 1e-6
    assert rows["rollout_low_memory"]["max_abs_diff_to_rollout"] < 1e-6
    assert all(row["median_s"] > 0 for row in rows.values())


@pytest.mark.slow
def test_hf_memory_quick_run_measures_every_method(tmp_path):
    out = tmp_path / "hf_memory.json"
    assert load("hf_memory").main(["--quick", "--no-ladder", "--out", str(out)]) == 0
    goal = json.loads(out.read_text())["goal"]
    assert [row["method"] for row in goal] == [
        "inference_sdpa", "inference", "rollout", "rollout_maps", "inference_eager",
        "rollout_eager", "rollout_output_attentions",
    ]  # fmt: skip
    assert all(row.get("peak_mib", 0) > 0 for row in goal), goal


def test_quadratic_limit_solves_the_fitted_curve():
    limit = load("hf_memory").quadratic_limit([(1, 3.0), (2, 6.0), (3, 11.0)], 27.0)
    assert limit == pytest.approx(5.0)  # y = x^2 + 2 reaches 27 at x = 5
