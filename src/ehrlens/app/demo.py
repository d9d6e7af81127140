"""End-to-end demo on built-in synthetic data: train, explain, and write the HTML report.

Run with ``python -m ehrlens.app.demo`` (``make demo``; about a minute on two CPU cores). It
generates a cohort with planted signal codes, trains a small
:class:`~ehrlens.models.Transformer` (progress shown), prints its test AUROC next to the best
achievable (the cohort's noise-free risk), explains the highest-risk test patients with
attention rollout, attention flow and Chefer relevance, prints which of their top codes were
planted, and ends by writing the HTML report and printing its path.

``--full`` is the full-size run: a larger cohort, wider models, more epochs, and a
:class:`~ehrlens.models.StageAttentionNet` too (many minutes on a laptop).

Example:
    >>> main(["--patients", "200", "--epochs", "1", "--explain", "2", "--out", "demo-out", "-q"])
    ehrlens demo (quick; --full for the full-size run): synthetic cohort of 200 patients, seed 0
    ...
    report: .../demo-out/report.html
    0
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.files import OutputConflictError, check_overwrite
from ..data import get_dataloader
from ..data.synthetic import Layout
from ..explain import explain_cohort
from ..interpret.registry import make_interpreter
from ..metrics import Evaluator
from ..models import BaseModel, StageAttentionNet, Transformer
from ..report import patient_predictions, write_report
from ..report.top import top_codes_of
from .task import task_record
from .workflow import code_descriptions, train_on_cohort

#: Where the demo writes its report unless told otherwise (replaced by the next demo run).
DEFAULT_OUT = Path("ehrlens-demo")
REPORT = "report.html"
METHODS = ("rollout", "flow", "chefer")


@dataclass(frozen=True)
class Settings:
    """One demo size: cohort, epochs, learning rate, patients explained, the models trained."""

    patients: int
    epochs: int
    lr: float
    explain: int
    models: dict[str, tuple[Layout, type[BaseModel], dict[str, Any]]] = field(default_factory=dict)


#: Test AUROC 0.767 against a best achievable 0.837 with seed 0 (benchmarks/RESULTS.md).
QUICK = Settings(
    patients=1500,
    epochs=5,
    lr=5e-3,
    explain=30,
    models={
        "Transformer": (
            "sequence",
            Transformer,
            {"embedding_dim": 32, "heads": 2, "num_layers": 2},
        ),
    },
)
FULL = Settings(
    patients=3000,
    epochs=8,
    lr=2e-3,
    explain=50,
    models={
        "Transformer": (
            "sequence",
            Transformer,
            {"embedding_dim": 64, "heads": 4, "num_layers": 2},
        ),
        "StageAttentionNet": (
            "stagenet",
            StageAttentionNet,
            {"embedding_dim": 64, "chunk_size": 32, "levels": 3, "heads": 4},
        ),
    },
)


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.began = self.start

    def begin(self, what: str) -> None:
        self.done += 1
        self.began = time.perf_counter()
        print(f"[{self.done}/{self.total}] {what} ...", flush=True)

    def end(self, note: str = "") -> None:
        took = time.perf_counter() - self.began
        print(f"      done in {took:.1f}s{'; ' + note if note else ''}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _print_top_codes(frame: Any, planted: dict[str, set[tuple[str, str]]], pids, k: int) -> None:
    """Each patient's top codes per method, as the report lists them (:func:`top_codes_of`:
    a repeated code's scores summed, ``×n``)."""
    for pid in pids:
        rows = frame[frame["patient_id"] == pid]
        print(f"  patient {pid}: planted {_codes(sorted(planted[pid])) or '(none)'}")
        for method in METHODS:
            top = top_codes_of(rows[rows["method"] == method], k)
            shown = ", ".join(
                f"{e.label}{'*' if (e.feature, e.code) in planted[pid] else ''} {e.score:.4f}"
                for e in top
            )
            print(f"    {method:8s} top {k}: {shown}")


def _card(run: Any, name: str, seed: int) -> dict[str, Any]:
    """The model card the report's header shows, as ``ehrlens train`` writes it."""
    return {
        "model_class": type(run.model).__name__,
        "data": {
            "path": f"synthetic cohort (seed {seed})",
            "n_patients": len(run.train) + len(run.val) + len(run.test),
            "n_train": len(run.train),
            "n_val": len(run.val),
            "n_test": len(run.test),
        },
        "test_metrics": dict(run.test_metrics),
        "task": task_record(run.model),
    }


def _evaluate(run: Any, chosen: Any, prefix: str | None) -> list[dict[str, Any]]:
    """Faithfulness and planted-code recovery of each method on the explained patients, for
    the class the report explains (the positive class), as ``ehrlens evaluate`` measures
    them."""
    evaluator = Evaluator(
        run.model, target=1, ground_truth=run.cohort.ground_truth, n_bootstrap=200
    )
    rows = []
    for method in METHODS:
        result = evaluator.evaluate(
            get_dataloader(chosen, 16), make_interpreter(method, run.model), method
        )
        row = result.to_dict()
        row["method"] = f"{prefix}/{method}" if prefix else method
        rows.append(row)
    return rows


