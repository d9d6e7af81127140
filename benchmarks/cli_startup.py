"""Start-up time of the ``ehrlens`` command: ``--help`` of the group and of each command.

    python benchmarks/cli_startup.py             # 7 runs of each command, median
    python benchmarks/cli_startup.py --quick     # 1 run each: checks the script runs

Each row starts a fresh Python process running the command (as the ``ehrlens`` script does)
and reports the median wall time, whether torch was imported, and the ratio to the baseline
of the same run: a bare ``python -c pass`` start. ``import torch`` alone is timed as a second
reference (what every command cost when torch was imported at start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: Runs the command in ``sys.argv``, then prints whether torch was imported.
RUNNER = (
    "import sys\n"
    "from ehrlens.cli.app import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='ehrlens')\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('TORCH=%d' % ('torch' in sys.modules))\n"
)
COMMANDS: list[list[str]] = [
    ["--help"],
    ["--version"],
    ["synthetic", "--help"],
    ["train", "--help"],
    ["explain", "--help"],
    ["evaluate", "--help"],
    ["report", "--help"],
    ["demo", "--help"],
]


def timed(argv: list[str]) -> tuple[float, bool | None]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    torch = None
    if "TORCH=" in done.stderr:
        torch = done.stderr.rsplit("TORCH=", 1)[1].startswith("1")
    return seconds, torch


def measure(argv: list[str], repeats: int) -> tuple[float, bool | None]:
    runs = [timed(argv) for _ in range(repeats)]
    return statistics.median(s for s, _ in runs), runs[-1][1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each command")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cli_startup.json"))
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    commands = COMMANDS[:2] if args.quick else COMMANDS
    python = sys.executable
    baseline, _ = measure([python, "-c", "pass"], repeats)
    torch_alone, _ = measure([python, "-c", "import torch"], repeats)
    rows = []
    for command in commands:
        seconds, torch = measure([python, "-c", RUNNER, *command], repeats)
        rows.append(
            {
                "command": "ehrlens " + " ".join(command),
                "seconds": seconds,
                "imports_torch": torch,
                "vs_bare_python": seconds / baseline,
            }
        )
    print(f"bare python: {baseline:.3f} s; python -c 'import torch': {torch_alone:.3f} s")
    print(f"{'command':28s} {'median s':>9s} {'torch':>6s} {'x bare python':>14s}")
    for row in rows:
        print(
            f"{row['command']:28s} {row['seconds']:9.3f} {row['imports_torch']!s:>6s} "
            f"{row['vs_bare_python']:14.1f}"
        )
    meta = {
        "repeats": repeats,
        "bare_python_seconds": baseline,
        "import_torch_seconds": torch_alone,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
