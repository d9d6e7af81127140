"""The Ray Data engine gives the single-process rows (the same rows in the same order; scores
within float32 rounding, since a worker process may run another thread count), resumes without
duplicates, and stays optional."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from _tolerance import assert_same_rows
from ehrlens.cli.app import main
from ehrlens.core.jsonl import write_jsonl
from ehrlens.core.locks import OutputLockedError, lock_path, output_lock
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import OutputConflictError, explain_cohort
from ehrlens.explain.ray_engine import explain_cohort_ray
from ehrlens.interpret import AttentionRollout, RandomBaseline
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir

pytestmark = pytest.mark.slow

N_PATIENTS = 2000
SHARD = 250
BATCH = 50  # divides every shard size used here, so batches match across runs


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    """A cohort of a few thousand patients as JSON Lines, and a small model directory."""
    root = tmp_path_factory.mktemp("ray")
    cohort = generate_cohort(N_PATIENTS, layout="nested", seed=3)
    data = write_jsonl(cohort.samples, root / "samples.jsonl")
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2).eval()
    save_model_dir(model, root / "model")
    return root, data, dataset


@pytest.fixture(scope="module")
def single_process(cohort_files):
    root, _, dataset = cohort_files
    model, card = load_model_dir(root / "model")
    result = explain_cohort(
        model,
        dataset,
        ["rollout", "flow"],
        out_dir=root / "local",
        shard_size=SHARD,
        batch_size=BATCH,
        model_id=card["model_id"],
    )
    return result.to_frame()


def _sorted(frame):
    keys = ["patient_id", "method", "feature", "visit", "position"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def test_ray_rows_equal_single_process_exactly(cohort_files, ray_runtime, single_process):
    root, data, _ = cohort_files
    result = explain_cohort_ray(
        root / "model",
        data,
        ["rollout", "flow"],
        out_dir=root / "ray",
        shard_size=SHARD,
        batch_size=BATCH,
    )
    frame = result.to_frame()
    assert result.computed == list(range(N_PATIENTS // SHARD))
    assert result.num_rows == len(frame) == len(single_process)
    # same shards, same order of rows, scores within float32 rounding (another process)
    assert_same_rows(frame, single_process)
    assert set(frame["method"]) == {"rollout", "flow"}
    assert frame["patient_id"].nunique() == N_PATIENTS
    names = sorted(p.name for p in (root / "ray").glob("part-*.parquet"))
    assert names == [f"part-{i:05d}.parquet" for i in range(N_PATIENTS // SHARD)]
    manifest = json.loads((root / "ray" / "_ehrlens_run.json").read_text())
    assert manifest["complete"] is True and manifest["rows"] == len(frame)
    # patients go to shards in input order, as in the single-process run
    first = pd.read_parquet(root / "ray" / "part-00000.parquet")
    assert list(dict.fromkeys(first["patient_id"])) == [
        dataset_patient for dataset_patient in single_process["patient_id"].unique()[:SHARD]
    ]


def test_resume_recomputes_only_missing_or_damaged_shards(
    cohort_files, ray_runtime, single_process
):
    root, data, _ = cohort_files
    out = root / "ray_resume"
    explain_cohort_ray(
        root / "model", data, ["rollout", "flow"], out_dir=out, shard_size=SHARD, batch_size=BATCH
    )
    # an interruption leaves some shards absent, one truncated and a temporary file behind
    (out / "part-00002.parquet").unlink()
    (out / "part-00005.parquet").unlink()
    damaged = out / "part-00006.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    (out / ".part-00002.parquet.abc.tmp").write_bytes(b"partial")
    kept = out / "part-00000.parquet"
    kept_stat = kept.stat().st_mtime_ns

    result = explain_cohort_ray(
        root / "model", data, ["rollout", "flow"], out_dir=out, shard_size=SHARD, batch_size=BATCH
    )
    assert result.computed == [2, 5, 6]
    assert result.reused == [0, 1, 3, 4, 7]
    assert kept.stat().st_mtime_ns == kept_stat  # a verified shard is not rewritten
    assert not list(out.glob(".part-*.tmp"))
    frame = result.to_frame()
    assert_same_rows(frame, single_process)
    assert not frame.duplicated(["patient_id", "method", "feature", "visit", "position"]).any()


def test_killed_driver_then_rerun_gives_the_same_rows(cohort_files, ray_runtime, single_process):
    """A driver killed with SIGKILL midway; the re-run finishes with the uninterrupted rows."""
    root, data, _ = cohort_files
    out = root / "ray_killed"
    script = (
        "import sys\n"
        "from ehrlens.explain.ray_engine import explain_cohort_ray\n"
        "explain_cohort_ray(sys.argv[1], sys.argv[2], ['rollout', 'flow'], out_dir=sys.argv[3],"
        f" shard_size={SHARD // 5}, batch_size={BATCH}, address=sys.argv[4], num_workers=1)\n"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(root / "model"), str(data), str(out), ray_runtime],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    n_total = N_PATIENTS // (SHARD // 5)
    written = len(list(out.glob("part-*.parquet")))
    assert 2 <= written < n_total

    result = explain_cohort_ray(
        root / "model",
        data,
        ["rollout", "flow"],
        out_dir=out,
        shard_size=SHARD // 5,
        batch_size=BATCH,
    )
    assert len(result.reused) >= 2 and len(result.reused) + len(result.computed) == n_total
    frame = result.to_frame()
    assert_same_rows(_sorted(frame), _sorted(single_process))
    assert not frame.duplicated(["patient_id", "method", "feature", "visit", "position"]).any()


def test_other_runs_output_is_refused_untouched(cohort_files, ray_runtime):
    root, data, _ = cohort_files
    out = root / "local"  # written by the single-process run: another fingerprint
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputConflictError, match="different run"):
        explain_cohort_ray(root / "model", data, ["rollout"], out_dir=out, shard_size=SHARD)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_folder_another_run_is_writing_is_refused(cohort_files, ray_runtime, tmp_path):
    """The driver takes the output's lock: while another writer holds it, nothing is written."""
    root, _, _ = cohort_files
    samples = generate_cohort(20, layout="nested", seed=3).samples
    out = tmp_path / "attr"
    with output_lock(out, command="the other writer"):
        with pytest.raises(OutputLockedError, match="the other writer"):
            explain_cohort_ray(root / "model", samples, ["rollout"], out_dir=out, shard_size=10)
        assert not out.exists()
    result = explain_cohort_ray(root / "model", samples, ["rollout"], out_dir=out, shard_size=10)
    assert result.computed == [0, 1] and not lock_path(out).exists()


