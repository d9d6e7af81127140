"""ehrlens against the real PyHealth package: same weights, PyHealth's interpreters and ehrlens's.

Not part of the test suite (it needs PyHealth, which pins its own torch): run it in a
virtualenv with PyHealth, torch and ehrlens (``pip install --no-deps -e .``), e.g.

    venvs/pyhealth-2.0a13/bin/python benchmarks/pyhealth_check.py
    venvs/pyhealth-2.0.2/bin/python benchmarks/pyhealth_check.py

A synthetic binary task: a planted code ``PLANT`` (in ``conditions`` and in one visit of
``visits``) and the first lab value carry the label. PyHealth's ``Transformer`` (and, where
the release has it, ``StageAttentionNet``) is trained with PyHealth's ``Trainer``; PyHealth's
own ``CheferRelevance`` (and ``AttentionRollout``, 2.0.x) and ehrlens's run on the same
weights and batch, and the largest absolute difference over real inputs is reported, with
the planted code's AUROC among the real codes of the test patients. The models without
attention (StageNet, RETAIN, AdaCare, RNN) get ehrlens's gradient methods (and RETAIN its own
contributions); what either library refuses is recorded with its message. Prints a table and
writes ``benchmarks/out/pyhealth_check_<version>.json``.
"""

# ruff: noqa: E402  (the path is fixed before the imports it would break)
from __future__ import annotations

import sys
from pathlib import Path

# This folder has a distributed.py, which would hide the package dask imports for PyHealth.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import json
import platform
import random
import tempfile
import time
import traceback
from importlib.metadata import version as dist_version
from typing import Any

import torch
from pyhealth.datasets import create_sample_dataset, get_dataloader
from pyhealth.trainer import Trainer
from sklearn.metrics import roc_auc_score

from ehrlens.integrations import pyhealth as eh

PLANT = "PLANT"


def samples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = int(rng.random() < 0.5)
        conditions = [f"C{rng.randrange(30)}" for _ in range(rng.randint(4, 9))]
        visits = [[f"C{rng.randrange(30)}" for _ in range(rng.randint(1, 3))] for _ in range(3)]
        if label:
            conditions.insert(rng.randrange(len(conditions) + 1), PLANT)
            visits[rng.randrange(3)].append(PLANT)
        labs = [rng.gauss(1.5 * label, 1.0), rng.gauss(0, 1), rng.gauss(0, 1)]
        out.append(
            {
                "patient_id": f"p{i}",
                "visit_id": f"v{i}",
                "conditions": conditions,
                "labs": labs,
                "visits": visits,
                "stages": ([0.0, 30.0, 60.0], visits),
                "label": label,
            }
        )
    return out


def dataset(rows, schema, name):
    keep = [
        {k: v for k, v in r.items() if k in schema or k in ("patient_id", "visit_id", "label")}
        for r in rows
    ]
    return create_sample_dataset(
        samples=keep,
        input_schema=schema,
        output_schema={"label": "binary"},
        dataset_name=name,
    )


def train(model, data, epochs: int) -> float:
    loader = get_dataloader(data, batch_size=32, shuffle=True)
    start = time.perf_counter()
    trainer = Trainer(model=model, device="cpu", enable_logging=False)
    trainer.train(train_dataloader=loader, epochs=epochs, optimizer_params={"lr": 3e-3})
    model.eval()
    return time.perf_counter() - start


def value_of(feature):
    return feature[1] if isinstance(feature, (tuple, list)) else feature


def code_id(data, key: str) -> int:
    processor = data.input_processors[key]
    return int(processor.code_vocab[PLANT])


