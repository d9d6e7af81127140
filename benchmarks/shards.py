"""What verifying shard content costs: writing and verifying N shards, metadata only vs digest.

A shard's Parquet metadata names its run, index, rows and patients; since the content digest
(:func:`ehrlens.explain.shards.table_digest`) a SHA-256 of the column data is written with it
and checked on resume and by ``read_attributions``. This script times, on synthetic rows of
realistic shape (patients x units x methods), in one process with interleaved repetitions
(medians):

- write: the metadata-only writer (what ehrlens did before) vs :func:`write_shard`;
- verify on resume: reading the metadata only vs :func:`verified_shard_rows` (metadata, then
  the whole file and its digest);
- read back: ``pyarrow.parquet.read_table`` of every shard vs :func:`read_attributions`
  (which verifies each shard first);
- the digest alone, of tables already in memory.

    python benchmarks/shards.py            # 8 shards of 1000 patients; JSON in benchmarks/out/
    python benchmarks/shards.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq

from ehrlens.core.files import atomic_write
from ehrlens.explain.shards import (
    MANIFEST,
    SHARD_PATTERN,
    manifest_digest,
    patient_hash,
    read_attributions,
    shard_metadata,
    table_digest,
    verified_shard_rows,
    write_shard,
)
from ehrlens.explain.table import columns_to_arrow

FINGERPRINT = "0123456789abcdef"
METHODS = ("rollout", "chefer", "integrated_gradients")
FEATURES = ("diagnoses", "procedures", "drugs")


def shard_columns(
    index: int, patients: int, units: int, rng: random.Random
) -> tuple[dict, list[str]]:
    """Long-format columns of one shard: each patient ``units`` codes over visits, x methods."""
    columns = {k: [] for k in ("patient_id", "feature", "visit", "position", "code", "score")}
    columns.update(method=[], model_id=[], level=[])
    ids = [f"P{index * patients + i:07d}" for i in range(patients)]
    for pid in ids:
        n = max(1, int(rng.gauss(units, units / 4)))
        layout = [(FEATURES[u % 3], u // 9, (u // 3) % 3, f"C{rng.randrange(5000):04d}")
                  for u in range(n)]  # fmt: skip
        for method in METHODS:
            for feature, visit, position, code in layout:
                columns["patient_id"].append(pid)
                columns["feature"].append(feature)
                columns["visit"].append(visit)
                columns["position"].append(position)
                columns["code"].append(code)
                columns["score"].append(rng.random())
                columns["method"].append(method)
                columns["model_id"].append("3f2a9c01d4e5")
                columns["level"].append("code")
    return columns, ids


def write_metadata_only(path: Path, columns: dict, metadata: dict[str, str]) -> None:
    """The shard writer before content digests: the same file without ``ehrlens.content``."""
    table = columns_to_arrow(columns)
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)


def verify_metadata_only(path: Path, index: int, patients: str) -> int | None:
    """The resume check before content digests: Parquet metadata only."""
    metadata = pq.read_metadata(path)
    kv = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
    expected = {"ehrlens.run": FINGERPRINT, "ehrlens.shard": str(index),
                "ehrlens.patients": patients, "ehrlens.rows": str(metadata.num_rows)}  # fmt: skip
    return None if any(kv.get(k) != v for k, v in expected.items()) else metadata.num_rows


def timed(fn) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process, all threads)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(n_shards: int, patients: int, units: int, repeats: int) -> dict:
    rng = random.Random(0)
    shards = [shard_columns(i, patients, units, rng) for i in range(n_shards)]
    rows = sum(len(c["patient_id"]) for c, _ in shards)
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Path(tmp) / "old", Path(tmp) / "new"
        old.mkdir()
        new.mkdir()

        def write_old():
            for i, (columns, ids) in enumerate(shards):
                meta = shard_metadata(FINGERPRINT, i, columns, ids)
                write_metadata_only(old / SHARD_PATTERN.format(i), columns, meta)

        def write_new():
            for i, (columns, ids) in enumerate(shards):
                meta = shard_metadata(FINGERPRINT, i, columns, ids)
                write_shard(new / SHARD_PATTERN.format(i), columns, meta)

        hashes = [patient_hash(ids) for _, ids in shards]

        def verify_old():
            for i in range(n_shards):
                assert verify_metadata_only(old / SHARD_PATTERN.format(i), i, hashes[i])

        def verify_new():
            for i in range(n_shards):
                assert verified_shard_rows(new / SHARD_PATTERN.format(i), FINGERPRINT, i, hashes[i])

        manifest = {"fingerprint": FINGERPRINT, "shards": n_shards, "complete": True}
        manifest["digest"] = manifest_digest(manifest)  # a sealed manifest, as explain writes
        (new / MANIFEST).write_text(json.dumps(manifest))

        def read_plain():
            paths = [new / SHARD_PATTERN.format(i) for i in range(n_shards)]
            pyarrow.concat_tables([pq.read_table(p) for p in paths]).to_pandas()

        def read_verified():
            read_attributions(new)

        tables = [columns_to_arrow(c) for c, _ in shards]

        def digest_only():
            for table in tables:
                table_digest(table)

        steps = {
            "write, metadata only": write_old,
            "write, with digest": write_new,
            "verify, metadata only": verify_old,
            "verify, content digest": verify_new,
            "read, no verification": read_plain,
            "read_attributions (verified)": read_verified,
            "digest of in-memory tables": digest_only,
        }
        write_old()
        write_new()  # the files exist before the verify and read steps are timed
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
        order = list(steps)
        for _ in range(repeats):  # interleaved, so load changes hit every step alike; the
            for name in order:  # order flips each time, so no step always runs after another
                times[name].append(timed(steps[name]))
            order.reverse()
        size = sum((new / SHARD_PATTERN.format(i)).stat().st_size for i in range(n_shards))
    return {
        "shards": n_shards,
        "patients_per_shard": patients,
        "rows": rows,
        "megabytes": round(size / 2**20, 2),
        "seconds": {name: statistics.median(w for w, _ in v) for name, v in times.items()},
        "cpu_seconds": {name: statistics.median(c for _, c in v) for name, v in times.items()},
    }


def table(result: dict) -> str:
    s, c, n = result["seconds"], result["cpu_seconds"], result["shards"]
    lines = [
        f"{n} shards x {result['patients_per_shard']} patients, "
        f"{result['rows']} rows, {result['megabytes']} MiB of Parquet",
        f"{'step':32s} {'wall ms/shard':>14s} {'CPU ms/shard':>13s}",
        "-" * 61,
    ]
    for name in s:
        lines.append(f"{name:32s} {1000 * s[name] / n:14.2f} {1000 * c[name] / n:13.2f}")
    pairs = (
        ("write", "write, with digest", "write, metadata only"),
        ("verify", "verify, content digest", "verify, metadata only"),
        ("read", "read_attributions (verified)", "read, no verification"),
    )
    for label, with_, without in pairs:
        lines.append(
            f"{label}: {s[with_] / s[without]:.2f}x the wall time, {c[with_] / c[without]:.2f}x "
            "the CPU time without digests"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--patients", type=int, default=None, help="patients per shard")
    parser.add_argument("--units", type=int, default=60, help="mean codes per patient")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/shards.json"))
    args = parser.parse_args(argv)
    if args.quick:
        shards, patients, repeats = args.shards or 2, args.patients or 20, args.repeats or 2
    else:
        shards, patients, repeats = args.shards or 8, args.patients or 1000, args.repeats or 5
    result = run(shards, patients, args.units, repeats)
    print(table(result))
    meta = {
        "pyarrow": pyarrow.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "units": args.units,
        "methods": len(METHODS),
        "repeats": repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **result}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
