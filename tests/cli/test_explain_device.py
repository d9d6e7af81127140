"""``ehrlens explain --device``: CPU runs, CUDA without a device is a usage error (exit 2)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ehrlens.cli.app import main
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.models import Transformer
from ehrlens.models.directory import save_model_dir


@pytest.fixture(scope="module")
def command(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    cohort = generate_cohort(30, layout="nested", seed=3)
    data = write_jsonl(cohort.samples, root / "samples.jsonl")
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    save_model_dir(Transformer(dataset, embedding_dim=8, heads=2, num_layers=2).eval(), root / "m")
    return root, ["explain", "--model", str(root / "m"), "--data", str(data), "-m", "rollout"]


def test_device_cpu_explains(command):
    root, args = command
    result = CliRunner().invoke(main, [*args, "--out", str(root / "cpu"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "30 patients x 1 method(s)" in result.output


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_device_cuda_without_a_gpu_is_a_usage_error(command):
    root, args = command
    result = CliRunner().invoke(main, [*args, "--out", str(root / "gpu"), "--device", "cuda"])
    assert result.exit_code == 2
    assert "--device cuda: no CUDA device is available" in result.output
    assert not (root / "gpu").exists()
