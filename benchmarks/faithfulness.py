"""Faithfulness and planted-signal recovery of every ehrlens method on trained clinical models.

A synthetic cohort (:func:`ehrlens.data.generate_cohort`, labels driven by planted signal
codes) is generated twice from the same seed, once per layout: ``"sequence"`` for a
:class:`~ehrlens.models.Transformer` and ``"stagenet"`` for a
:class:`~ehrlens.models.StageAttentionNet` (same patients, labels and ground truth). Each
model is trained with :class:`ehrlens.Trainer` on a 0.7/0.15/0.15 patient split (best
validation AUROC kept), and every method is scored on the test split by
:class:`ehrlens.metrics.Evaluator`:

- comprehensiveness / sufficiency (ERASER, averaged over removing / keeping the top 1, 5, 10,
  20, 50 % of each patient's codes; codes are removed by setting them to the pad id);
- precision@5 and signal AUROC of the planted codes (the cohort's ground truth);
- seconds of attribution per 1000 patients (metrics excluded).

Intervals are 95 % percentile-bootstrap intervals of the mean over test patients. Because
every method is scored on the same patients, the report also gives each method's paired
difference to ``RandomBaseline`` with its own bootstrap interval.

Methods: ``RandomBaseline``, ``RawAttention(layer=-1)``, ``AttentionRollout``,
``AttentionFlow(n_jobs=1)``, ``CheferRelevance``, ``AttnLRP`` (models with AttnLRP rules;
skipped for the others), ``InputXGradient``,
``IntegratedGradients(n_steps=50)``. The forward-only ones run under
``torch.inference_mode()``. Explained class: the ``Evaluator`` asks each method to explain the
class its removal metrics measure. ``--target predicted`` (default) measures and explains each
patient's predicted class; ``--target positive`` measures and explains class 1 for every
patient, the class the planted codes raise. The forward-only methods are class-agnostic
either way.

    python benchmarks/faithfulness.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/faithfulness.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ehrlens
from ehrlens.app.workflow import fit_on_splits, train_on_cohort
from ehrlens.data import create_sample_dataset, get_dataloader, move_to_device
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
)
from ehrlens.interpret.api import capabilities
from ehrlens.metrics import (
    DataRandomisation,
    EvaluationResult,
    Evaluator,
    ModelParameterRandomisation,
    bootstrap_interval,
)
from ehrlens.models import StageAttentionNet, Transformer

MODELS = {
    "Transformer": ("sequence", Transformer),
    "StageAttentionNet": ("stagenet", StageAttentionNet),
}
HPARAMS = {
    "Transformer": {"embedding_dim": 64, "heads": 4, "num_layers": 2},
    "StageAttentionNet": {"embedding_dim": 64, "chunk_size": 32, "levels": 3, "heads": 4},
}
QUICK_HPARAMS = {
    "Transformer": {"embedding_dim": 16, "heads": 2, "num_layers": 2},
    "StageAttentionNet": {
        "embedding_dim": 16,
        "chunk_size": 8,
        "levels": 2,
        "heads": 2,
        "conv_size": 3,
    },
}
#: Printed metrics: (Evaluator metric name, column title).
COLUMNS = (
    ("comprehensiveness", "comprehensiveness ↑"),
    ("sufficiency", "sufficiency ↓"),
    ("precision@5", "precision@5 ↑"),
    ("signal_auroc", "signal AUROC ↑"),
)
BASELINE = "RandomBaseline"
#: Cascading randomisation steps of the sanity check, output side first (glob patterns).
SANITY_LAYERS = {
    "Transformer": ["head", "encoders.*.norm", "encoders.*.blocks.1", "encoders.*.blocks.0", "*"],
    "StageAttentionNet": ["head", "norms.*", "blocks.*", "projections.*", "stagenets.*", "*"],
}


class Explainer:
    """What :meth:`Evaluator.evaluate` calls: a method, under ``torch.inference_mode()`` when
    its class declares ``gradient_free``. The Evaluator passes the class to explain as
    ``target_class_idx``."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.forward_only = type(method).gradient_free

    def attribute(self, target_class_idx: Any = None, **batch: Any) -> dict[str, torch.Tensor]:
        context = torch.inference_mode() if self.forward_only else nullcontext()
        with context:
            return self.method.attribute(target_class_idx, **batch)

    def close(self) -> None:
        close = getattr(self.method, "close", None)
        if close is not None:
            close()


