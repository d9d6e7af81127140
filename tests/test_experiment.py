"""Experiment helpers: train on a synthetic cohort; random-code models of any length."""

import torch

from ehrlens.experiment import random_code_batch, random_code_transformer, train_on_cohort
from ehrlens.models import Transformer


def test_train_on_cohort_returns_disjoint_splits_scores_and_an_eval_model():
    run = train_on_cohort(
        Transformer, {"embedding_dim": 16, "heads": 2, "num_layers": 1}, n_patients=200, epochs=1
    )
    ids = [set(split.patient_ids) for split in (run.train, run.val, run.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 200
    assert {"roc_auc", "pr_auc", "loss"} <= set(run.test_metrics)
    assert 0.5 < run.oracle_roc_auc <= 1.0 and len(run.history) == 1
    assert not run.model.training and run.train_seconds > 0


def test_random_code_model_takes_any_length_and_batch():
    model = random_code_transformer(num_layers=2, embedding_dim=16, heads=2, vocab_size=50)
    batch = random_code_batch(model, batch_size=3, seq=40, seed=1)
    assert batch["codes"].shape == (3, 40)
    assert int(batch["codes"].min()) >= 2  # never padding or unknown
    assert torch.equal(batch["codes"], random_code_batch(model, 3, 40, seed=1)["codes"])
    with torch.inference_mode():
        assert model(**batch)["logit"].shape == (3, 1)