def _codes(pairs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{feature}:{code}" for feature, code in pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ehrlens.app.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--full", action="store_true", help="the full-size run (two models, many minutes)"
    )
    parser.add_argument("--patients", type=int, default=None, help="cohort size")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per model")
    parser.add_argument(
        "--explain", type=int, default=None, help="highest-risk test patients explained"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder of the report (default {DEFAULT_OUT}/, whose report the next demo run "
        "replaces)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: for models this small, more threads gain little and "
        "lose much on a busy machine)",
    )
    args = parser.parse_args(argv)
    size = FULL if args.full else QUICK
    patients = size.patients if args.patients is None else args.patients
    epochs = size.epochs if args.epochs is None else args.epochs
    n_explain = size.explain if args.explain is None else args.explain
    for name, value in (("--patients", patients), ("--epochs", epochs), ("--explain", n_explain)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    report = args.out / REPORT
    try:
        check_overwrite([report], args.overwrite or args.out == DEFAULT_OUT)
    except OutputConflictError as error:
        parser.exit(3, f"error: {error}\n")

    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    steps = _Steps(total=3 * len(size.models) + 1)
    print(
        f"ehrlens demo ({'full size' if args.full else 'quick; --full for the full-size run'}): "
        f"synthetic cohort of {patients} patients, seed {args.seed}"
    )
    frames, summary, first = [], [], None
    evaluation: list[dict[str, Any]] = []
    card: dict[str, Any] | None = None
    for name, (layout, model_class, hparams) in size.models.items():
        steps.begin(f"{name}: generate the cohort and train {epochs} epoch(s)")
        run = train_on_cohort(
            model_class, hparams, n_patients=patients, layout=layout, seed=args.seed,
            epochs=epochs, lr=size.lr, progress=not args.quiet,
        )  # fmt: skip
        auroc = run.test_metrics["roc_auc"]
        steps.end(
            f"test AUROC {auroc:.3f} (higher is better; best achievable {run.oracle_roc_auc:.3f}"
            f", chance 0.500), AUPRC {run.test_metrics['pr_auc']:.3f}"
        )
        summary.append(f"{name} test AUROC {auroc:.3f} (best {run.oracle_roc_auc:.3f})")
        if first is None:
            first = run
            signal = _codes(sorted(run.cohort.signal_codes))
            print(f"      positive rate {run.cohort.positive_rate:.2f}; planted codes: {signal}")

        steps.begin(
            f"{name}: explain the {n_explain} highest-risk test patients and measure "
            "faithfulness and planted-code recovery"
        )
        with torch.inference_mode():
            y_prob = torch.cat([run.model(**b)["y_prob"] for b in get_dataloader(run.test, 256)])
        highest = np.argsort(-y_prob[:, 0].numpy(), kind="stable")[:n_explain]
        chosen = run.test.subset([int(i) for i in highest])
        frame = explain_cohort(
            run.model, chosen, list(METHODS), batch_size=16, progress=not args.quiet,
            model_id=name,
        ).to_frame()  # fmt: skip
        evaluation += _evaluate(run, chosen, name if len(size.models) > 1 else None)
        steps.end(f"{len(frame)} rows ({', '.join(METHODS)})")
        if card is None:
            card = _card(run, name, args.seed)

        steps.begin(
            f"{name}: top codes of the 2 highest-risk patients (* = planted signal; ×n: a "
            "code's scores summed over its n occurrences, as in the report)"
        )
        planted = {
            pid: {(f, c) for f, codes in run.cohort.ground_truth[pid].items() for c in codes}
            for pid in chosen.patient_ids
        }
        _print_top_codes(frame, planted, chosen.patient_ids[:2], k=5)
        frame["patient_id"] = [f"{name}/{pid}" for pid in frame["patient_id"]]
        predictions = patient_predictions(run.model, chosen)
        frames.append((frame, {f"{name}/{pid}": p for pid, p in predictions.items()}))
        steps.end()

    steps.begin(f"write the HTML report to {report}")
    import pandas as pd

    assert first is not None
    frame = pd.concat([f for f, _ in frames], ignore_index=True)
    predictions = {pid: p for _, preds in frames for pid, p in preds.items()}
    report.parent.mkdir(parents=True, exist_ok=True)
    write_report(
        report, frame, predictions, descriptions=code_descriptions(first.cohort),
        title="ehrlens demo", subtitle="; ".join(summary),
        patients=sorted(predictions, key=lambda p: -predictions[p].probability),
        card=card, target=None, evaluation=evaluation,
    )  # fmt: skip
    steps.end()
    print(f"\nsummary: {'; '.join(summary)}; {steps.elapsed():.0f}s in all")
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
