"""The Ray engine on MEDS data: each data shard explained on a worker gives the rows of the
single-process run, and an interrupted run resumes per shard."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from _meds_kit import static_sample
from _tolerance import assert_same_rows
from ehrlens.data import create_sample_dataset
from ehrlens.data.meds import from_meds
from ehrlens.data.sources import MedsShard, MedsSource
from ehrlens.explain import ExplainRun, LocalExecutor, explain_cohort
from ehrlens.explain.ray_engine import RayExecutor
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir

pytestmark = pytest.mark.slow
BATCH = 4


@pytest.fixture(scope="module")
def meds_model(tmp_path_factory):
    """The static MEDS sample (four data shards) and a small model trained on its mapping."""
    tmp = tmp_path_factory.mktemp("ray_meds")
    root, labels = static_sample(tmp / "static")
    data = from_meds(root, labels)
    dataset = create_sample_dataset(data.samples, data.input_schema, data.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1).eval()
    save_model_dir(model, tmp / "model", {"meds": {"options": data.options.to_dict()}})
    save_model_dir(model, tmp / "plain")  # no MEDS mapping
    return tmp, root, labels, dataset, data.options.to_dict()


def _run(tmp, root, labels, options, methods, out, **kwargs):
    source = MedsSource(root, labels, options, patients=kwargs.pop("patients", None))
    return ExplainRun(
        source, methods, model_dir=tmp / "model", out_dir=out, batch_size=BATCH, **kwargs
    )


def _single_process(tmp, dataset):
    model, card = load_model_dir(tmp / "model")
    result = explain_cohort(
        model, dataset, ["rollout", "chefer"], batch_size=BATCH, model_id=card["model_id"]
    )
    return result.to_frame()


def _same_rows(frame, expected):
    """Same rows in the same order; floats within rounding (Ray workers are other processes)."""
    assert_same_rows(frame, expected)


def test_ray_rows_equal_the_single_process_rows_and_resume_per_shard(meds_model, ray_runtime):
    tmp, root, labels, dataset, options = meds_model
    expected = _single_process(tmp, dataset)
    out = tmp / "ray"
    run = _run(tmp, root, labels, options, ["rollout", "chefer"], out)
    result = RayExecutor(num_workers=2).run(run)
    assert result.computed == [0, 1, 2, 3] and result.reused == []  # one per data shard
    frame = result.to_frame()
    _same_rows(frame, expected)
    assert {"subject_id", "prediction_time", "event_time"} <= set(frame.columns)
    # each output shard holds the subjects of its data shard
    held_out = pd.read_parquet(out / "part-00000.parquet")  # data/held_out/0.parquet
    assert set(held_out["subject_id"]) == {1500733}

    (out / "part-00002.parquet").unlink()  # interrupted: one shard missing
    again = RayExecutor(num_workers=2).run(run)
    assert again.computed == [2] and again.reused == [0, 1, 3]
    _same_rows(again.to_frame(), expected)


def test_the_local_executor_writes_the_same_folder_and_resumes_a_ray_run(meds_model, ray_runtime):
    """Same source, same spec: the local executor reuses the shards Ray wrote (one
    fingerprint for both), computes the missing one, and the rows are Ray's."""
    tmp, root, labels, _, options = meds_model
    out = tmp / "both"
    run = _run(tmp, root, labels, options, ["rollout"], out)
    by_ray = RayExecutor(num_workers=2).run(run)
    (out / "part-00001.parquet").unlink()
    local = LocalExecutor().run(run)
    assert local.fingerprint == by_ray.fingerprint
    assert local.computed == [1] and local.reused == [0, 2, 3]
    _same_rows(local.to_frame(), by_ray.to_frame())


def test_ray_explains_only_the_selected_samples(meds_model, ray_runtime):
    tmp, root, labels, dataset, options = meds_model
    chosen = [p for p in dataset.patient_ids if p.startswith("68729@")]
    run = _run(tmp, root, labels, options, ["rollout"], tmp / "some", patients=chosen)
    result = RayExecutor().run(run)
    assert sorted(set(result.to_frame()["patient_id"])) == sorted(chosen)
    assert result.num_patients == len(chosen)


def test_command_line_ray_on_meds_reads_no_samples_on_the_driver(
    meds_model, ray_runtime, monkeypatch
):
    from click.testing import CliRunner

    from ehrlens.cli import loading
    from ehrlens.cli.app import main

    tmp, root, labels, _, _ = meds_model
    data = ["--data", f"meds:{root}", "--labels", str(labels)]

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (result.stdout, result.stderr, repr(result.exception))
        return result

    model = tmp / "cli-model"
    run("train", *data, "--out", model, "--epochs", "1", "--embedding-dim", "8", "--heads", "2",
        "--layers", "1", "-q")  # fmt: skip
    common = ["--model", model, *data, "--split", "test", "--batch-size", BATCH, "-q"]
    run("explain", *common, "--no-bucket", "--out", tmp / "cli-local")

    def refuse(*args, **kwargs):
        raise AssertionError("the driver built samples")

    monkeypatch.setattr(loading, "model_and_data", refuse)
    monkeypatch.setattr(MedsShard, "samples", refuse)  # no unit is read on the driver
    import ehrlens.cli.commands.explain as command

    monkeypatch.setattr(command, "model_and_data", refuse)
    out = run("explain", *common, "--engine", "ray", "--workers", 2, "--out", tmp / "cli-ray")
    assert "4 patients x 1 method(s)" in out.stdout  # the held-out subject's 4 samples
    _same_rows(pd.read_parquet(tmp / "cli-ray"), pd.read_parquet(tmp / "cli-local"))
