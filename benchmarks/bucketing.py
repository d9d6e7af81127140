"""Explain time with and without length bucketing, on a cohort with a few long outliers.

    python benchmarks/bucketing.py            # 600 patients (1% long), rollout and Chefer
    python benchmarks/bucketing.py --quick    # a few patients: checks the script runs

Most patients have 1-6 visits of 1-4 codes; every ``--long-every``-th one has ``--long-visits``
visits of ``--long-codes`` codes. Without bucketing each batch holding an outlier is padded to
the outlier's size; with ``bucket_by_length=True`` the outliers share batches. The model is an
untrained ``Transformer`` (time and equality of scores are measured, not their quality).
After one untimed warm-up batch, each setting runs ``--repeats`` times in one process,
interleaved; the median is reported.
The rows of both runs are checked to be the same rows in the same order, and the largest
score difference is reported (float32 rounding only: the padding around a patient changes).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ehrlens.data import create_sample_dataset, get_dataloader
from ehrlens.explain import explain_cohort
from ehrlens.models import Transformer


def cohort(args: argparse.Namespace) -> list[dict]:
    rng = random.Random(args.seed)
    vocabulary = [f"C{i:03d}" for i in range(200)]

    def visits(n_visits: int, most_codes: int, fixed: bool = False) -> list[list[str]]:
        return [
            rng.choices(vocabulary, k=most_codes if fixed else rng.randint(1, most_codes))
            for _ in range(n_visits)
        ]

    samples = []
    for i in range(args.patients):
        long = i % args.long_every == args.long_every // 2
        visit_list = (
            visits(args.long_visits, args.long_codes, fixed=True)
            if long
            else visits(rng.randint(1, 6), 4)
        )
        samples.append({"patient_id": f"P{i:05d}", "diagnoses": visit_list, "label": i % 2})
    return samples


def padded_values(dataset, batch_size: int, bucket: bool) -> int:
    """Code slots (real and padding) of every batch the loader builds."""
    loader = get_dataloader(dataset, batch_size, bucket_by_length=bucket)
    return sum(int(batch["diagnoses"].numel()) for batch in loader)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    samples = cohort(args)
    dataset = create_sample_dataset(samples, {"diagnoses": "nested_sequence"}, {"label": "binary"})
    torch.manual_seed(args.seed)
    model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=args.layers).eval()
    model = model.to(args.device)  # explain_cohort moves each batch to the model's device
    rows = []
    warm_up = dataset.subset(range(min(args.batch_size, len(dataset))))
    for method in args.methods:
        explain_cohort(model, warm_up, [method], batch_size=args.batch_size)  # not timed
        seconds: dict[bool, list[float]] = {False: [], True: []}
        frames = {}
        for _ in range(args.repeats):
            for bucket in (False, True):
                start = time.perf_counter()
                result = explain_cohort(
                    model, dataset, [method], batch_size=args.batch_size,
                    shard_size=args.shard_size, bucket_by_length=bucket,
                )  # fmt: skip
                frames[bucket] = result.to_frame()
                seconds[bucket].append(time.perf_counter() - start)
        plain, bucketed = frames[False], frames[True]
        # the rows (ids, codes, classes) must be identical; the floats the model computes
        # (scores, stored probabilities) differ only by padding, so they are compared apart
        floats = ["score", "predicted_probability", "explained_probability"]
        keys = [c for c in plain.columns if c not in floats]
        same_rows = bool(plain[keys].equals(bucketed[keys])) and all(
            np.allclose(plain[c].to_numpy(float), bucketed[c].to_numpy(float), rtol=1e-5,
                        atol=1e-6, equal_nan=True)
            for c in floats[1:]
        )  # fmt: skip
        largest = float(np.max(np.abs(plain["score"].to_numpy() - bucketed["score"].to_numpy())))
        median = {b: statistics.median(s) for b, s in seconds.items()}
        rows.append(
            {
                "method": method,
                "seconds_unbucketed": median[False],
                "seconds_bucketed": median[True],
                "speed_up": median[False] / median[True],
                "same_rows_in_order": same_rows,
                "max_abs_score_difference": largest,
                "all_seconds": {"unbucketed": seconds[False], "bucketed": seconds[True]},
            }
        )
    n_long = sum(1 for s in samples if len(s["diagnoses"]) == args.long_visits)
    return {
        "meta": {
            "patients": args.patients,
            "long_patients": n_long,
            "long_visits": args.long_visits,
            "long_codes_per_visit": args.long_codes,
            "batch_size": args.batch_size,
            "shard_size": args.shard_size,
            "model": f"Transformer(embedding_dim=64, heads=4, num_layers={args.layers})",
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "padded_code_slots_unbucketed": padded_values(dataset, args.batch_size, False),
            "padded_code_slots_bucketed": padded_values(dataset, args.batch_size, True),
        },
        "rows": rows,
    }


def table(report: dict) -> str:
    lines = [
        "| method | unbucketed s | bucketed s | speed-up | same rows, same order | "
        "max score difference |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['seconds_unbucketed']:.2f} | {r['seconds_bucketed']:.2f} | "
            f"{r['speed_up']:.1f}× | {'yes' if r['same_rows_in_order'] else 'NO'} | "
            f"{r['max_abs_score_difference']:.1e} |"
        )
    meta = report["meta"]
    lines.append("")
    lines.append(
        f"code slots built (real + padding): {meta['padded_code_slots_unbucketed']:,} "
        f"unbucketed, {meta['padded_code_slots_bucketed']:,} bucketed"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--long-every", type=int, default=100, help="one outlier per N patients")
    parser.add_argument("--long-visits", type=int, default=300)
    parser.add_argument("--long-codes", type=int, default=20, help="codes per outlier visit")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=["rollout", "chefer"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bucketing.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.quick:
        args.patients, args.long_every, args.long_visits, args.long_codes = 40, 10, 30, 6
        args.batch_size, args.repeats, args.threads = 8, 1, 1
    report = run(args)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
