"""Item 9 of the hostile-input issue: training options out of range are refused at the
command line (exit 2, naming the option) and by the model constructors and the Trainer for
Python users; a loss, gradient or weight that becomes NaN or infinite stops training with an
error naming the epoch and the batch, instead of writing an all-NaN model.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from _robustness_kit import LABELS, SCHEMA, make_dataset, make_samples, run_cli

from ehrlens.app.trainer import Trainer, TrainingDivergedError
from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import get_dataloader
from ehrlens.models import StageAttentionNet, Transformer


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(make_samples(24))


@pytest.fixture
def files(tmp_path):
    data = write_jsonl(make_samples(24), tmp_path / "p.jsonl")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"input_schema": SCHEMA, "output_schema": LABELS}))
    return data, schema


TINY = ["--epochs", "1", "--batch-size", "8", "-q"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], r"Invalid value for '--lr': must be a finite number > 0, got inf"),
        (["--lr", "nan"], r"Invalid value for '--lr': must be a finite number > 0, got nan"),
        (["--lr", "0"], r"Invalid value for '--lr': must be a finite number > 0, got 0.0"),
        (["--lr", "-1e-3"], r"Invalid value for '--lr'"),
        (
            ["--embedding-dim", "0"],
            r"Invalid value for '--embedding-dim': 0 is not in the range x>=1",
        ),
        (["--embedding-dim", "-4"], r"Invalid value for '--embedding-dim'"),
        (["--heads", "0"], r"Invalid value for '--heads': 0 is not in the range x>=1"),
        (["--layers", "-2"], r"Invalid value for '--layers': -2 is not in the range x>=1"),
        (["--epochs", "0"], r"Invalid value for '--epochs'"),
        (["--batch-size", "0"], r"Invalid value for '--batch-size'"),
        (
            ["--embedding-dim", "10", "--heads", "4"],
            r"--embedding-dim 10 must be divisible by --heads 4",
        ),
    ],
)
def test_train_refuses_options_out_of_range(files, tmp_path, args, message):
    data, schema = files
    out = tmp_path / "model"
    result = run_cli("train", "--data", data, "--schema", schema, "--out", out, *TINY, *args)
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.stderr.split())), result.stderr
    assert not out.exists()


@pytest.mark.parametrize("lr", ["1e30", "1e38"])  # 1e38: the step size overflows float32
def test_train_stops_on_a_diverging_learning_rate_and_writes_no_model(files, tmp_path, lr):
    data, schema = files
    out = tmp_path / "model"
    result = run_cli(
        "train", "--data", data, "--schema", schema, "--out", out, "--lr", lr,
        "--embedding-dim", "8", "--heads", "2", "--layers", "1", *TINY,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert re.match(r"error: epoch 1, batch \d: .*training stopped", result.stderr)
    assert not out.exists()


# ----------------------------------------------------------------------------- constructors

TRANSFORMER = {"embedding_dim": 8, "heads": 2, "num_layers": 1, "dropout": 0.0}
STAGENET = {
    "embedding_dim": 8, "chunk_size": 4, "levels": 2, "heads": 2, "attention_layers": 1,
    "conv_size": 2, "dropout": 0.0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "base"), [(Transformer, TRANSFORMER), (StageAttentionNet, STAGENET)]
)
def test_every_size_must_be_a_positive_int(dataset, cls, base):
    for name in (k for k in base if k != "dropout"):
        for bad, error, text in (
            (0, ValueError, "must be >= 1, got 0"),
            (-2, ValueError, "must be >= 1, got -2"),
            (2.0, TypeError, "must be an int, got float"),
            (True, TypeError, "must be an int, got bool"),
        ):
            with pytest.raises(error, match=rf"^{cls.__name__}: {name} {text}"):
                cls(dataset, **{**base, name: bad})


@pytest.mark.parametrize(
    ("cls", "base"), [(Transformer, TRANSFORMER), (StageAttentionNet, STAGENET)]
)
def test_heads_must_divide_the_width_and_dropout_is_a_probability(dataset, cls, base):
    with pytest.raises(ValueError, match=r"embedding_dim 10 must be divisible by heads 4"):
        cls(dataset, **{**base, "embedding_dim": 10, "heads": 4})
    for bad in (1.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            cls(dataset, **{**base, "dropout": bad})
    model = cls(dataset, **{**base, "embedding_dim": 12, "heads": 3})  # a valid combination
    assert model.hparams["heads"] == 3


# ----------------------------------------------------------------------------- trainer


def _trainer(dataset):
    torch.manual_seed(0)
    return Trainer(Transformer(dataset, **TRANSFORMER), device="cpu", progress=False)


@pytest.mark.parametrize("lr", [math.inf, -math.inf, math.nan, -1e-3])
def test_trainer_refuses_a_learning_rate_that_is_not_finite_and_non_negative(dataset, lr):
    trainer = _trainer(dataset)
    before = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match=r"^lr must be finite and >= 0"):
        trainer.train(get_dataloader(dataset, 8), epochs=1, lr=lr, monitor=None)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_a_non_finite_loss_names_the_epoch_and_the_batch(dataset, monkeypatch):
    trainer = _trainer(dataset)
    forward = trainer.model.forward
    calls = {"n": 0}

    def nan_on_the_seventh_call(**batch):
        calls["n"] += 1
        out = forward(**batch)
        if calls["n"] == 7:  # 3 batches per epoch: epoch 3, batch 1
            out["loss"] = out["loss"] * math.nan
        return out

    monkeypatch.setattr(trainer.model, "forward", nan_on_the_seventh_call)
    with pytest.raises(TrainingDivergedError, match=r"^epoch 3, batch 1: training loss is nan"):
        trainer.train(get_dataloader(dataset, 8), epochs=5, lr=1e-3, monitor=None)
    assert isinstance(TrainingDivergedError("x"), ValueError)  # the CLI's exit code 1


def test_weights_that_diverge_in_the_last_batch_are_caught(dataset):
    """One batch, finite settings whose update is not finite (AdamW multiplies the weights by
    ``1 - lr * weight_decay`` = -1e40, beyond float32): the loss of that batch was finite, so
    without the weight check training would end with infinite weights."""
    trainer = _trainer(dataset)
    with pytest.raises(TrainingDivergedError, match=r"^epoch 1: the weights became NaN or inf"):
        trainer.train(
            get_dataloader(dataset, 64), epochs=1, lr=1e30, weight_decay=1e10, monitor=None
        )
