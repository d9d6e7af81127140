"""Abnar & Zuidema (ACL 2020), Tables 1-2, on clinical-like data: raw attention, rollout and
flow per layer against blank-out and input-gradient importance (Spearman).

A 6-layer :class:`~ehrlens.models.Transformer` (one encoder with a [CLS] token per feature:
diagnoses, procedures, drugs) is trained on a synthetic cohort (layout ``"sequence"``). For
every test patient and every layer ``l = 1..6``:

- **raw attention**: the [CLS] row of layer ``l``'s head-mean map, [CLS] column dropped;
- **rollout**: the [CLS] row of ``A_hat_l ... A_hat_1`` with ``A_hat = 0.5 * (A + I)``
  (head-mean ``A``), [CLS] column dropped;
- **flow**: :func:`ehrlens.interpret.methods.maxflow.flow_values` on the ``A_hat`` stack of
  layers ``1..l`` with a one-hot readout at [CLS] (position 0), position 0 dropped.

Maps are captured once per batch (``set_attention_hooks(True, capture_gradients=False)``, a
forward under ``torch.inference_mode()``, ``get_attention_layers()``). The references, per
real code position:

- **blank-out**: the drop in the probability of the predicted class when that single code is
  set to the pad id 0 (leave-one-code-out, every ablation of a batch run in chunks);
- **input gradients**: ``|sum_d d logit / d e_d|`` at the code's embedding ``e`` (the output
  of the feature's per-unit embedding module, ``model.get_embedding_layers()``).

Scope: the positions of all three code features of a patient are concatenated (closest to
the paper's view of one whole input), so each method's scores from the three encoders are
ranked together; the JSON also holds the same tables per feature (one encoder at a time).
For each patient with at least 3 real codes in the scope, the Spearman correlation between a
method's scores and a reference is computed over those codes; tables give mean ± std over
patients (``nan`` correlations, from constant scores, are left out and counted).

Also printed (means only) and in the JSON: the same correlations over predicted-positive and
predicted-negative patients apart (blank-out is signed: blanking a code that raises the risk
of a patient predicted negative *raises* the predicted class's probability), and within one
encoder (the first feature alone), where all scores come from the same attention maps.

    python benchmarks/paper_table.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/paper_table.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import ehrlens
from ehrlens.app.workflow import train_on_cohort
from ehrlens.data import get_dataloader
from ehrlens.data.processors import PAD_ID
from ehrlens.interpret import AttentionFlow, AttentionRollout
from ehrlens.interpret.methods.maxflow import flow_values
from ehrlens.models import Transformer

METHODS = ("raw_attention", "rollout", "flow")
REFERENCES = ("blank_out", "input_gradient")
LABELS = {
    "raw_attention": "raw attention",
    "rollout": "rollout",
    "flow": "flow",
    "blank_out": "blank-out",
    "input_gradient": "input gradients",
}
MIN_CODES = 3


# ----------------------------------------------------------------------------- scores
def attention_scores(model: Transformer, batch: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """Raw attention, rollout and flow of every layer: ``{method: {key: [L x [b, seq]]}}``.

    Flow is solved on each patient's real positions only ([CLS] and its codes): padded
    positions receive no attention as keys, so no flow leaves them towards [CLS] and dropping
    them changes no value.
    """
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.inference_mode():
            model(**batch)
        layers = model.get_attention_layers()
        fused = {
            key: torch.stack([a.double().mean(dim=1) for a, _ in maps], dim=1).clone()
            for key, maps in layers.items()
        }  # [b, L, s, s]
    finally:
        model.set_attention_hooks(False)
    out: dict[str, dict[str, list]] = {m: {} for m in METHODS}
    for key, maps in fused.items():
        batch_size, n_layers, seq, _ = maps.shape
        eye = torch.eye(seq, dtype=maps.dtype)
        a_hat = 0.5 * (maps + eye)
        real = (batch[key] != PAD_ID).numpy()
        raw, rolled, flows = [], [], []
        product = eye.expand(batch_size, seq, seq)
        for layer in range(n_layers):
            raw.append(maps[:, layer, 0, 1:])
            product = torch.bmm(a_hat[:, layer], product)
            rolled.append(product[:, 0, 1:])
            flow = np.zeros((batch_size, seq - 1))
            for b in range(batch_size):
                positions = np.concatenate([[0], 1 + np.flatnonzero(real[b])])
                if len(positions) == 1:
                    continue
                sub = a_hat[b, : layer + 1][:, positions][:, :, positions].numpy()
                readout = np.zeros(len(positions))
                readout[0] = 1.0
                flow[b, positions[1:] - 1] = flow_values(sub, readout)[1:]
            flows.append(torch.from_numpy(flow))
        out["raw_attention"][key] = raw
        out["rollout"][key] = rolled
        out["flow"][key] = flows
    return out


def _class_probability(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.where(target == 1, probability, 1 - probability)


def blank_out_scores(
    model: Transformer, batch: Mapping[str, Any], chunk: int = 1024
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Drop of the predicted class's probability when one code is set to the pad id.

    Returns ``({key: [b, seq]}, predicted class [b])``, scores 0 at padding. Every
    (patient, code) ablation of the batch is one row of a big ablated batch, run in chunks of
    ``chunk`` rows.
    """
    keys = model.feature_keys
    inputs = {key: batch[key] for key in keys}
    with torch.inference_mode():
        base = model(**inputs, masks={}, times={})["y_prob"][:, 0].double()
        target = (base >= 0.5).long()
        base = _class_probability(base, target)
        units = [
            (key, torch.nonzero(inputs[key] != PAD_ID, as_tuple=False)) for key in keys
        ]  # per key: [n_units, 2] rows of (patient, position)
        patient = torch.cat([u[:, 0] for _, u in units])
        position = torch.cat([u[:, 1] for _, u in units])
        owner = torch.cat([torch.full((len(u),), i) for i, (_, u) in enumerate(units)])
        drops = torch.empty(len(patient), dtype=torch.float64)
        for start in range(0, len(patient), chunk):
            rows = slice(start, start + chunk)
            p, pos, own = patient[rows], position[rows], owner[rows]
            ablated = {}
            for i, key in enumerate(keys):
                values = inputs[key][p].clone()
                mine = torch.nonzero(own == i, as_tuple=False)[:, 0]
                values[mine, pos[mine]] = PAD_ID
                ablated[key] = values
            probability = model(**ablated, masks={}, times={})["y_prob"][:, 0].double()
            drops[rows] = base[p] - _class_probability(probability, target[p])
    out = {key: torch.zeros(inputs[key].shape, dtype=torch.float64) for key in keys}
    for i, key in enumerate(keys):
        mine = owner == i
        out[key][patient[mine], position[mine]] = drops[mine]
    return out, target


