"""How methods travel to the Ray workers: as their class path and constructor options, checked
on the driver (no Ray runtime is started here)."""

from __future__ import annotations

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.data.sources import SizeLimits
from ehrlens.explain.job import ShardJob
from ehrlens.explain.ray_engine import ShardWorker, explain_cohort_ray
from ehrlens.explain.run import method_recipes, rebuild_methods
from ehrlens.interpret import AttentionFlow, AttentionRollout, BaseInterpreter, RandomBaseline
from ehrlens.models import Transformer
from ehrlens.models.directory import save_model_dir

ROLLOUT = "ehrlens.interpret.methods.rollout:AttentionRollout"
FLOW = "ehrlens.interpret.methods.flow:AttentionFlow"
RANDOM = "ehrlens.interpret.methods.baselines:RandomBaseline"


@pytest.fixture(scope="module")
def dataset():
    cohort = generate_cohort(n_patients=12, layout="nested", seed=6)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    return Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()


def test_recipes_of_names_options_and_instances(model):
    names = ["rollout", "random"]
    assert method_recipes(names) == {
        "rollout": (ROLLOUT, {}),
        "random": (RANDOM, {}),
    }
    mixed = {
        "rollout": {"head_fusion": "min"},
        "f": AttentionFlow(model, normalize=False, max_seq_len=32),
        "noise": RandomBaseline(model, seed=3),
    }
    assert method_recipes(mixed) == {
        "rollout": (ROLLOUT, {"head_fusion": "min"}),
        "f": (
            FLOW,
            {"head_fusion": "mean", "normalize": "none", "max_seq_len": 32, "n_jobs": 1},
        ),
        "noise": (RANDOM, {"seed": 3}),
    }


def test_rebuilt_methods_score_like_the_originals(model, dataset):
    batch = next(iter(get_dataloader(dataset, batch_size=6)))
    originals = {"r": AttentionRollout(model, "max", 0.2), "noise": RandomBaseline(model, 5)}
    rebuilt = rebuild_methods(model, method_recipes(originals))
    assert {k: type(v) for k, v in rebuilt.items()} == {k: type(v) for k, v in originals.items()}
    for name, original in originals.items():
        assert rebuilt[name].get_params() == original.get_params()
        expected, got = original.attribute(**batch), rebuilt[name].attribute(**batch)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)


def test_a_worker_that_cannot_import_the_class_says_so(model):
    with pytest.raises(ImportError, match=r"method 'toy': cannot import nowhere_x:Toy.*worker"):
        rebuild_methods(model, {"toy": ("nowhere_x:Toy", {})})


def test_a_class_defined_in_a_function_is_refused_before_any_work(model, tmp_path):
    class Local(BaseInterpreter):
        name, gradient_free, needs, summary = "local", True, (), "defined in a test"

        def attribute(self, target_class_idx=None, **batch):  # pragma: no cover
            return {}

    save_model_dir(model, tmp_path / "model")
    with pytest.raises(
        TypeError,
        match=r"method 'mine': another process rebuilds each method as "
        r"type\(i\)\(model, \*\*i.get_params\(\)\), so its class must be importable there: "
        r".*Local cannot be imported by name \(it is defined inside a function\)",
    ):
        explain_cohort_ray(tmp_path / "model", [], {"mine": Local(model)}, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_worker_builds_its_methods_from_recipes(model, tmp_path):
    save_model_dir(model, tmp_path / "model")
    job = ShardJob("f", "m", (), SizeLimits(), 4, None, False, str(tmp_path / "out"))
    worker = ShardWorker(
        str(tmp_path / "model"), {"r": (ROLLOUT, {"head_fusion": "max"})}, job, device="cpu"
    )
    assert type(worker.interpreters["r"]) is AttentionRollout
    assert worker.interpreters["r"].get_params()["head_fusion"] == "max"
    assert worker.interpreters["r"].model is worker.model  # the worker's own model