#: name -> (method class, options(ig_steps)); forward-only is the class's gradient_free.
METHODS: dict[str, tuple[type, Callable[[int], dict[str, Any]]]] = {
    "RandomBaseline": (RandomBaseline, lambda s: {"seed": 0}),
    "RawAttention (last layer)": (RawAttention, lambda s: {"layer": -1}),
    "AttentionRollout": (AttentionRollout, lambda s: {}),
    "AttentionFlow": (AttentionFlow, lambda s: {"n_jobs": 1}),
    "CheferRelevance": (CheferRelevance, lambda s: {}),
    "AttnLRP": (AttnLRP, lambda s: {}),
    "InputXGradient": (InputXGradient, lambda s: {}),
    "IntegratedGradients": (IntegratedGradients, lambda s: {"n_steps": s}),
}


def summary_dict(result: EvaluationResult) -> dict[str, Any]:
    """Every number of one method's evaluation (summaries, counts, time, curve)."""
    return {
        "n_patients": result.n_patients,
        "n_scored": result.n_scored,
        "seconds_per_1000": result.seconds_per_1000,
        "summaries": {
            name: {"mean": s.mean, "low": s.low, "high": s.high, "n": s.n}
            for name, s in result.summaries.items()
        },
        "curve": result.curve,
    }


def paired_difference(
    result: EvaluationResult, baseline: EvaluationResult, n_bootstrap: int, seed: int
) -> dict[str, dict[str, float]]:
    """Mean per-patient difference to the baseline, with a bootstrap interval, per metric.

    Both methods were scored on the same patients in the same order (``sample_filter="all"``
    and the same loader), so the per-patient values pair up.
    """
    out = {}
    for name, _ in COLUMNS:
        mine, theirs = result.per_sample.get(name), baseline.per_sample.get(name)
        if mine is None or theirs is None or len(mine) != len(theirs):
            continue
        s = bootstrap_interval(mine - theirs, n_bootstrap, seed)
        out[name] = {"mean": s.mean, "low": s.low, "high": s.high, "n": s.n}
    return out