def compare(ours: dict, theirs: dict, batch: dict) -> dict[str, float]:
    """Largest |ehrlens - PyHealth| per feature over real inputs (visits: PyHealth 2.0a13
    scores visits, ehrlens each code of a visit with the visit's score)."""
    diffs = {}
    for key, mine in ours.items():
        other = theirs[key].detach().double()
        mine = mine.detach().double()
        values = value_of(batch[key])
        if values.is_floating_point():
            real = torch.ones_like(mine, dtype=torch.bool)
        elif values.dim() == 3 and other.dim() == 2:
            real = (values != 0).any(dim=-1)
            mine = mine[..., 0]
        else:
            real = values != 0
        if other.shape != mine.shape:
            diffs[key] = float("nan")
            continue
        diffs[key] = float((mine - other).abs()[real].max())
    return diffs


def planted_auroc(scores: dict, batch: dict, key: str, plant: int) -> float:
    values = value_of(batch[key])
    s = scores[key].detach().double()
    if s.dim() == 2 and values.dim() == 3:  # visit scores: each code gets its visit's
        s = s[..., None].expand(values.shape)
    real = values != 0
    truth = (values == plant)[real].numpy()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, s[real].numpy()))


def attempt(fn):
    try:
        return fn(), None
    except Exception as error:  # recorded: what a library refuses, with its message
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" ({Path(frame.filename).name}:{frame.lineno})"
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:240]}{where}"


def test_batch(data, n: int):
    loader = get_dataloader(data, batch_size=n, shuffle=False)
    return next(iter(loader))


def pyhealth_chefer(model, batch):
    from pyhealth.interpret.methods import CheferRelevance

    relevance = CheferRelevance(model)
    if hasattr(relevance, "_resolve_target_indices"):  # 2.0.x
        return relevance.attribute(**dict(batch))
    return relevance.get_relevance_matrix(**dict(batch))


def pyhealth_rollout(model, batch):
    from pyhealth.interpret.methods import AttentionRollout

    return AttentionRollout(model).attribute(**dict(batch))  # its hooks need autograd


def attention_model(rows, kind: str, epochs: int, seed: int) -> dict[str, Any]:
    import pyhealth.models as models

    torch.manual_seed(seed)
    if kind == "Transformer":
        schema = {"conditions": "sequence", "labs": "tensor", "visits": "nested_sequence"}
        plant_key = "conditions"
    else:
        schema = {"stages": "stagenet"}
        plant_key = "stages"
    data = dataset(rows, schema, f"check_{kind}")
    if kind == "Transformer":
        model = models.Transformer(data, embedding_dim=32, heads=2, num_layers=2, dropout=0.1)
    else:
        model = models.StageAttentionNet(data, embedding_dim=32, chunk_size=32, levels=2)
    seconds = train(model, data, epochs)
    batch = test_batch(data, 64)
    plant = code_id(data, plant_key)
    record: dict[str, Any] = {"model": kind, "train_s": round(seconds, 1)}
    record["interface"] = eh.interface_of(model)
    theirs, refused = attempt(lambda: pyhealth_chefer(model, batch))
    record["pyhealth_chefer_refused"] = refused
    ours, refused = attempt(lambda: eh.CheferRelevance(model).attribute(**dict(batch)))
    record["ehrlens_chefer_refused"] = refused
    if ours is not None:
        record["shapes"] = {k: list(v.shape) for k, v in ours.items()}
        record["auroc_ehrlens_chefer"] = planted_auroc(ours, batch, plant_key, plant)
    if ours is not None and theirs is not None:
        record["chefer_max_diff"] = compare(ours, theirs, batch)
        record["auroc_pyhealth_chefer"] = planted_auroc(theirs, batch, plant_key, plant)
    theirs, refused = attempt(lambda: pyhealth_rollout(model, batch))
    record["pyhealth_rollout_refused"] = refused
    ours, refused = attempt(lambda: eh.AttentionRollout(model).attribute(**dict(batch)))
    record["ehrlens_rollout_refused"] = refused
    if ours is not None and theirs is not None:
        record["rollout_max_diff"] = compare(ours, theirs, batch)
    if kind == "StageAttentionNet" and isinstance(batch["stages"], (tuple, list)):
        times, values = batch["stages"][:2]
        masked = dict(batch, stages=(times, values, (values != 0).int()))  # like the codes
        plain, _ = attempt(lambda: eh.CheferRelevance(model).attribute(**dict(batch)))
        trailing, refused = attempt(lambda: eh.CheferRelevance(model).attribute(**masked))
        record["trailing_mask_refused"] = refused
        if plain is not None and trailing is not None:
            record["trailing_mask_max_diff"] = max(
                float((plain[k] - trailing[k]).abs().max()) for k in plain
            )
    ig, refused = attempt(lambda: eh.IntegratedGradients(model, n_steps=32).attribute(**batch))
    record["ehrlens_ig_refused"] = refused
    if ig is not None:
        record["auroc_ehrlens_ig"] = planted_auroc(ig, batch, plant_key, plant)
    return record


