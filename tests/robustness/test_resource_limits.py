"""Sizes that cannot fit are refused with the memory estimate, before anything is allocated.

Issue "Eighteen more ways the promises break", item 16: ``--embedding-dim 100000000`` was
killed by the operating system at 21.7 GB and ``--bootstrap 1e9`` crashed. Now each is
refused up front, with the estimate and what is available in the message.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cli_kit import invoke

from ehrlens.metrics.evaluator import bootstrap_interval


def test_check_fits_reference_cases():
    from ehrlens.core.memory import MemoryEstimateError, check_fits

    check_fits(2**30, "one GiB", available=2**31)
    with pytest.raises(MemoryEstimateError, match=r"three GiB needs about 3\.0 GiB .* the 2\.0"):
        check_fits(3 * 2**30, "three GiB", available=2**31)


def test_item_16_a_huge_bootstrap_is_refused_with_its_estimate():
    values = np.linspace(0, 1, 400)
    with pytest.raises(ValueError, match=r"1,000,000,000 draws over 400 patients needs about"):
        bootstrap_interval(values, n_bootstrap=10**9)
    assert bootstrap_interval(values, n_bootstrap=200).n == 400  # a usual size still runs


@pytest.mark.slow
def test_item_16_train_refuses_an_embedding_that_cannot_fit(cli_cohort, tmp_path):
    data = cli_cohort / "data"
    result = invoke(
        "train", "--data", data / "samples.jsonl", "--schema", data / "schema.json",
        "--out", tmp_path / "model", "--embedding-dim", 100_000_000, "--heads", 2,
        "--layers", 1, "--epochs", 1, "-q", expect=1,
    )  # fmt: skip
    assert "--embedding-dim 100,000,000 and --layers 1 (at least) needs about" in result.stderr
    assert not (tmp_path / "model" / "model.pt").exists()


@pytest.mark.slow
def test_item_16_evaluate_refuses_a_huge_bootstrap_before_any_work(cli_cohort, tmp_path):
    result = invoke(
        "evaluate", "--model", cli_cohort / "model", "--data",
        cli_cohort / "data" / "samples.jsonl", "-m", "rollout", "--bootstrap", 10**9,
        "--out", tmp_path / "eval.json", "-q", expect=1,
    )  # fmt: skip
    assert "--bootstrap 1,000,000,000 over" in result.stderr and "needs about" in result.stderr
    assert not (tmp_path / "eval.json").exists()


def test_item_16_integrated_gradients_with_a_billion_steps_is_refused():
    """``integrated_gradients:n_steps=1e9`` peaked at 16 GB before crashing; now it is refused
    before Captum allocates its step weights."""
    from _robustness_kit import make_dataset, make_model

    from ehrlens.interpret import IntegratedGradients

    dataset = make_dataset()
    model = make_model("Transformer", dataset)
    batch = dataset.collate([dataset[i] for i in range(4)])
    with pytest.raises(ValueError, match=r"n_steps=1,000,000,000 on a batch of 4 .* needs about"):
        IntegratedGradients(model, n_steps=10**9).attribute(None, **batch)
    scores = IntegratedGradients(model, n_steps=4).attribute(None, **batch)
    assert set(scores) == set(dataset.input_schema)
