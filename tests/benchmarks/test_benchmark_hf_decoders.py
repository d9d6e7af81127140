"""benchmarks/hf_decoder_cost.py and hf_planted_code.py --quick run and write the expected
JSON (no timing asserts; the planted-code numbers of a one-epoch model are not checked)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"ehrlens_benchmark_{name}", BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_decoder_cost_quick_run_writes_every_run_and_ratio(tmp_path):
    out = tmp_path / "cost.json"
    assert load("hf_decoder_cost.py").main(["--quick", "--repeats", "1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokens"] == 256
    assert set(result["seconds"]) == {
        "sdpa_inference",
        "eager_inference",
        "rollout",
        "sdpa_forward_backward",
        "chefer",
        "attnlrp",
    }
    assert set(result["ratios"]) == {"eager_inference", "rollout", "chefer", "attnlrp"}
    assert all(value > 0 for value in result["seconds"].values())


@pytest.mark.slow
def test_planted_code_quick_run_writes_every_method_and_check(tmp_path):
    module = load("hf_planted_code.py")
    out = tmp_path / "planted.json"
    assert module.main(["--quick", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["method"] for row in result["recovery"]] == list(module.METHODS)
    for row in result["recovery"]:
        assert 0.0 <= row["low"] <= row["auroc"] <= row["high"] <= 1.0
    steps = {(row["method"], row["step"]) for row in result["sanity"]}
    assert len(steps) == len(module.SANITY_METHODS) * 5


def test_streams_plant_the_code_where_they_say():
    module = load("hf_planted_code.py")
    data = module.streams(50, seed=3, planted_share=0.5)
    for row in range(50):
        where = int(data["planted_at"][row])
        planted = (data["input_ids"][row] == module.PLANTED).nonzero().flatten().tolist()
        assert planted == ([where] if where >= 0 else [])
        assert int(data["input_ids"][row, 0]) == module.BOS
        special = data["special_tokens_mask"][row]
        assert bool(special[0]) and int(special.sum()) == 1  # [BOS] only