def test_duplicate_patient_ids_are_refused(cohort_files, ray_runtime, tmp_path):
    root, _, _ = cohort_files
    samples = generate_cohort(20, layout="nested", seed=3).samples
    samples[5]["patient_id"] = samples[4]["patient_id"]
    with pytest.raises(ValueError, match=r"sample 5 repeats patient_id .* of sample 4"):
        explain_cohort_ray(root / "model", samples, ["rollout"], out_dir=tmp_path / "o")


def test_bad_sample_raises_the_processor_error_with_its_shard(cohort_files, ray_runtime, tmp_path):
    root, _, _ = cohort_files
    samples = generate_cohort(30, layout="nested", seed=3).samples
    samples[23]["diagnoses"] = "I10"  # a string where visits of codes belong
    with pytest.raises(TypeError, match=r"shard 2 .*P000020.*sample 3, feature 'diagnoses'"):
        explain_cohort_ray(
            root / "model", samples, ["rollout"], out_dir=tmp_path / "o", shard_size=10
        )


def test_instances_are_rebuilt_on_the_workers_as_by_name(cohort_files, ray_runtime, tmp_path):
    """{name: interpreter} travels as its class and get_params(): the same rows and
    fingerprint as {name: options}, and as the single-process run of the instance."""
    root, _, _ = cohort_files
    samples = generate_cohort(60, layout="nested", seed=3).samples
    model, card = load_model_dir(root / "model")
    common = {"shard_size": 25, "batch_size": 5}
    by_name = explain_cohort_ray(
        root / "model", samples, {"rollout": {"head_fusion": "max"}, "random": {"seed": 4}},
        out_dir=tmp_path / "names", **common,
    )  # fmt: skip
    instances = {
        "rollout": AttentionRollout(model, head_fusion="max"),
        "random": RandomBaseline(model, seed=4),
    }
    given = explain_cohort_ray(
        root / "model", samples, instances, out_dir=tmp_path / "instances", **common
    )
    assert given.fingerprint == by_name.fingerprint
    assert_same_rows(given.to_frame(), by_name.to_frame())
    local = explain_cohort(
        model, create_sample_dataset(samples, schema=model.schema), instances,
        model_id=card["model_id"], **common,
    )  # fmt: skip
    assert_same_rows(given.to_frame(), local.to_frame())


def test_ehrlens_works_without_ray():
    """With Ray made unimportable, ehrlens imports and the Ray engine names the extra."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "import ehrlens, ehrlens.explain, ehrlens.cli.app, ehrlens.explain.ray_engine as d\n"
        "try:\n"
        "    d.explain_cohort_ray('m', [], out_dir='o')\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "ERR the Ray engine needs Ray Data: pip install 'ehrlens[ray]'" in out.stdout


def test_model_dir_path_must_exist(ray_runtime, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        explain_cohort_ray(tmp_path / "nothing", [], out_dir=tmp_path / "o")


def test_cli_engine_ray(cohort_files, ray_runtime, single_process, tmp_path):
    root, data, _ = cohort_files
    result = CliRunner().invoke(
        main,
        [
            *("explain", "--model", str(root / "model"), "--data", str(data)),
            *("-m", "rollout,flow", "--out", str(tmp_path / "attr"), "--shard-size", str(SHARD)),
            *("--batch-size", str(BATCH), "--no-bucket"),  # bit for bit: batches as unbucketed
            *("--engine", "ray", "--address", ray_runtime, "-q"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{len(single_process)} rows" in result.output
    frame = pd.concat(
        [pd.read_parquet(p) for p in sorted((tmp_path / "attr").glob("part-*.parquet"))],
        ignore_index=True,
    )
    assert_same_rows(frame, single_process)


def test_workers_of_the_test_runtime_run_at_the_callers_priority(ray_runtime):
    # Ray starts workers at niceness 15 unless told otherwise; on a loaded machine such workers
    # wait behind every busy process. The runtime here (as init_ray's) keeps the caller's.
    import ray

    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)