def other_model(rows, kind: str, epochs: int, seed: int) -> dict[str, Any]:
    import pyhealth.models as models

    torch.manual_seed(seed)
    if kind == "StageNet":
        schema = {"stages": "stagenet"}
        key = "stages"
    elif kind == "RNN":  # 2.0a13's RNN does not train on visits of codes (its own error)
        schema = {"conditions": "sequence"}
        key = "conditions"
    else:
        schema = {"visits": "nested_sequence"}
        key = "visits"
    data = dataset(rows, schema, f"check_{kind}")
    record: dict[str, Any] = {"model": kind}
    model, refused = attempt(lambda: getattr(models, kind)(data, embedding_dim=32))
    if model is None:
        record["build_refused"] = refused
        return record
    seconds, refused = attempt(lambda: train(model, data, epochs))
    record["train_s"] = None if seconds is None else round(seconds, 1)
    record["train_refused"] = refused
    batch = test_batch(data, 64)
    plant = code_id(data, key)
    record["interface"] = eh.interface_of(model)
    _, refused = attempt(lambda: pyhealth_chefer(model, batch))
    record["pyhealth_chefer_refused"] = refused
    _, refused = attempt(lambda: eh.CheferRelevance(model))
    record["ehrlens_chefer_refused"] = refused
    methods = {
        "ig": lambda: eh.IntegratedGradients(model, n_steps=32).attribute(**dict(batch)),
        "input_x_gradient": lambda: eh.InputXGradient(model).attribute(**dict(batch)),
    }
    if kind == "RETAIN":
        methods["retain"] = lambda: eh.RetainContributions(model).attribute(**dict(batch))
    for name, run in methods.items():
        scores, refused = attempt(run)
        record[f"ehrlens_{name}_refused"] = refused
        if scores is not None:
            record[f"shape_{name}"] = list(scores[key].shape)
            record[f"auroc_ehrlens_{name}"] = planted_auroc(scores, batch, key, plant)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = samples(args.patients, args.seed)
    version = dist_version("pyhealth")  # pyhealth.__version__ says 1.1.4 in 2.0a13
    import pyhealth.models as models

    records = []
    with tempfile.TemporaryDirectory() as workdir:
        import os

        os.chdir(workdir)  # PyHealth writes its caches and outputs under the working dir
        for kind in ("Transformer", "StageAttentionNet"):
            if not hasattr(models, kind):
                records.append({"model": kind, "build_refused": f"not in pyhealth {version}"})
                continue
            record, error = attempt(lambda kind=kind: attention_model(rows, kind, args.epochs, 0))
            records.append(record or {"model": kind, "error": error})
        for kind in ("StageNet", "RETAIN", "AdaCare", "RNN"):
            record, error = attempt(lambda kind=kind: other_model(rows, kind, args.epochs, 0))
            records.append(record or {"model": kind, "error": error})
    result = {
        "pyhealth": version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "patients": args.patients,
        "epochs": args.epochs,
        "records": records,
    }
    print(f"PyHealth {version}, Python {platform.python_version()}, torch {torch.__version__}")
    for record in records:
        print(json.dumps(record, default=str))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pyhealth_check_{version}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        raise
