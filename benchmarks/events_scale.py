"""Reading an event table of many one-code patients into samples: time and peak memory.

    python benchmarks/events_scale.py                               # 10k, 100k, 1M patients
    python benchmarks/events_scale.py --sizes 10000 --baseline-src /tmp/old/src
    python benchmarks/events_scale.py --quick                       # 2,000: checks the script

Each size writes a Parquet event table (``patient_id, time, feature, code, label``: one dated
code per patient, 50 distinct codes), then reads it with
``from_events(path, {"dx": "nested_sequence"}, label_column="label")`` in a fresh process, so
that the peak resident memory (``ru_maxrss`` of that process, imports and the table
included) belongs to this read alone. ``--baseline-src`` runs the same read with another
source tree first on the path (e.g. an export of an earlier commit), for sizes up to
``--baseline-max``, and reports the speed-up. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

READ = r"""
import json, resource, sys, time, warnings
from ehrlens.data.events import from_events
path = sys.argv[1]
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    samples = from_events(path, {"dx": "nested_sequence"}, label_column="label")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
print(json.dumps({"seconds": seconds, "peak_mib": peak, "samples": len(samples),
                  "first": samples[0], "last": samples[-1]}, default=str))
"""


def write_table(n: int, path: Path) -> Path:
    import numpy as np
    import pandas as pd

    index = np.arange(n)
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i:07d}" for i in index],
            "time": pd.Timestamp("2020-01-01") + pd.to_timedelta(index % 365, unit="D"),
            "feature": "dx",
            "code": [f"C{i % 50:02d}" for i in index],
            "label": (index % 3 == 0).astype(int),
        }
    )
    frame.to_parquet(path, index=False)
    return path


def measure(path: Path, src: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", READ, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline-src", default=None)
    parser.add_argument("--baseline-max", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/events_scale.json")
    args = parser.parse_args()
    sizes = [2_000] if args.quick else args.sizes
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            path = write_table(n, Path(folder) / f"events_{n}.parquet")
            row = {"patients": n, "table_mib": path.stat().st_size / 2**20}
            if args.baseline_src and n <= args.baseline_max:
                base = measure(path, args.baseline_src, args.timeout)
                row.update(baseline_s=base["seconds"], baseline_peak_mib=base["peak_mib"])
            now = measure(path, SRC, args.timeout)
            if "baseline_s" in row:
                row["speedup"] = row["baseline_s"] / now["seconds"]
                same = (base["first"], base["last"]) == (now["first"], now["last"])
                row["same_first_and_last"] = same
            row.update(seconds=now["seconds"], peak_mib=now["peak_mib"], samples=now["samples"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| patients | table MiB | seconds | peak MiB | baseline s | baseline MiB | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base_s = f"{r['baseline_s']:.2f}" if "baseline_s" in r else "-"
        base_m = f"{r['baseline_peak_mib']:.0f}" if "baseline_peak_mib" in r else "-"
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else "-"
        print(
            f"| {r['patients']:,} | {r['table_mib']:.1f} | {r['seconds']:.2f} | "
            f"{r['peak_mib']:.0f} | {base_s} | {base_m} | {speed} |"
        )
    load = os.getloadavg()
    record = {"rows": rows, "load_average": load, "cpus": os.cpu_count()}
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
