"""The local and Ray executors run the same ExplainRun into the same rows, for JSON Lines,
event tables and in-memory samples, with the run's limits, device and bucketing applied where
each unit is built (on the Ray workers, not only on the driver)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort, to_events
from ehrlens.data.sources import (
    EventTableSource,
    JsonlShard,
    JsonlSource,
    SamplesSource,
    SizeLimits,
)
from ehrlens.explain import ExplainRun, LocalExecutor, explain_cohort
from ehrlens.explain.ray_engine import RayExecutor, worker_device
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir

pytestmark = pytest.mark.slow
N = 24
BATCH = 4
KEYS = ["patient_id", "method", "feature", "visit", "position"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small nested cohort as JSON Lines and as an event table, and a model directory."""
    root = tmp_path_factory.mktemp("executors")
    cohort = generate_cohort(N, layout="nested", seed=5)
    write_jsonl(cohort.samples, root / "samples.jsonl")
    to_events(cohort.samples, cohort.input_schema).to_parquet(root / "events.parquet")
    labels = [{"patient_id": s["patient_id"], "label": s["label"]} for s in cohort.samples]
    import pandas as pd

    pd.DataFrame(labels).to_csv(root / "labels.csv", index=False)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()
    save_model_dir(model, root / "model")
    return root, cohort


def _same_rows(frame, expected):
    """Identical rows; scores equal within float rounding (batches may be cut differently)."""
    assert list(frame.columns) == list(expected.columns)
    exact = [c for c in frame.columns if c != "score"]
    assert frame[exact].equals(expected[exact])
    np.testing.assert_allclose(frame["score"], expected["score"], rtol=1e-6, atol=1e-9)


def _both(run):
    """The run by Ray and then by the local executor into a sibling folder."""
    by_ray = RayExecutor(num_workers=2).run(run)
    local_run = ExplainRun(**{**vars(run), "out_dir": f"{run.out_dir}-local"})
    local = LocalExecutor().run(local_run)
    return by_ray, local


def _sources(root, cohort):
    events = EventTableSource(
        root / "events.parquet", cohort.input_schema, labels=root / "labels.csv"
    )
    return {
        "jsonl": JsonlSource(root / "samples.jsonl"),
        "events": events,
        "samples": SamplesSource(cohort.samples),
    }


@pytest.mark.parametrize("kind", ["jsonl", "events", "samples"])
def test_ray_and_local_give_identical_rows_and_one_fingerprint(files, ray_runtime, kind):
    root, cohort = files
    run = ExplainRun(
        _sources(root, cohort)[kind], ["rollout", "chefer"], model_dir=root / "model",
        out_dir=root / f"out-{kind}", batch_size=BATCH, shard_size=10, bucket_by_length=True,
        device="cpu", limits=SizeLimits(max_steps=None, max_codes_per_step=None),
    )  # fmt: skip
    by_ray, local = _both(run)
    assert by_ray.fingerprint == local.fingerprint
    assert by_ray.computed == local.computed == [0, 1, 2]
    frame = by_ray.to_frame()
    _same_rows(frame, local.to_frame())
    assert frame["patient_id"].nunique() == N and not frame.duplicated(KEYS).any()
    if kind == "events":  # each step's identity travels with the unit to the worker
        assert frame["event_time"].notna().all()
    manifest = json.loads((root / f"out-{kind}" / "_ehrlens_run.json").read_text())
    assert manifest["settings"]["limits"] == {"max_codes_per_step": None, "max_steps": None}
    assert manifest["settings"]["bucket_by_length"] is True
    assert manifest["settings"]["device"] == "cpu"


def test_rows_equal_those_of_explain_cohort_on_the_processed_dataset(files, ray_runtime):
    root, cohort = files
    model, card = load_model_dir(root / "model")
    dataset = create_sample_dataset(cohort.samples, schema=model.schema)
    expected = explain_cohort(
        model, dataset, ["rollout"], batch_size=BATCH, model_id=card["model_id"]
    ).to_frame()
    run = ExplainRun(
        JsonlSource(root / "samples.jsonl"), ["rollout"], model_dir=root / "model",
        out_dir=root / "vs-dataset", batch_size=BATCH, shard_size=8,
    )  # fmt: skip
    assert RayExecutor(num_workers=2).run(run).to_frame().equals(expected)


def test_the_size_limits_reach_the_ray_workers(files, ray_runtime):
    """The driver only scans the JSON Lines for ids; a limit is applied where the unit's
    dataset is built, so a worker refuses the long patient, naming it and the limit."""
    root, cohort = files
    longest = max(cohort.samples, key=lambda s: len(s["diagnoses"]))
    limit = len(longest["diagnoses"]) - 1
    run = ExplainRun(
        JsonlSource(root / "samples.jsonl"), ["rollout"], model_dir=root / "model",
        out_dir=root / "limited", batch_size=BATCH, shard_size=10,
        limits=SizeLimits(max_steps=limit),
    )  # fmt: skip
    pattern = rf"feature 'diagnoses': \d+ steps, more than max_steps={limit}"
    with pytest.raises(ValueError, match=pattern):
        RayExecutor(num_workers=1).run(run)
    with pytest.raises(ValueError, match=pattern):
        LocalExecutor().run(ExplainRun(**{**vars(run), "out_dir": root / "limited-local"}))
    # the long patient's shard is not written, and the run is not marked complete (units
    # before it may be: a re-run with a larger limit resumes from them)
    shard = cohort.samples.index(longest) // 10
    assert not (root / "limited" / f"part-{shard:05d}.parquet").exists()
    manifest = root / "limited" / "_ehrlens_run.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["complete"] is False


def test_the_driver_does_not_build_units(files, ray_runtime, monkeypatch):
    """JSON Lines units are read by byte span on the workers, never on the driver."""
    root, _ = files

    def refuse(self):
        raise AssertionError("the driver read a unit's samples")

    monkeypatch.setattr(JsonlShard, "samples", refuse)
    run = ExplainRun(
        JsonlSource(root / "samples.jsonl"), ["rollout"], model_dir=root / "model",
        out_dir=root / "workers-only", batch_size=BATCH, shard_size=12,
    )  # fmt: skip
    assert RayExecutor(num_workers=2).run(run).num_rows > 0


def test_worker_device_follows_the_run():
    assert worker_device(None, None, cluster_gpus=0) == ("cpu", 0.0)
    assert worker_device(None, None, cluster_gpus=2) == ("cuda", 1.0)
    assert worker_device("cpu", None, cluster_gpus=2) == ("cpu", 0.0)
    assert worker_device("cuda:0", 0.5, cluster_gpus=2) == ("cuda:0", 0.5)
    assert worker_device(None, 0, cluster_gpus=2) == ("cpu", 0.0)
    with pytest.raises(ValueError, match="GPUs would be reserved for a CPU run"):
        worker_device("cpu", 1, cluster_gpus=2)
    with pytest.raises(ValueError, match="each worker needs a GPU"):
        worker_device("cuda", 0, cluster_gpus=2)


def test_a_gpu_reservation_for_a_cpu_run_is_refused_before_any_work(files, ray_runtime):
    root, _ = files
    run = ExplainRun(
        JsonlSource(root / "samples.jsonl"), ["rollout"], model_dir=root / "model",
        out_dir=root / "refused", device="cpu",
    )  # fmt: skip
    with pytest.raises(ValueError, match="GPUs would be reserved for a CPU run"):
        RayExecutor(num_gpus_per_worker=1).run(run)
    assert not (root / "refused").exists()
