"""Patients per second: single-process `explain_cohort` against the Ray Data engine with 1 and 2
workers, for rollout and flow, on one cohort and one model.

    python benchmarks/distributed.py                 # 1000 patients x 64 codes, 6 layers
    python benchmarks/distributed.py --quick         # a few patients: checks the script runs

Patients have ``--seq`` random codes each (flow's cost grows with sequence length and layers, so
short synthetic histories would measure only Ray's fixed overhead); the model is an untrained
``Transformer`` (scores are not judged here, only time and equality of rows).

Each setting explains the whole cohort into a fresh folder; the time includes reading the
input and writing Parquet. Ray's start-up (once per run of this script) is reported apart and
not counted. Every Ray output is checked to equal the single-process rows.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ehrlens.core.jsonl import write_jsonl
from ehrlens.data import create_sample_dataset
from ehrlens.explain import explain_cohort
from ehrlens.explain.ray_engine import explain_cohort_ray, init_ray
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir


def build(root: Path, args: argparse.Namespace) -> tuple[Path, Path, object]:
    rng = random.Random(args.seed)
    vocabulary = [f"C{i:04d}" for i in range(500)]
    samples = [
        {"patient_id": f"P{i:06d}", "codes": rng.choices(vocabulary, k=args.seq), "label": i % 2}
        for i in range(args.patients)
    ]
    data = write_jsonl(samples, root / "samples.jsonl")
    dataset = create_sample_dataset(samples, {"codes": "sequence"}, {"label": "binary"})
    torch.manual_seed(args.seed)
    model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=args.layers).eval()
    save_model_dir(model, root / "model")
    return root / "model", data, dataset


def run(args: argparse.Namespace) -> dict:
    import ray

    root = Path(tempfile.mkdtemp(prefix="ehrlens-dist-"))
    model_dir, data, dataset = build(root, args)
    model, card = load_model_dir(model_dir)
    start = time.perf_counter()
    init_ray(num_cpus=2)
    ray_start = time.perf_counter() - start
    rows = []
    for method in args.methods:
        start = time.perf_counter()
        local = explain_cohort(
            model, dataset, [method], out_dir=root / f"local-{method}",
            shard_size=args.shard_size, batch_size=args.batch_size, model_id=card["model_id"],
        )  # fmt: skip
        seconds = time.perf_counter() - start
        reference = local.to_frame()
        rows.append(_row(method, "single process", None, args.patients, seconds, True))
        for workers in (1, 2):
            start = time.perf_counter()
            result = explain_cohort_ray(
                model_dir, data, [method], out_dir=root / f"ray-{method}-{workers}",
                shard_size=args.shard_size, batch_size=args.batch_size, num_workers=workers,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            same = result.to_frame().equals(reference)
            rows.append(_row(method, "ray", workers, args.patients, seconds, same))
    ray.shutdown()
    for row in rows:
        base = next(
            r for r in rows if r["method"] == row["method"] and r["engine"] == "single process"
        )
        one = next((r for r in rows if r["method"] == row["method"] and r["workers"] == 1), None)
        row["vs_single_process"] = row["patients_per_s"] / base["patients_per_s"]
        row["vs_1_worker"] = (
            row["patients_per_s"] / one["patients_per_s"] if one and row["workers"] else math.nan
        )
    return {
        "meta": {
            "patients": args.patients,
            "shard_size": args.shard_size,
            "batch_size": args.batch_size,
            "codes_per_patient": args.seq,
            "model": f"Transformer(embedding_dim=64, heads=4, num_layers={args.layers})",
            "torch_threads_single_process": torch.get_num_threads(),
            "ray_start_seconds": ray_start,
            "ray": ray.__version__,
        },
        "rows": rows,
    }


def _row(method, engine, workers, patients, seconds, same) -> dict:
    return {
        "method": method,
        "engine": engine,
        "workers": workers,
        "seconds": seconds,
        "patients_per_s": patients / seconds,
        "rows_equal_single_process": bool(same),
    }


def table(report: dict) -> str:
    lines = [
        "| method | engine | workers | seconds | patients/s | vs single process | "
        "vs 1 worker | rows equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        vs_one = "" if math.isnan(r["vs_1_worker"]) else f"{r['vs_1_worker']:.2f}×"
        lines.append(
            f"| {r['method']} | {r['engine']} | {r['workers'] or ''} | {r['seconds']:.1f} | "
            f"{r['patients_per_s']:.1f} | {r['vs_single_process']:.2f}× | {vs_one} | "
            f"{'yes' if r['rows_equal_single_process'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seq", type=int, default=64, help="codes per patient")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--methods", nargs="+", default=["rollout", "flow"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/distributed.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.shard_size, args.batch_size, args.seq, args.layers = 40, 10, 10, 8, 2
    report = run(args)
    print(table(report))
    print(f"Ray start-up (not counted): {report['meta']['ray_start_seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
