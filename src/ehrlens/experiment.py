"""Helpers for experiments on synthetic data: train a model on a cohort in one call, or build
an untrained model on random code sequences of any length (for speed and memory tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import (
    SampleDataset,
    SyntheticCohort,
    create_sample_dataset,
    generate_cohort,
)
from .models import BaseModel, Transformer
from .prediction_metrics import compute_metrics
from .workflow import fit_on_splits


@dataclass
class CohortRun:
    """A model trained on a synthetic cohort, with its splits and scores.

    Attributes:
        model: the trained model, in eval mode.
        cohort: the cohort (ground truth, noise-free risk).
        train / val / test: patient-disjoint splits.
        history: per-epoch training record.
        test_metrics: ``roc_auc``, ``pr_auc`` and ``loss`` on the test split.
        oracle_roc_auc: test AUROC of the cohort's noise-free risk: the best any model can do.
        train_seconds: training wall time.
    """

    model: BaseModel
    cohort: SyntheticCohort
    train: SampleDataset
    val: SampleDataset
    test: SampleDataset
    history: list[dict[str, float]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)
    oracle_roc_auc: float = float("nan")
    train_seconds: float = 0.0


def train_on_cohort(
    model_class: type[BaseModel],
    hparams: dict[str, Any],
    *,
    n_patients: int = 3000,
    layout: str = "sequence",
    seed: int = 0,
    epochs: int = 8,
    lr: float = 2e-3,
    batch_size: int = 64,
) -> CohortRun:
    """Generate a cohort, split it 70/15/15 by patient, train with early-best restore, score.

    Example:
        >>> run = train_on_cohort(Transformer, {"embedding_dim": 32}, n_patients=500, epochs=2)
        >>> run.test_metrics["roc_auc"], run.oracle_roc_auc
    """
    cohort = generate_cohort(n_patients, layout=layout, seed=seed)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    fit = fit_on_splits(
        dataset, model_class, hparams, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        metrics=["roc_auc", "pr_auc"],
    )  # fmt: skip
    test = fit.test
    in_test = set(test.patient_ids)
    rows = [s for s in cohort.samples if s["patient_id"] in in_test]
    labels = np.array([s["label"] for s in rows])
    risks = np.array([cohort.risk[s["patient_id"]] for s in rows])
    oracle = compute_metrics("binary", labels, risks, ["roc_auc"])["roc_auc"]
    return CohortRun(
        model=fit.model,
        cohort=cohort,
        train=fit.train,
        val=fit.val,
        test=test,
        history=fit.history,
        test_metrics=fit.test_metrics,
        oracle_roc_auc=oracle,
        train_seconds=fit.seconds,
    )


def random_code_transformer(
    num_layers: int, embedding_dim: int, heads: int, vocab_size: int = 500, seed: int = 0
) -> Transformer:
    """An untrained Transformer on one ``"codes"`` sequence feature of ``vocab_size`` codes.

    Pair it with :func:`random_code_batch` to measure any sequence length or batch size.

    Example:
        >>> model = random_code_transformer(num_layers=6, embedding_dim=128, heads=4)
        >>> batch = random_code_batch(model, batch_size=32, seq=1024)   # codes [32, 1024]
        >>> scores = AttentionRollout(model).attribute(**batch)          # {"codes": [32, 1024]}
    """
    codes = [f"C{i:04d}" for i in range(vocab_size)]
    samples = [
        {"patient_id": "a", "codes": codes, "y": 0},
        {"patient_id": "b", "codes": codes[:10], "y": 1},
    ]
    dataset = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"})
    torch.manual_seed(seed)
    model = Transformer(dataset, embedding_dim=embedding_dim, heads=heads, num_layers=num_layers)
    return model.eval()


def random_code_batch(model: Transformer, batch_size: int, seq: int, seed: int = 0) -> dict:
    """A batch of random known code ids ``[batch_size, seq]`` for ``model``'s ``"codes"``.

    Ids are drawn from the real codes (never padding or unknown) with a seeded generator.
    See :func:`random_code_transformer` for an example.
    """
    vocab = model.schema.input_processors["codes"].vocab_size
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch_size, seq), generator=generator)
    return {"codes": ids, "masks": {}, "times": {}}