def by_predicted_class(
    result: EvaluationResult, predicted: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """The printed metrics over predicted-positive and predicted-negative patients apart."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, chosen in (
        ("predicted_positive", predicted == 1),
        ("predicted_negative", predicted == 0),
    ):
        out[label] = {}
        for name, _ in COLUMNS:
            values = result.per_sample.get(name)
            if values is None or len(values) != len(chosen):
                continue
            s = bootstrap_interval(values[chosen], n_bootstrap, seed)
            out[label][name] = {"mean": s.mean, "low": s.low, "high": s.high, "n": s.n}
    return out


def predicted_classes(model: Any, loader: Any) -> np.ndarray:
    """The class each patient is predicted, in loader order (what the metrics explain)."""
    out = []
    with torch.inference_mode():
        for batch in loader:
            batch = move_to_device(batch, model.device)
            out.append((model(**batch)["y_prob"][:, 0] >= 0.5).long().cpu().numpy())
    return np.concatenate(out)


def planted_ceiling(test, ground_truth: dict, k: int) -> dict[str, float]:
    """How much planted signal the test patients have: the best precision@k possible."""
    counts = np.array(
        [sum(len(c) for c in ground_truth[pid].values()) for pid in test.patient_ids], dtype=float
    )
    return {
        "mean_planted_codes": float(counts.mean()) if counts.size else math.nan,
        "fraction_with_planted": float((counts > 0).mean()) if counts.size else math.nan,
        f"precision@{k}_ceiling": float(np.minimum(counts, k).mean() / k)
        if counts.size
        else math.nan,
    }


def train_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Generate the cohort, split, train; return the model, test split and training record."""
    layout, model_class = MODELS[name]
    hparams = dict((QUICK_HPARAMS if args.quick else HPARAMS)[name])
    if name == "StageAttentionNet":
        hparams["readout"] = args.stagenet_readout
        if args.stagenet_attention_layers is not None:
            hparams["attention_layers"] = args.stagenet_attention_layers
    run = train_on_cohort(
        model_class,
        hparams,
        n_patients=args.patients,
        layout=layout,
        seed=args.seed,
        epochs=args.epochs,
        lr=args.lr,
        device=args.device,
    )
    model, cohort, test = run.model, run.cohort, run.test
    n_test_split = len(test)
    if args.test_patients is not None and args.test_patients < len(test):
        test = test.subset(range(args.test_patients))
    return {
        "model": model,
        "test": test,
        "cohort": cohort,
        "record": {
            "layout": layout,
            "hparams": {**model.hparams},
            "positive_rate": cohort.positive_rate,
            "n_train": len(run.train),
            "n_val": len(run.val),
            "n_test_split": n_test_split,
            "n_test_evaluated": len(test),
            "epochs": args.epochs,
            "lr": args.lr,
            "train_seconds": run.train_seconds,
            "history": run.history,
            "test_roc_auc": run.test_metrics["roc_auc"],
            "test_pr_auc": run.test_metrics["pr_auc"],
            "oracle_test_roc_auc": run.oracle_roc_auc,
            "planted_signal": planted_ceiling(test, cohort.ground_truth, args.k),
        },
    }


def evaluate_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    trained = train_model(name, args)
    model, test, cohort = trained["model"], trained["test"], trained["cohort"]
    record = trained["record"]
    print(
        f"{name}: test AUROC {record['test_roc_auc']:.3f} (noise-free risk "
        f"{record['oracle_test_roc_auc']:.3f}), trained in {record['train_seconds']:.0f} s; "
        f"evaluating {len(test)} test patients",
        flush=True,
    )
    evaluator = Evaluator(
        model,
        ground_truth=cohort.ground_truth,
        k=args.k,
        sample_filter="all",
        target="predicted" if args.target == "predicted" else 1,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    loader = get_dataloader(test, args.batch_size)
    results: dict[str, EvaluationResult] = {}
    for method_name, (method_class, options) in METHODS.items():
        if args.methods and method_name not in args.methods and method_name != BASELINE:
            continue
        if method_class is AttnLRP and not capabilities(model).lrp_rules:
            print(f"  {method_name}: skipped ({type(model).__name__} has no AttnLRP rules)")
            continue
        explainer = Explainer(method_class(model, **options(args.ig_steps)))
        start = time.perf_counter()
        try:
            results[method_name] = evaluator.evaluate(loader, explainer, name=method_name)
        finally:
            explainer.close()
        print(f"  {method_name}: {time.perf_counter() - start:.1f} s", flush=True)
    sanity = sanity_checks(name, model, test, results, args) if args.sanity else {}
    if args.data_randomisation:
        shuffled = data_randomisation(name, model, cohort, test, results, args)
        for method_name, records in shuffled.items():
            sanity.setdefault(method_name, []).extend(records)
    baseline = results[BASELINE]
    predicted = predicted_classes(model, loader)
    methods = {}
    for method_name, result in results.items():
        methods[method_name] = summary_dict(result)
        methods[method_name]["by_predicted_class"] = by_predicted_class(
            result, predicted, args.n_bootstrap, args.seed
        )
        if method_name != BASELINE:
            methods[method_name]["minus_random"] = paired_difference(
                result, baseline, args.n_bootstrap, args.seed
            )
        if method_name in sanity:
            methods[method_name]["sanity"] = sanity[method_name]
    record["n_predicted_positive"] = int(predicted.sum())
    record["n_predicted_negative"] = int(len(predicted) - predicted.sum())
    return {**record, "methods": methods}


def sanity_checks(
    name: str, model: Any, test: Any, results: dict[str, Any], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Cascading model-parameter randomisation of every evaluated method on the first
    ``--sanity-patients`` test patients: rank correlation with the trained model's explanation
    after each step (mean and bootstrap interval over patients)."""
    batch = next(iter(get_dataloader(test, args.sanity_patients)))
    out = {}
    for method_name in results:
        method_class, options = METHODS[method_name]
        check = ModelParameterRandomisation(
            method_class,
            options(args.ig_steps),
            layers=SANITY_LAYERS[name],
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
        )
        start = time.perf_counter()
        context = torch.inference_mode() if method_class.gradient_free else nullcontext()
        with context:
            result = check(model, batch)
        out[method_name] = result.to_records()
        print(f"  sanity {method_name}: {time.perf_counter() - start:.1f} s", flush=True)
    return out


def data_randomisation(
    name: str, model: Any, cohort: Any, test: Any, results: dict[str, Any], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Train the same architecture on the cohort with its labels shuffled (seeded), then
    rank-correlate each method's explanations of both models on the first
    ``--sanity-patients`` test patients (:class:`DataRandomisation`)."""
    rng = np.random.default_rng(args.seed)
    labels = [s["label"] for s in cohort.samples]
    order = rng.permutation(len(labels))
    samples = [{**s, "label": labels[j]} for s, j in zip(cohort.samples, order, strict=True)]
    dataset = create_sample_dataset(samples, schema=model.schema)
    start = time.perf_counter()
    fit = fit_on_splits(
        dataset, type(model), dict(model.hparams), epochs=args.epochs, lr=args.lr, seed=args.seed
    )
    print(f"  shuffled-label {name} trained in {time.perf_counter() - start:.0f} s", flush=True)
    batch = next(iter(get_dataloader(test, args.sanity_patients)))
    out = {}
    for method_name in results:
        method_class, options = METHODS[method_name]
        check = DataRandomisation(
            method_class, options(args.ig_steps), n_bootstrap=args.n_bootstrap, seed=args.seed
        )
        context = torch.inference_mode() if method_class.gradient_free else nullcontext()
        with context:
            out[method_name] = check(model, fit.model.eval(), batch).to_records()
    return out


def sanity_table(name: str, report: dict[str, Any]) -> str:
    """Rank correlation after each cascading randomisation step; * = interval below 0.5."""
    methods = {m: r["sanity"] for m, r in report["methods"].items() if "sanity" in r}
    if not methods:
        return ""
    steps = [row["step"] for row in next(iter(methods.values()))]
    lines = [
        f"{name}: sanity checks, rank correlation with the trained model's explanation "
        "(mean [95% CI] over patients; cascading randomisation down to the step named; "
        "`random_labels`: a model trained on shuffled labels)",
        "",
        "| method | " + " | ".join(f"`{s}`" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for method_name, rows in methods.items():
        cells = [_interval(row) for row in rows]
        lines.append(f"| {method_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(summary: dict[str, float]) -> str:
    if not math.isfinite(summary["mean"]):
        return "nan"
    return f"{summary['mean']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"


def table(name: str, report: dict[str, Any]) -> str:
    ceiling = report["planted_signal"]
    lines = [
        f"### {name} (test AUROC {report['test_roc_auc']:.3f}; "
        f"{report['methods'][BASELINE]['n_scored']} test patients scored, "
        f"{report['n_predicted_positive']} predicted positive; best possible precision@5 "
        f"{ceiling['precision@5_ceiling']:.3f})",
        "",
        "| method | " + " | ".join(title for _, title in COLUMNS) + " | s / 1000 patients |",
        "|---|" + "---|" * len(COLUMNS) + "---:|",
    ]
    for method_name, result in report["methods"].items():
        cells = [_interval(result["summaries"][metric]) for metric, _ in COLUMNS]
        lines.append(
            f"| {method_name} | " + " | ".join(cells) + f" | {result['seconds_per_1000']:.3g} |"
        )
    return "\n".join(lines)


def difference_table(name: str, report: dict[str, Any]) -> str:
    """Paired differences to RandomBaseline; ``*`` where the interval excludes 0."""
    lines = [
        f"{name}: method minus {BASELINE}, paired over patients (mean [95% CI]; "
        "* = interval excludes 0)",
        "",
        "| method | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for method_name, result in report["methods"].items():
        if method_name == BASELINE:
            continue
        cells = []
        for metric, _ in COLUMNS:
            d = result["minus_random"].get(metric)
            if d is None or not math.isfinite(d["mean"]):
                cells.append("nan")
                continue
            star = "*" if d["low"] > 0 or d["high"] < 0 else ""
            cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{star}")
        lines.append(f"| {method_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(name: str, report: dict[str, Any]) -> str:
    """Comprehensiveness and precision@5 over predicted-positive / -negative patients."""
    n_pos, n_neg = report["n_predicted_positive"], report["n_predicted_negative"]
    lines = [
        f"{name}: by predicted class (positive n={n_pos}, negative n={n_neg})",
        "",
        "| method | comprehensiveness, pred. positive | comprehensiveness, pred. negative "
        "| precision@5, pred. positive | precision@5, pred. negative |",
        "|---|---|---|---|---|",
    ]
    for method_name, result in report["methods"].items():
        split = result["by_predicted_class"]
        cells = [
            _interval(split[f"predicted_{label}"][metric])
            if metric in split[f"predicted_{label}"]
            else "nan"
            for metric in ("comprehensiveness", "precision@5")
            for label in ("positive", "negative")
        ]
        lines.append(f"| {method_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, well under 2 minutes")
    parser.add_argument("--patients", type=int, default=None, help="cohort size (3000)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (8)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5, help="cut-off of precision@k")
    parser.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap draws (1000)")
    parser.add_argument("--ig-steps", type=int, default=None, help="IG points (50)")
    parser.add_argument("--batch-size", type=int, default=64, help="test patients per batch")
    parser.add_argument(
        "--test-patients", type=int, default=None, help="evaluate only the first N test patients"
    )
    parser.add_argument(
        "--target",
        choices=("predicted", "positive"),
        default="predicted",
        help="class explained by Chefer and the gradient methods (see the module docstring)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=tuple(MODELS), default=list(MODELS), help="models to run"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=tuple(METHODS),
        default=None,
        help=f"methods to run ({BASELINE} always runs); default: all",
    )
    parser.add_argument(
        "--stagenet-readout",
        choices=("last", "mean"),
        default="last",
        help="StageAttentionNet readout: the last valid step (default) or the mean over steps",
    )
    parser.add_argument(
        "--stagenet-attention-layers",
        type=int,
        default=None,
        help="StageAttentionNet attention blocks (default: the model's, 1)",
    )
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="also run the cascading model-parameter randomisation check for each method",
    )
    parser.add_argument(
        "--data-randomisation",
        action="store_true",
        help="also train on shuffled labels and compare each method's explanations",
    )
    parser.add_argument(
        "--sanity-patients",
        type=int,
        default=64,
        help="test patients of the sanity check (one batch)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where to train and explain"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/faithfulness.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.quick:
        args.patients = args.patients or 400
        args.epochs = args.epochs or 2
        args.n_bootstrap = args.n_bootstrap or 100
        args.ig_steps = args.ig_steps or 8
        args.test_patients = args.test_patients or 32
        args.batch_size = min(args.batch_size, 16)
    else:
        args.patients = args.patients or 3000
        args.epochs = args.epochs or 8
        args.n_bootstrap = args.n_bootstrap or 1000
        args.ig_steps = args.ig_steps or 50
    logging.getLogger("ehrlens").setLevel(logging.WARNING)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        threads = torch.get_num_threads()
        reports = {name: evaluate_model(name, args) for name in args.models}
    finally:
        torch.set_num_threads(threads_before)
    total_s = time.perf_counter() - start
    for name, report in reports.items():
        print()
        print(table(name, report))
        print()
        print(difference_table(name, report))
        print()
        print(class_table(name, report))
        if args.sanity or args.data_randomisation:
            print()
            print(sanity_table(name, report))
    meta = {
        "ehrlens": ehrlens.__version__,
        "torch": torch.__version__,
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "quick": args.quick,
        "patients": args.patients,
        "seed": args.seed,
        "split": [0.7, 0.15, 0.15],
        "epochs": args.epochs,
        "lr": args.lr,
        "monitor": "roc_auc",
        "k": args.k,
        "n_bootstrap": args.n_bootstrap,
        "ig_steps": args.ig_steps,
        "batch_size": args.batch_size,
        "test_patients": args.test_patients,
        "sample_filter": "all",
        "ablation": "zero (codes set to the pad id)",
        "percentages": [1, 5, 10, 20, 50],
        "target": args.target,
        "methods": args.methods or list(METHODS),
        "sanity": args.sanity,
        "sanity_patients": args.sanity_patients,
        "data_randomisation": args.data_randomisation,
        "sanity_layers": SANITY_LAYERS,
        "stagenet_readout": args.stagenet_readout,
        "stagenet_attention_layers": args.stagenet_attention_layers,
        "forward_only_under_inference_mode": [
            n for n, (cls, _) in METHODS.items() if cls.gradient_free
        ],
        "total_s": total_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "models": reports}, indent=2))
    print(f"\ntotal {total_s:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