def gradient_scores(model: Transformer, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``|sum over the embedding dim of d logit / d embedding|`` per code: ``{key: [b, seq]}``."""
    layers = model.get_embedding_layers()
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.register_forward_hook(
            lambda module, args, output, key=key: outputs.__setitem__(key, output)
        )
        for key, layer in layers.items()
    ]
    try:
        with torch.enable_grad():
            logit = model(**{key: batch[key] for key in model.feature_keys}, masks={}, times={})[
                "logit"
            ][:, 0]
            keys = list(outputs)
            grads = torch.autograd.grad(logit.sum(), [outputs[k] for k in keys])
    finally:
        for handle in handles:
            handle.remove()
    return {
        key: grad.detach().sum(dim=-1).abs().double() * (batch[key] != PAD_ID)
        for key, grad in zip(keys, grads, strict=True)
    }


# ----------------------------------------------------------------------------- correlation
def spearman_rows(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Spearman's rho of every row of ``rows`` ``[k, n]`` with ``reference`` ``[n]``.

    Pearson correlation of average ranks (ties share their mean rank), as
    :func:`scipy.stats.spearmanr`; ``nan`` where a row or the reference is constant.
    """
    ranks = stats.rankdata(rows, axis=1)
    ranked = stats.rankdata(reference)
    ranks = ranks - ranks.mean(axis=1, keepdims=True)
    ranked = ranked - ranked.mean()
    denominator = np.sqrt((ranks**2).sum(axis=1) * (ranked**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks @ ranked) / denominator
    return np.where(denominator > 0, np.clip(rho, -1.0, 1.0), np.nan)


def patient_vectors(
    scores: Mapping[str, torch.Tensor], real: Mapping[str, np.ndarray], b: int, keys: Sequence[str]
) -> np.ndarray:
    """One patient's scores at its real codes, features concatenated in ``keys`` order."""
    return np.concatenate([scores[k][b].numpy()[real[k][b]] for k in keys])


def summarize(values: list[float], n_patients: int) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        "n": int(finite.size),
        "n_nan": int(array.size - finite.size),
        "n_patients": n_patients,
    }


# ----------------------------------------------------------------------------- run
def train(args: argparse.Namespace) -> tuple[Transformer, Any, dict[str, Any]]:
    run = train_on_cohort(
        Transformer,
        {"embedding_dim": args.dim, "heads": args.heads, "num_layers": args.layers},
        n_patients=args.patients,
        layout="sequence",
        seed=args.seed,
        epochs=args.epochs,
        lr=args.lr,
        device=args.device,
    )
    # The analysis (per-token ablations, graph flows) is written for CPU tensors.
    model, cohort, test = run.model.cpu(), run.cohort, run.test
    record = {
        "positive_rate": cohort.positive_rate,
        "n_train": len(run.train),
        "n_val": len(run.val),
        "n_test_split": len(test),
        "hparams": {**model.hparams},
        "feature_keys": list(model.feature_keys),
        "epochs": args.epochs,
        "lr": args.lr,
        "train_seconds": run.train_seconds,
        "history": run.history,
        "test_roc_auc": run.test_metrics["roc_auc"],
        "test_pr_auc": run.test_metrics["pr_auc"],
        "oracle_test_roc_auc": run.oracle_roc_auc,
    }
    if args.test_patients is not None and args.test_patients < len(test):
        test = test.subset(range(args.test_patients))
    return model, test, record


def check_against_ehrlens(
    model: Transformer, batch: Mapping[str, Any], methods: Mapping[str, Mapping[str, list]]
) -> dict[str, float]:
    """Largest difference of the last layer's rollout / flow to ehrlens's own interpreters."""
    with torch.inference_mode():
        rollout = AttentionRollout(model).attribute(**batch)
        flow = AttentionFlow(model, normalize=False).attribute(**batch)
    out = {}
    for name, theirs in (("rollout", rollout), ("flow", flow)):
        out[f"{name}_max_abs_diff_vs_ehrlens"] = max(
            float((methods[name][key][-1] - theirs[key].double()).abs().max())
            for key in model.feature_keys
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, test, record = train(args)
    print(
        f"Transformer ({args.layers} layers): test AUROC {record['test_roc_auc']:.3f} "
        f"(noise-free risk {record['oracle_test_roc_auc']:.3f}), trained in "
        f"{record['train_seconds']:.0f} s; scoring {len(test)} test patients",
        flush=True,
    )
    keys = list(model.feature_keys)
    scopes = {"all": keys, **{key: [key] for key in keys}}
    records: list[dict[str, Any]] = []  # one per test patient
    seconds = {"attention": 0.0, "blank_out": 0.0, "input_gradient": 0.0, "spearman": 0.0}
    checks: dict[str, float] = {}
    for index, batch in enumerate(get_dataloader(test, args.batch_size)):
        start = time.perf_counter()
        methods = attention_scores(model, batch)
        seconds["attention"] += time.perf_counter() - start
        start = time.perf_counter()
        blank_out, predicted = blank_out_scores(model, batch)
        references = {"blank_out": blank_out}
        seconds["blank_out"] += time.perf_counter() - start
        start = time.perf_counter()
        references["input_gradient"] = gradient_scores(model, batch)
        seconds["input_gradient"] += time.perf_counter() - start
        if index == 0:
            checks = check_against_ehrlens(model, batch, methods)
        start = time.perf_counter()
        real = {key: (batch[key] != PAD_ID).numpy() for key in keys}
        for b in range(len(batch["patient_id"])):
            patient = {
                "predicted": int(predicted[b]),
                "n_codes": sum(int(real[k][b].sum()) for k in keys),
                "correlations": {},
                "agreement": {},
            }
            for scope, scope_keys in scopes.items():
                if sum(int(real[k][b].sum()) for k in scope_keys) < MIN_CODES:
                    continue
                refs = [patient_vectors(references[r], real, b, scope_keys) for r in REFERENCES]
                rows = np.stack(
                    [
                        patient_vectors(
                            {k: s[layer] for k, s in methods[m].items()}, real, b, scope_keys
                        )
                        for m in METHODS
                        for layer in range(args.layers)
                    ]
                )  # [methods * layers, codes]
                patient["correlations"][scope] = np.stack(
                    [spearman_rows(rows, ref) for ref in refs]
                ).reshape(len(REFERENCES), len(METHODS), args.layers)
                patient["agreement"][scope] = float(spearman_rows(refs[0][None], refs[1])[0])
            records.append(patient)
        seconds["spearman"] += time.perf_counter() - start

    def tables(scope: str, predicted: int | None = None) -> dict[str, Any]:
        chosen = [
            r["correlations"][scope]
            for r in records
            if scope in r["correlations"] and predicted in (None, r["predicted"])
        ]
        values = (
            np.stack(chosen)
            if chosen
            else np.full((0, len(REFERENCES), len(METHODS), args.layers), math.nan)
        )
        return {
            reference: {
                method: [
                    {"layer": layer + 1, **summarize(values[:, i, j, layer], len(chosen))}
                    for layer in range(args.layers)
                ]
                for j, method in enumerate(METHODS)
            }
            for i, reference in enumerate(REFERENCES)
        }

    def used(scope: str, predicted: int | None = None) -> int:
        return sum(
            scope in r["correlations"] and predicted in (None, r["predicted"]) for r in records
        )

    return {
        "training": record,
        "n_test_scored": len(records),
        "n_predicted_positive": sum(r["predicted"] for r in records),
        "mean_codes_per_patient": float(np.mean([r["n_codes"] for r in records]))
        if records
        else math.nan,
        "patients_used": {scope: used(scope) for scope in scopes},
        "checks": checks,
        "seconds": seconds,
        "reference_agreement": {
            scope: summarize(
                [r["agreement"][scope] for r in records if scope in r["agreement"]], used(scope)
            )
            for scope in scopes
        },
        "correlations": tables("all"),
        "by_predicted_class": {
            "positive": {"patients_used": used("all", 1), **tables("all", 1)},
            "negative": {"patients_used": used("all", 0), **tables("all", 0)},
        },
        "per_feature": {key: {"patients_used": used(key), **tables(key)} for key in keys},
    }


def table(correlations: Mapping[str, Any], reference: str) -> str:
    lines = [
        "| layer | " + " | ".join(LABELS[m] for m in METHODS) + " |",
        "|---:|" + "---|" * len(METHODS),
    ]
    n_layers = len(correlations[reference][METHODS[0]])
    for layer in range(n_layers):
        cells = []
        for method in METHODS:
            c = correlations[reference][method][layer]
            cells.append(
                "nan" if not math.isfinite(c["mean"]) else f"{c['mean']:.2f} ± {c['std']:.2f}"
            )
        lines.append(f"| {layer + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def means_table(groups: Mapping[str, tuple[Mapping[str, Any], str]]) -> str:
    """Means only, side by side: ``{group title: (tables, reference)}``."""
    header, rule, n_layers = ["layer"], ["---:"], 0
    for title, (tables, reference) in groups.items():
        for method in METHODS:
            header.append(f"{LABELS[method]} ({title})")
            rule.append("---:")
        n_layers = len(tables[reference][METHODS[0]])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for layer in range(n_layers):
        cells = [str(layer + 1)]
        for tables, reference in groups.values():
            for method in METHODS:
                mean = tables[reference][method][layer]["mean"]
                cells.append("nan" if not math.isfinite(mean) else f"{mean:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, well under 2 minutes")
    parser.add_argument("--patients", type=int, default=None, help="cohort size (3000)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (6)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=None, help="embedding dim (64)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (4)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--test-patients", type=int, default=None, help="score only the first N test patients"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/paper_table.json"))
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where to train (analysis: CPU)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.quick:
        args.patients = args.patients or 400
        args.epochs = args.epochs or 2
        args.dim = args.dim or 16
        args.heads = args.heads or 2
        args.test_patients = args.test_patients or 32
    else:
        args.patients = args.patients or 3000
        args.epochs = args.epochs or 6
        args.dim = args.dim or 64
        args.heads = args.heads or 4
    logging.getLogger("ehrlens").setLevel(logging.WARNING)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        threads = torch.get_num_threads()
        report = run(args)
    finally:
        torch.set_num_threads(threads_before)
    total_s = time.perf_counter() - start
    used = report["patients_used"]["all"]
    scope = "all three code features of a patient concatenated"
    for reference in REFERENCES:
        print(
            f"\nSpearman correlation with {LABELS[reference]} ({scope}; mean ± std over "
            f"{used} of {report['n_test_scored']} test patients with >= {MIN_CODES} codes)\n"
        )
        print(table(report["correlations"], reference))
    split = report["by_predicted_class"]
    n_pos, n_neg = split["positive"]["patients_used"], split["negative"]["patients_used"]
    print(
        f"\nMeans by predicted class (same scope; predicted positive n={n_pos}, "
        f"negative n={n_neg})\n"
    )
    for reference in REFERENCES:
        print(f"{LABELS[reference]}:\n")
        print(
            means_table(
                {f"pred. {label}": (split[label], reference) for label in ("positive", "negative")}
            )
        )
        print()
    first = report["training"]["feature_keys"][0]
    print(
        f"Means within one encoder ({first} only; "
        f"{report['per_feature'][first]['patients_used']} patients)\n"
    )
    print(means_table({LABELS[r]: (report["per_feature"][first], r) for r in REFERENCES}))
    agree = report["reference_agreement"]["all"]
    print(
        f"\nblank-out vs input gradients: {agree['mean']:.2f} ± {agree['std']:.2f}; "
        f"checks: {', '.join(f'{k} {v:.1e}' for k, v in report['checks'].items())}"
    )
    meta = {
        "ehrlens": ehrlens.__version__,
        "torch": torch.__version__,
        "scipy": __import__("scipy").__version__,
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "quick": args.quick,
        "patients": args.patients,
        "seed": args.seed,
        "layout": "sequence",
        "layers": args.layers,
        "embedding_dim": args.dim,
        "heads": args.heads,
        "epochs": args.epochs,
        "lr": args.lr,
        "test_patients": args.test_patients,
        "scope": "all",
        "scope_description": scope + " (per_feature: one encoder at a time)",
        "min_codes": MIN_CODES,
        "head_fusion": "mean",
        "blank_out": "predicted-class probability drop, one code set to the pad id 0",
        "input_gradient": "|sum over embedding dim of d logit / d per-unit embedding output|",
        "total_s": total_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **report}, indent=2))
    print(f"\ntotal {total_s:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
