"""The whole run's torch thread count, and what the ``>>>`` examples of ``src/ehrlens`` run
with (``pytest`` collects them as doctests: ``[tool.pytest.ini_options]`` in pyproject.toml).

An example may use, without building them, the public names of the ehrlens packages
(``PUBLIC``) and: ``cohort`` (130 synthetic patients with nested visits, ``samples``),
``dataset`` and its parts ``train`` / ``val`` / ``test`` (``test_dataset``: P000110 to
P000129), their loaders (``loader`` is the test one), ``batch`` (8 test patients, P000118 to
P000125), ``model`` (``transformer``: a tiny Transformer trained one epoch, with its
``card``), ``code_transformer``, ``rollout`` and ``chefer`` (on ``model``), ``frame``
(rollout and Chefer rows of the test patients), ``predictions``, ``mha``, ``x``, ``mask``
(one attention module and its input), ``encoder`` / ``encoding`` (a tiny Hugging Face BERT
and a batch of its ids), and ``json``, ``np``, ``nn``, ``pd``, ``pq``, ``torch``, ``Path``.
Each example runs in a fresh folder holding copies of ``model/`` (the saved model and its
card), ``data/`` (the cohort in every file format), ``patients.jsonl``, ``events.parquet``,
``labels.csv``, ``schema.json``, ``codes.csv``, ``attr/`` (a finished rollout run of the
test patients) and ``faithfulness.json`` (an evaluation).

Modules in ``collect_ignore`` still have examples that need a Ray cluster, a MEDS dataset, a
downloaded tokenizer or a PyHealth model; their doctests are not run yet.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch


def _test_threads() -> int:
    """``EHRLENS_TEST_THREADS`` (default 1): the stability check runs the suite with 1 and 2."""
    given = os.environ.get("EHRLENS_TEST_THREADS", "1")
    if not given.isdigit() or int(given) < 1:
        raise pytest.UsageError(f"EHRLENS_TEST_THREADS must be an integer >= 1, got {given!r}")
    return int(given)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The whole session runs with one intra-op thread (set before any fixture builds a
    model, so results do not depend on fixture order): the test models are tiny, and on a
    shared 2-core machine extra threads only add contention (up to 100x slower). The one
    torch-threads fixture of the suite; code that changes the count restores it itself.
    ``EHRLENS_TEST_THREADS`` sets another count (``tests/stability.sh`` runs 1 and 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(_test_threads())
    yield
    torch.set_num_threads(before)


#: Packages whose public names (``__all__``) every example may use without importing them.
PUBLIC = (
    "ehrlens",
    "ehrlens.data",
    "ehrlens.models",
    "ehrlens.interpret",
    "ehrlens.metrics",
    "ehrlens.explain",
    "ehrlens.report",
)


def _build(root: Path) -> dict[str, Any]:
    import importlib

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from torch import nn

    from ehrlens.app.workflow import read_schema_file, train_model, write_synthetic_cohort
    from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
    from ehrlens.explain import explain_cohort
    from ehrlens.models import CodeTransformer
    from ehrlens.models.directory import load_model_dir, save_model_dir
    from ehrlens.report import patient_predictions

    names: dict[str, Any] = {}
    for package in PUBLIC:
        module = importlib.import_module(package)
        names.update({name: getattr(module, name) for name in module.__all__})
    files = write_synthetic_cohort(root / "data", n_patients=130, seed=0)
    for name in ("schema.json", "codes.csv", "events.parquet", "labels.csv"):
        shutil.copy(root / "data" / name, root / name)
    shutil.copy(files["samples"], root / "patients.jsonl")
    cohort = generate_cohort(n_patients=130, layout="nested", seed=0)  # the cohort written
    hparams = {"embedding_dim": 16, "heads": 2, "num_layers": 2, "dropout": 0.0}
    model, card = train_model(
        cohort.samples, read_schema_file(files["schema"]), hparams=hparams, epochs=1
    )
    model.eval()
    save_model_dir(model, root / "model", card)
    _, card = load_model_dir(root / "model")
    dataset = create_sample_dataset(cohort.samples, schema=model.schema)
    train, val = dataset.subset(range(90)), dataset.subset(range(90, 110))
    test = dataset.subset(range(110, 130))  # P000110 to P000129: "P000123" is a test patient
    torch.manual_seed(0)
    code_transformer = CodeTransformer(dataset, embedding_dim=16, heads=2, num_layers=2).eval()
    batch = dataset.collate([dataset[i] for i in range(118, 126)])  # 8 test patients
    explain_cohort(model, test, ["rollout"], out_dir=root / "attr")  # as the examples write it
    frame = explain_cohort(model, test, ["rollout", "chefer"], model_id=card["model_id"])
    evaluation = [{"method": "rollout", "comprehensiveness": 0.2, "sufficiency": 0.1}]
    (root / "faithfulness.json").write_text(json.dumps({"results": evaluation}))
    return {
        **names,
        "json": json,
        "np": np,
        "nn": nn,
        "pd": pd,
        "pq": pq,
        "torch": torch,
        "Path": Path,
        "load_model_dir": load_model_dir,
        "save_model_dir": save_model_dir,
        "cohort": cohort,
        "samples": cohort.samples,
        "dataset": dataset,
        "train": train,
        "val": val,
        "test": test,
        "test_dataset": test,
        "loader": get_dataloader(test, batch_size=8),
        "train_loader": get_dataloader(train, batch_size=8, shuffle=True, seed=0),
        "val_loader": get_dataloader(val, batch_size=8),
        "test_loader": get_dataloader(test, batch_size=8),
        "batch": batch,
        "model": model,
        **_hugging_face(),
        "mha": names["MultiHeadAttention"](dim=8, heads=2),  # x: [batch, seq, dim]
        "x": torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)),
        "mask": torch.ones(2, 5, dtype=torch.bool),
        "code_transformer": code_transformer,
        "card": card,
        "frame": frame.to_frame(),
        "predictions": patient_predictions(model, test),
    }


def _hugging_face() -> dict[str, Any]:
    """``encoder``: a tiny randomly initialised BERT classifier (nothing downloaded) wrapped
    by :class:`~ehrlens.integrations.huggingface.HuggingFaceEncoder`; ``encoding``: two padded
    sentences of its token ids with ``special_tokens_mask``."""
    from transformers import BertConfig, BertForSequenceClassification

    from ehrlens.integrations.huggingface import HuggingFaceEncoder

    config = BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = HuggingFaceEncoder(BertForSequenceClassification(config).eval())
    encoding = {
        "input_ids": torch.tensor([[1, 7, 8, 9, 2], [1, 7, 2, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "special_tokens_mask": torch.tensor([[1, 0, 0, 0, 1], [1, 0, 1, 1, 1]]),
    }
    return {"encoder": encoder, "encoding": encoding}


def _fresh(shared: dict[str, Any]) -> dict[str, Any]:
    """The namespace with its own copies of what an example may change (models, modules), so
    that no example sees another's training or hooks."""
    names = dict(shared)
    for key in ("model", "code_transformer", "mha", "encoder"):
        names[key] = copy.deepcopy(shared[key])
    names["transformer"] = names["model"]
    names["rollout"] = shared["AttentionRollout"](names["model"])
    names["chefer"] = shared["CheferRelevance"](names["model"])
    return names


@pytest.fixture(scope="session")
def _doctest_files(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("doctest-files")
    return root, _build(root)


@pytest.fixture(autouse=True)
def _doctest_setup(request, monkeypatch, tmp_path):
    """For doctests only: the namespace above and a fresh working folder."""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    root, shared = request.getfixturevalue("_doctest_files")
    names = _fresh(shared)
    for path in root.iterdir():  # copies: an example may write over them
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    request.getfixturevalue("doctest_namespace").update(names)
    yield


#: Modules whose examples are not run yet (see the module docstring).
collect_ignore = [
    "src/ehrlens/app/meds.py",
    "src/ehrlens/data/meds.py",
    "src/ehrlens/explain/ray_engine.py",
    "src/ehrlens/integrations",
]
