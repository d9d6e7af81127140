"""What storing each patient's prediction with its attribution rows costs. Three runs of
``explain_cohort`` per method, in the same process:

- ``none``: BASELINE, the prediction step replaced by nulls (no prediction stored);
- ``extra forward``: BASELINE, predictions from one more forward per batch under
  ``torch.inference_mode()`` (how every method stored them before; still the path of methods
  without ``plain_forward``);
- ``shipped``: as shipped: read off the method's own forward where it runs the model plainly
  (``ProbabilityRecorder``), else the extra forward.

    python benchmarks/stored_predictions.py            # 400 patients, rollout and chefer
    python benchmarks/stored_predictions.py --quick    # checks the script runs

Prints a table and writes JSON (``--out``). Times are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

import ehrlens.explain.rows as rows
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import explain_cohort
from ehrlens.models import Transformer


def _no_predictions(model, batch, target=None, y_prob=None):
    return [(None, None, None, None)] * len(batch["patient_id"])


@contextmanager
def _not_watching(self):
    yield self


def _best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cohort = generate_cohort(args.patients, layout="nested", seed=0)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=2).eval()
    out = []
    for method in args.methods:

        def run(method=method):
            explain_cohort(model, dataset, [method], batch_size=args.batch_size)

        run()  # warm-up: lazy initialisation is not timed
        shipped = _best(run, args.repeats)
        with mock.patch.object(rows.ProbabilityRecorder, "watching", _not_watching):
            extra_forward = _best(run, args.repeats)
        with (
            mock.patch.object(rows.ProbabilityRecorder, "watching", _not_watching),
            mock.patch.object(rows, "batch_prediction_rows", _no_predictions),
        ):
            none = _best(run, args.repeats)
        out.append(
            {
                "method": method,
                "without_s": none,
                "extra_forward_s": extra_forward,
                "with_s": shipped,
                "ratio": shipped / none,
                "extra_forward_ratio": extra_forward / none,
            }
        )
    return {
        "patients": args.patients,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "rows": out,
    }


def table(report: dict) -> str:
    lines = [
        "| method | none (s) | extra forward (s) | ratio | shipped (s) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['without_s']:.2f} | {r['extra_forward_s']:.2f} | "
            f"{r['extra_forward_ratio']:.2f}× | {r['with_s']:.2f} | {r['ratio']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["rollout", "chefer"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/stored_predictions.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.repeats = 20, 1
    report = measure(args)
    print(table(report))
    print(f"load average at the end: {report['load_average']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
