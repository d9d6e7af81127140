"""The CUDA paths: interpreters, ``ehrlens explain --device cuda`` and the Ray engine's GPU
workers give the CPU's rows. Needs an NVIDIA GPU visible to torch (CUDA); skipped otherwise."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from _tolerance import assert_same_rows
from ehrlens.cli.app import main
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort, move_to_device
from ehrlens.interpret import AttentionRollout, CheferRelevance
from ehrlens.models import Transformer
from ehrlens.models.directory import save_model_dir

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA (none visible to torch)"
)
TOL = {"rtol": 1e-4, "atol": 1e-6}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    cohort = generate_cohort(200, layout="nested", seed=3)
    data = write_jsonl(cohort.samples, root / "samples.jsonl")
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2).eval()
    save_model_dir(model, root / "model")
    return root, data, dataset, model


@pytest.mark.parametrize("low_memory", [False, True])
def test_rollout_and_chefer_on_cuda_equal_cpu(files, low_memory):
    _, _, dataset, model = files
    batch = dataset.collate([dataset[i] for i in range(32)])
    gpu_model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    gpu_model.load_state_dict(model.state_dict())
    gpu_model = gpu_model.to("cuda").eval()
    gpu_batch = move_to_device(batch, "cuda")
    with torch.inference_mode():
        cpu_rollout = AttentionRollout(model, low_memory=low_memory).attribute(**batch)
        gpu_rollout = AttentionRollout(gpu_model, low_memory=low_memory).attribute(**gpu_batch)
    cpu_chefer = CheferRelevance(model).attribute(**batch)
    gpu_chefer = CheferRelevance(gpu_model).attribute(**gpu_batch)
    for cpu, gpu in ((cpu_rollout, gpu_rollout), (cpu_chefer, gpu_chefer)):
        for key in cpu:
            assert gpu[key].device.type == "cuda"
            torch.testing.assert_close(gpu[key].cpu(), cpu[key], **TOL)


def _rows(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder)
    keys = ["patient_id", "method", "feature", "visit", "position"]
    return frame.sort_values(keys).reset_index(drop=True)


def _assert_same_rows(cpu: pd.DataFrame, gpu: pd.DataFrame) -> None:
    """Every non-float column exact; scores and probabilities within ``TOL`` (another device)."""
    assert len(cpu) == len(gpu) > 0
    assert_same_rows(gpu, cpu, **TOL)


def test_explain_device_cuda_gives_the_cpu_rows(files):
    root, data, _, _ = files
    runner = CliRunner()
    common = ["explain", "--model", str(root / "model"), "--data", str(data)]
    common += ["-m", "rollout", "-m", "chefer", "--quiet"]
    cpu = runner.invoke(main, [*common, "--out", str(root / "cpu"), "--device", "cpu"])
    gpu = runner.invoke(main, [*common, "--out", str(root / "gpu"), "--device", "cuda"])
    assert cpu.exit_code == 0, cpu.output
    assert gpu.exit_code == 0, gpu.output
    _assert_same_rows(_rows(root / "cpu"), _rows(root / "gpu"))


def test_ray_engine_gpu_workers_give_the_cpu_rows(files):
    ray = pytest.importorskip("ray")
    from ehrlens.explain.ray_engine import explain_cohort_ray

    root, data, _, _ = files
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        common = {"methods": ["rollout", "chefer"], "batch_size": 50, "shard_size": 100}
        explain_cohort_ray(
            root / "model", data, out_dir=root / "ray_cpu", num_gpus_per_worker=0, **common
        )
        explain_cohort_ray(
            root / "model", data, out_dir=root / "ray_gpu", num_gpus_per_worker=1, **common
        )
    finally:
        ray.shutdown()
    _assert_same_rows(_rows(root / "ray_cpu"), _rows(root / "ray_gpu"))


def test_evaluating_a_model_trained_on_cuda_equals_cpu(files):
    # Trainer puts the model on CUDA when one is present; the loader's batches stay on CPU.
    from ehrlens.data import get_dataloader
    from ehrlens.metrics import Evaluator, RemovalFaithfulness

    _, _, dataset, model = files
    gpu_model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    gpu_model.load_state_dict(model.state_dict())
    gpu_model = gpu_model.to("cuda").eval()
    loader = get_dataloader(dataset.subset(range(48)), 16)
    results = {}
    for where, m in (("cpu", model), ("cuda", gpu_model)):
        evaluator = Evaluator(m, sample_filter="all", n_bootstrap=20, seed=0)
        results[where] = evaluator.evaluate(loader, AttentionRollout(m), name="rollout")
    for metric in ("comprehensiveness", "sufficiency"):
        cpu, gpu = (results[w].summaries[metric].mean for w in ("cpu", "cuda"))
        assert abs(cpu - gpu) < 1e-4, metric
    batch = next(iter(loader))  # direct use: a CPU batch and CPU scores on a CUDA model
    scores = AttentionRollout(model).attribute(**batch)
    direct = RemovalFaithfulness(gpu_model, percentages=(20,))(scores, batch)
    assert direct.comprehensiveness.device.type == "cuda" and direct.n_scored == 16
