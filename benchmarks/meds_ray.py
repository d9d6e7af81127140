"""Subjects per second for reading and explaining a generated MEDS dataset: one process
(`from_meds` + `explain_cohort`) against the Ray executor on a `MedsSource` with 1 and 2
workers.

    python benchmarks/meds_ray.py                 # 2000 subjects in 4 data shards
    python benchmarks/meds_ray.py --quick         # a few subjects: checks the script runs

The dataset comes from the generator of ``meds_testing_helpers`` (its ``sample`` spec), with
two prediction times per subject at event times of its record (the label: code
``dynamic//1`` at or before it). The model is an untrained ``Transformer`` built on the
default mapping (features ``dynamic`` and ``static``); only time and equality of rows are
judged. Each setting starts from the files on disk: the time covers reading and validating
the shards and labels, building the samples, explaining and writing Parquet. Ray's start-up
(once per run of this script) is reported apart and not counted. Every Ray output is checked
against the single-process rows (identity columns exactly, scores to 1e-6).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.data.meds import MedsWarning, from_meds
from ehrlens.data.sources import MedsSource
from ehrlens.explain import ExplainRun, explain_cohort
from ehrlens.explain.ray_engine import RayExecutor, init_ray
from ehrlens.models import Transformer
from ehrlens.models.directory import load_model_dir, save_model_dir


def generate(root: Path, subjects: int, shard_size: int, seed: int) -> tuple[Path, Path]:
    """A MEDS dataset from the generator's command, and two labels per subject."""
    command = Path(sys.executable).with_name("build_sample_MEDS_dataset")
    subprocess.run(
        [
            str(command), f"seed={seed}", f"N_subjects={subjects}", f"output_dir={root / 'meds'}",
            "dataset_spec/data_generator=sample", f"dataset_spec.shard_size={shard_size}",
        ],
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    subject_ids, times, values = [], [], []
    for shard in sorted((root / "meds" / "data").rglob("*.parquet")):
        frame = pq.read_table(shard).to_pandas()
        for subject, events in frame.groupby("subject_id", sort=False):
            stamps = sorted(set(events["time"].dropna()))
            if len(stamps) < 2:
                continue
            for index in sorted(rng.choice(len(stamps), size=2, replace=False)):
                cut = stamps[index]
                hit = ((events["time"] <= cut) & (events["code"] == "dynamic//1")).any()
                subject_ids.append(int(subject))
                times.append(cut.to_pydatetime())
                values.append(bool(hit))
    labels = root / "labels.parquet"
    table = pa.table(
        {
            "subject_id": pa.array(subject_ids, pa.int64()),
            "prediction_time": pa.array(times, pa.timestamp("us")),
            "boolean_value": pa.array(values, pa.bool_()),
        }
    )
    pq.write_table(table, labels)
    return root / "meds", labels


def read(root: Path, labels: Path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsWarning)
        return from_meds(root, labels, **options)


def run(args: argparse.Namespace) -> dict:
    import ray

    work = Path(tempfile.mkdtemp(prefix="ehrlens-meds-"))
    root, labels = generate(work, args.subjects, args.shard_size, args.seed)
    data = read(root, labels)
    dataset = create_sample_dataset(data.samples, data.input_schema, data.output_schema)
    torch.manual_seed(args.seed)
    model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=args.layers).eval()
    save_model_dir(model, work / "model", {"meds": {"options": data.options.to_dict()}})
    model, card = load_model_dir(work / "model")
    n_samples, n_shards = len(data.samples), len(data.shards)
    start = time.perf_counter()
    init_ray(num_cpus=2)
    ray_start = time.perf_counter() - start
    rows = []
    for method in args.methods:
        start = time.perf_counter()
        again = read(root, labels, options=data.options)
        local_dataset = create_sample_dataset(again.samples, schema=model.schema)
        local = explain_cohort(
            model, local_dataset, [method], out_dir=work / f"local-{method}",
            batch_size=args.batch_size, model_id=card["model_id"],
        )  # fmt: skip
        seconds = time.perf_counter() - start
        reference = local.to_frame()
        rows.append(_row(method, "single process", None, args.subjects, seconds, True))
        for workers in (1, 2):
            start = time.perf_counter()
            source = MedsSource(root, labels, data.options.to_dict(), model.schema.label_keys[0])
            spec = ExplainRun(
                source, [method], model_dir=work / "model", batch_size=args.batch_size,
                out_dir=work / f"ray-{method}-{workers}",
            )  # fmt: skip
            result = RayExecutor(num_workers=workers).run(spec)
            seconds = time.perf_counter() - start
            rows.append(
                _row(method, "ray", workers, args.subjects, seconds, _same(result, reference))
            )
    ray.shutdown()
    for row in rows:
        base = next(
            r for r in rows if r["method"] == row["method"] and r["engine"] == "single process"
        )
        one = next((r for r in rows if r["method"] == row["method"] and r["workers"] == 1), None)
        row["vs_single_process"] = row["subjects_per_s"] / base["subjects_per_s"]
        row["vs_1_worker"] = (
            row["subjects_per_s"] / one["subjects_per_s"] if one and row["workers"] else math.nan
        )
    return {
        "meta": {
            "subjects": args.subjects,
            "samples": n_samples,
            "data_shards": n_shards,
            "batch_size": args.batch_size,
            "model": f"Transformer(embedding_dim=64, heads=4, num_layers={args.layers})",
            "features": data.input_schema,
            "torch_threads_single_process": torch.get_num_threads(),
            "ray_start_seconds": ray_start,
            "ray": ray.__version__,
        },
        "rows": rows,
    }


def _same(result, reference) -> bool:
    frame = result.to_frame()
    if list(frame.columns) != list(reference.columns) or len(frame) != len(reference):
        return False
    floats = ["score", "predicted_probability", "explained_probability"]  # batches differ
    exact = [c for c in frame.columns if c not in floats]
    close = all(
        np.allclose(frame[c], reference[c], rtol=1e-6, atol=1e-6) for c in floats if c in frame
    )
    return bool(frame[exact].equals(reference[exact]) and close)


def _row(method, engine, workers, subjects, seconds, same) -> dict:
    return {
        "method": method,
        "engine": engine,
        "workers": workers,
        "seconds": seconds,
        "subjects_per_s": subjects / seconds,
        "rows_equal_single_process": bool(same),
    }


def table(report: dict) -> str:
    lines = [
        "| method | engine | workers | seconds | subjects/s | vs single process | "
        "vs 1 worker | rows equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        vs_one = "" if math.isnan(r["vs_1_worker"]) else f"{r['vs_1_worker']:.2f}×"
        lines.append(
            f"| {r['method']} | {r['engine']} | {r['workers'] or ''} | {r['seconds']:.1f} | "
            f"{r['subjects_per_s']:.1f} | {r['vs_single_process']:.2f}× | {vs_one} | "
            f"{'yes' if r['rows_equal_single_process'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=500, help="subjects per data shard")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["rollout", "flow"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/meds_ray.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.shard_size, args.layers, args.batch_size = 40, 20, 1, 16
    report = run(args)
    print(table(report))
    meta = report["meta"]
    print(
        f"{meta['subjects']} subjects, {meta['samples']} samples in {meta['data_shards']} data "
        f"shards; Ray start-up (not counted): {meta['ray_start_seconds']:.1f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
