"""Code-level vs visit-level attention: which diagnosis, not which visit.

One synthetic cohort with visits (:func:`ehrlens.data.generate_cohort`, ``layout="nested"``):
labels are driven by planted codes placed inside visits that also hold frequent background
codes and, often, each planted code's distractor (a code that co-occurs with it without
causing the label). The same patients, split 0.7/0.15/0.15, train a visit-level
:class:`~ehrlens.models.Transformer` (each visit mean-pooled into one token) and a
:class:`~ehrlens.models.CodeTransformer` (BEHRT-style, every code a token). On the test split:

- test AUROC of each model, with a 95 % percentile-bootstrap interval over test patients;
- per method, **signal AUROC within visits**
  (:func:`ehrlens.metrics.within_visit_signal_auroc`): planted codes against the other codes
  of their own visit, averaged per patient (0.5 is a tie);
- comprehensiveness / sufficiency and the cohort-level signal AUROC of the
  :class:`ehrlens.metrics.Evaluator` (as in ``benchmarks/faithfulness.py``).

Intervals are percentile-bootstrap intervals of the mean over test patients. Methods:
rollout, flow, Chefer, integrated gradients, random; on the visit-level model also
``VisitScoreSplit`` of rollout and Chefer (gradient x input shares), the derived code-level
split.

    python benchmarks/codelevel.py            # full run
    python benchmarks/codelevel.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ehrlens
from ehrlens.app.workflow import train_on_cohort
from ehrlens.data import get_dataloader, move_to_device
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    IntegratedGradients,
    RandomBaseline,
    VisitScoreSplit,
)
from ehrlens.metrics import Evaluator, bootstrap_interval, within_visit_signal_auroc
from ehrlens.metrics.prediction import compute_metrics
from ehrlens.models import CodeTransformer, Transformer

MODELS = {
    "Transformer (visit tokens)": Transformer,
    "CodeTransformer (code tokens)": CodeTransformer,
}
HPARAMS = {"embedding_dim": 64, "heads": 4, "num_layers": 2}
QUICK_HPARAMS = {"embedding_dim": 16, "heads": 2, "num_layers": 1}

#: name -> (builder(model, ig_steps), visit-level model only)
METHODS: dict[str, tuple[Callable[[Any, int], Any], bool]] = {
    "random": (lambda m, s: RandomBaseline(m, seed=0), False),
    "rollout": (lambda m, s: AttentionRollout(m), False),
    "flow": (lambda m, s: AttentionFlow(m, n_jobs=1), False),
    "chefer": (lambda m, s: CheferRelevance(m), False),
    "visit_split(rollout)": (lambda m, s: VisitScoreSplit(m, method="rollout"), True),
    "visit_split(chefer)": (lambda m, s: VisitScoreSplit(m, method="chefer"), True),
    "integrated_gradients": (lambda m, s: IntegratedGradients(m, n_steps=s), False),
}
SUMMARIES = ("comprehensiveness", "sufficiency", "signal_auroc")


class Explainer:
    """A method called under ``torch.inference_mode()`` when its class is gradient-free."""

    def __init__(self, method: Any) -> None:
        self.method = method

    def attribute(self, target_class_idx: Any = None, **batch: Any) -> dict[str, torch.Tensor]:
        context = torch.inference_mode() if type(self.method).gradient_free else nullcontext()
        with context:
            return self.method.attribute(target_class_idx, **batch)


def summary(values: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, float]:
    s = bootstrap_interval(values, n_bootstrap, seed)
    return {"mean": s.mean, "low": s.low, "high": s.high, "n": s.n}


def auroc_interval(model: Any, test: Any, n_bootstrap: int, seed: int) -> dict[str, float]:
    """Test AUROC and a percentile-bootstrap interval over test patients."""
    probs, labels = [], []
    with torch.inference_mode():
        for batch in get_dataloader(test, 256):
            batch = move_to_device(batch, model.device)
            probs.append(model(**batch)["y_prob"][:, 0].cpu().numpy())
            labels.append(batch["label"].reshape(-1).cpu().numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, len(y), len(y))
        if len(set(y[index].tolist())) == 2:
            draws.append(compute_metrics("binary", y[index], p[index], ["roc_auc"])["roc_auc"])
    low, high = np.percentile(draws, [2.5, 97.5])
    value = compute_metrics("binary", y, p, ["roc_auc"])["roc_auc"]
    return {"mean": float(value), "low": float(low), "high": float(high), "n": len(y)}


def evaluate_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    run = train_on_cohort(
        MODELS[name],
        QUICK_HPARAMS if args.quick else HPARAMS,
        n_patients=args.patients,
        layout="nested",
        seed=args.seed,
        epochs=args.epochs,
        lr=args.lr,
        device=args.device,
    )
    model, test, cohort = run.model.eval(), run.test, run.cohort
    record: dict[str, Any] = {
        "hparams": dict(model.hparams),
        "n_train": len(run.train),
        "n_test": len(test),
        "train_seconds": run.train_seconds,
        "oracle_test_roc_auc": run.oracle_roc_auc,
        "test_roc_auc": auroc_interval(model, test, args.n_bootstrap, args.seed),
        "methods": {},
    }
    print(
        f"{name}: test AUROC {record['test_roc_auc']['mean']:.3f} (noise-free risk "
        f"{run.oracle_roc_auc:.3f}), trained in {run.train_seconds:.0f} s",
        flush=True,
    )
    evaluator = Evaluator(
        model,
        ground_truth=cohort.ground_truth,
        sample_filter="all",
        target="predicted",
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    loader = get_dataloader(test, args.batch_size)
    for method_name, (build, visit_only) in METHODS.items():
        if (visit_only and MODELS[name] is not Transformer) or method_name not in args.methods:
            continue
        method = build(model, args.ig_steps)
        start = time.perf_counter()
        within = []
        for batch in loader:
            batch = move_to_device(batch, model.device)
            scores = Explainer(method).attribute(**batch)
            within.append(
                within_visit_signal_auroc(scores, batch, model.schema, cohort.ground_truth)
            )
        record["methods"][method_name] = {
            "within_visit_signal_auroc": summary(
                np.concatenate(within), args.n_bootstrap, args.seed
            ),
        }
        if args.faithfulness:
            result = evaluator.evaluate(loader, Explainer(method), name=method_name)
            record["methods"][method_name].update(
                {
                    key: {"mean": s.mean, "low": s.low, "high": s.high, "n": s.n}
                    for key, s in result.summaries.items()
                    if key in SUMMARIES
                }
            )
        record["methods"][method_name]["seconds"] = time.perf_counter() - start
        close = getattr(method, "close", None)
        if close is not None:
            close()
        print(f"  {method_name}: {time.perf_counter() - start:.1f} s", flush=True)
    return record


def _interval(s: dict[str, float] | None) -> str:
    if s is None:
        return "–"
    if not np.isfinite(s["mean"]):
        return "nan"
    return f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def table(report: dict[str, Any]) -> str:
    lines = [
        "| model | method | signal AUROC within visits ↑ | signal AUROC (cohort) ↑ "
        "| comprehensiveness ↑ | sufficiency ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for name, record in report["models"].items():
        for method, m in record["methods"].items():
            lines.append(
                f"| {name} | {method} | {_interval(m['within_visit_signal_auroc'])} | "
                f"{_interval(m.get('signal_auroc'))} | "
                f"{_interval(m.get('comprehensiveness'))} | {_interval(m.get('sufficiency'))} |"
            )
    lines += ["", "| model | test AUROC | noise-free risk AUROC | train s |", "|---|---|---|---:|"]
    for name, record in report["models"].items():
        lines.append(
            f"| {name} | {_interval(record['test_roc_auc'])} | "
            f"{record['oracle_test_roc_auc']:.3f} | {record['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--models", default="visit,code", help="comma-separated subset of visit, code"
    )
    parser.add_argument(
        "--no-faithfulness",
        dest="faithfulness",
        action="store_false",
        help="skip the Evaluator (comprehensiveness, sufficiency, cohort signal AUROC)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where to train and explain"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/codelevel.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.quick:
        args.patients, args.epochs, args.ig_steps, args.n_bootstrap = 120, 1, 4, 50
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/codelevel.py", *argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "ehrlens": ehrlens.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
        },
        "models": {
            name: evaluate_model(name, args)
            for short, name in zip(("visit", "code"), MODELS, strict=True)
            if short in args.models.split(",")
        },
    }
    report["seconds"] = time.perf_counter() - start
    print()
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True, default=float))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
