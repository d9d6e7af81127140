"""Explanations against PyTorch's fastest inference for the same model.

The floors are the models' own forward, which computes attention with
``torch.nn.functional.scaled_dot_product_attention`` (SDPA) whenever no hook listens: plain
inference for the gradient-free methods, one forward + backward for the gradient methods, both
measured in the same run. Goals at seq 1024 x batch 8 and seq 4096 x batch 2 (6 layers,
``Transformer`` with embedding 128 and 4 heads, one ``"codes"`` feature): inference and a
training step within 1.1x SDPA (the model is SDPA); default rollout within 1.5x SDPA inference
time and peak memory; Chefer within 1.8x SDPA forward + backward time and 1.5x its peak
memory; AttnLRP within 2x SDPA forward + backward time.

Methods (all on the same model and batch):

- ``inference``: the model's forward under ``torch.inference_mode()`` (SDPA); floor of the
  gradient-free methods;
- ``inference_explicit``: BASELINE, the same forward with a no-op attention hook on every
  layer, so attention is the explicit ``softmax(QK^T) V`` with whole maps, as every forward
  computed it before SDPA;
- ``inference_in_blocks``: CONTEXT, the same forward with a no-op attention block hook on
  every layer (attention in blocks of query rows, as in rollout's capture forward);
- ``rollout``: :class:`AttentionRollout` with its defaults, under ``inference_mode``;
- ``rollout_keep_maps`` / ``rollout_low_memory``: ``low_memory=False`` / ``True`` explicitly;
- ``forward_backward``: forward, ``logit[:, 0].sum().backward()``, grads set to None (SDPA);
  floor of the gradient methods;
- ``forward_backward_explicit``: BASELINE, the same with explicit whole maps (a no-op hook);
- ``chefer``: :class:`CheferRelevance` (gradient fusion at capture);
- ``chefer_per_head``: BASELINE, the same interpreter through a model class that does not
  declare gradient fusion (per-head gradients taken with ``autograd.grad``);
- ``attnlrp``: :class:`AttnLRP` (one forward and one backward with the rules attached).

Time: one process, interleaved repetitions after one warm-up call per method on a small batch;
medians and minima, ratios to the floor in the same run. Memory: one fresh subprocess per
(config, method): the peak RSS of the call (``VmHWM`` reset just before it) and the extra over
the RSS before it; on CUDA ``torch.cuda.max_memory_allocated``. The load average is recorded
before and after each run (the machine is shared).

    python benchmarks/explain_cost.py                          # both configs, 2 repetitions
    python benchmarks/explain_cost.py --configs 6x1024x8 --methods inference chefer
    python benchmarks/explain_cost.py --device cuda
    python benchmarks/explain_cost.py --quick                  # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

from ehrlens.interpret import AttentionRollout, AttnLRP
from ehrlens.models import Transformer

ROLLOUT_METHODS = (
    "inference",
    "inference_explicit",
    "inference_in_blocks",
    "rollout",
    "rollout_keep_maps",
    "rollout_low_memory",
)
CHEFER_METHODS = (
    "forward_backward",
    "forward_backward_explicit",
    "chefer",
    "chefer_per_head",
    "attnlrp",
)
#: Run unless --methods names them: the per-head Chefer baseline is slow and large.
DEFAULT_METHODS = tuple(m for m in ROLLOUT_METHODS + CHEFER_METHODS if m != "chefer_per_head")
METHODS = ROLLOUT_METHODS + CHEFER_METHODS
FLOORS = {m: "inference" for m in ROLLOUT_METHODS} | {m: "forward_backward" for m in CHEFER_METHODS}
RESULT_TAG = "EXPLAIN_COST_RESULT "


class PerHeadTransformer(Transformer):
    """BASELINE: the same model without gradient fusion (Chefer's per-head path)."""

    interpret_capabilities = dataclasses.replace(
        Transformer.interpret_capabilities, gradient_fusion=False
    )


def parse_config(text: str) -> tuple[int, int, int]:
    layers, seq, batch = (int(part) for part in text.lower().split("x"))
    return layers, seq, batch


def build(layers: int, dim: int, heads: int, device: str, per_head: bool = False) -> Transformer:
    model = speed.build_model(layers, dim, heads, device)
    if per_head:
        model.__class__ = PerHeadTransformer
    return model


def method_callable(method: str, model: Transformer, batch: dict) -> Callable[[], Any]:
    """A zero-argument function that runs ``method`` once on ``batch``: this benchmark's own
    variants here, the rest as :func:`speed.method_callable` runs them."""
    modules = [m for layers in model.attention_modules().values() for m in layers]
    if method in ("inference_explicit", "forward_backward_explicit"):
        plain = speed.method_callable(method.removesuffix("_explicit"), model, batch)

        def run_explicit() -> Any:
            handles = [m.register_attention_hook(lambda *_: None) for m in modules]
            try:
                return plain()
            finally:
                for handle in handles:
                    handle.remove()

        return run_explicit
    if method == "attnlrp":
        lrp = AttnLRP(model)

        def run_lrp() -> Any:
            return lrp.attribute(**batch)

        return run_lrp
    if method == "inference_in_blocks":

        def run_in_blocks() -> Any:
            handles = [m.register_attention_block_hook(lambda *_: None) for m in modules]
            try:
                with torch.inference_mode():
                    return model(**batch)["logit"]
            finally:
                for handle in handles:
                    handle.remove()

        return run_in_blocks
    if method == "rollout_keep_maps":
        rollout = AttentionRollout(model, low_memory=False)

        def explain() -> Any:
            with torch.inference_mode():
                return rollout.attribute(**batch)

        return explain
    if method == "chefer_per_head":  # the same interpreter on the per-head model class
        method = "chefer"
    return speed.method_callable(method, model, batch)


def model_for(method: str, layers: int, dim: int, heads: int, device: str) -> Transformer:
    return build(layers, dim, heads, device, per_head=method == "chefer_per_head")


# --------------------------------------------------------------------------- time
def time_config(
    layers: int,
    seq: int,
    batch_size: int,
    methods: list[str],
    repeats: int,
    dim: int,
    heads: int,
    device: str,
) -> list[dict]:
    models = {m: model_for(m, layers, dim, heads, device) for m in methods}
    batch = speed.make_batch(models[methods[0]], batch_size, seq, seed=seq, device=device)
    tiny = speed.make_batch(models[methods[0]], 1, 8, seed=0, device=device)
    for m in methods:  # warm-up on a tiny batch: lazy initialisation is not timed
        method_callable(m, models[m], tiny)()
    fns = {m: method_callable(m, models[m], batch) for m in methods}
    samples: dict[str, list[float]] = {m: [] for m in methods}
    results: dict[str, Any] = {}
    for rep in range(repeats):
        speed.log(f"  rep {rep + 1}/{repeats} L={layers} seq={seq} batch={batch_size}")
        for m, fn in fns.items():
            elapsed, results[m] = speed.timed_once(fn, device)
            samples[m].append(elapsed)
    agreement = _agreement(results)
    rows = []
    for m in methods:
        floor = FLOORS[m]
        row: dict[str, Any] = {
            "layers": layers,
            "seq": seq,
            "batch": batch_size,
            "method": m,
            "floor": floor,
            "median_s": statistics.median(samples[m]),
            "min_s": min(samples[m]),
            "samples_s": samples[m],
        }
        if floor in samples:
            row["ratio_to_floor"] = row["median_s"] / statistics.median(samples[floor])
            row["ratio_min_to_floor_min"] = row["min_s"] / min(samples[floor])
        row.update(agreement.get(m, {}))
        rows.append(row)
    return rows


def _agreement(results: dict[str, Any]) -> dict[str, dict]:
    """Largest score difference of each rollout / Chefer variant to its default."""
    out: dict[str, dict] = {}
    for variant, default in (
        ("inference_explicit", "inference"),
        ("forward_backward_explicit", "forward_backward"),
        ("inference_in_blocks", "inference"),
        ("rollout_keep_maps", "rollout"),
        ("rollout_low_memory", "rollout"),
        ("chefer_per_head", "chefer"),
    ):
        if variant in results and default in results:
            got, want = results[variant], results[default]
            if isinstance(got, dict):  # scores per feature; inference returns logits
                got, want = got["codes"], want["codes"]
            diff = (got.double() - want.double()).abs()
            out[variant] = {f"max_abs_diff_to_{default}": float(diff.max())}
    return out


# --------------------------------------------------------------------------- memory
def memory_worker(spec: dict) -> dict:
    """In a fresh process: build model and batch, tiny warm-up, measure one call."""
    device = spec["device"]
    model = model_for(spec["method"], spec["layers"], spec["dim"], spec["heads"], device)
    batch = speed.make_batch(model, spec["batch"], spec["seq"], seed=spec["seq"], device=device)
    method_callable(spec["method"], model, speed.make_batch(model, 1, 8, 0, device))()
    fn = method_callable(spec["method"], model, batch)
    gc.collect()
    out: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        elapsed, result = speed.timed_once(fn, device)
        peak = torch.cuda.max_memory_allocated()
        out["metric"] = "torch.cuda.max_memory_allocated"
    else:
        speed._reset_peak_rss()
        baseline = (speed._proc_status_kib("VmHWM") or 0) * 1024
        elapsed, result = speed.timed_once(fn, device)
        peak = (speed._proc_status_kib("VmHWM") or 0) * 1024
        out["metric"] = "VmHWM (reset before the call)"
    del result
    out.update(baseline_mib=baseline / 2**20, peak_mib=peak / 2**20)
    out.update(extra_mib=(peak - baseline) / 2**20, elapsed_s=elapsed)
    return out


def measure_memory(spec: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"failed rc={proc.returncode}: {tail}"}


def memory_config(
    layers: int, seq: int, batch_size: int, methods: list[str], dim: int, heads: int, device: str
) -> list[dict]:
    rows = []
    for m in methods:
        speed.log(f"  memory L={layers} seq={seq} batch={batch_size} {m}")
        spec = {"layers": layers, "seq": seq, "batch": batch_size, "method": m}
        rows.append(
            {**spec, **measure_memory({**spec, "dim": dim, "heads": heads, "device": device})}
        )
    by_method = {r["method"]: r for r in rows}
    for row in rows:
        floor = by_method.get(FLOORS[row["method"]], {})
        for what in ("peak_mib", "extra_mib"):
            if row.get(what) and floor.get(what):
                row[f"{what.removesuffix('_mib')}_ratio_to_floor"] = row[what] / floor[what]
    return rows


# --------------------------------------------------------------------------- report
def table(time_rows: list[dict], memory_rows: list[dict]) -> str:
    memory = {(r["layers"], r["seq"], r["batch"], r["method"]): r for r in memory_rows}
    lines = [
        "| layers | seq | batch | method | median s | × floor (median) | × floor (min) "
        "| peak MiB | peak × floor | extra MiB | extra × floor |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(value: Any, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for r in time_rows:
        m = memory.get((r["layers"], r["seq"], r["batch"], r["method"]), {})
        lines.append(
            f"| {r['layers']} | {r['seq']} | {r['batch']} | {r['method']} | {f(r['median_s'])} "
            f"| {f(r.get('ratio_to_floor'))} | {f(r.get('ratio_min_to_floor_min'))} "
            f"| {f(m.get('peak_mib'), 0)} | {f(m.get('peak_ratio_to_floor'))} "
            f"| {f(m.get('extra_mib'), 0)} | {f(m.get('extra_ratio_to_floor'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="+", default=["6x1024x8", "6x4096x2"])
    parser.add_argument(
        "--chefer-configs",
        nargs="*",
        default=["6x1024x8", "6x4096x2"],
        help="configs that run the gradient methods",
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/explain_cost.json"))
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker is not None:
        print(RESULT_TAG + json.dumps(memory_worker(json.loads(args.memory_worker))), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.quick:
        args.configs, args.chefer_configs, args.repeats = ["2x32x2"], ["2x32x2"], 1
        args.methods = list(METHODS)
        args.dim, args.heads = 16, 2
    meta = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()),
        "dim": args.dim,
        "heads": args.heads,
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
    time_rows: list[dict] = []
    memory_rows: list[dict] = []
    for text in args.configs:
        layers, seq, batch_size = parse_config(text)
        methods = [m for m in args.methods if m in ROLLOUT_METHODS or text in args.chefer_configs]
        start = time.perf_counter()
        time_rows += time_config(
            layers, seq, batch_size, methods, args.repeats, args.dim, args.heads, args.device
        )
        if not args.no_memory:
            memory_rows += memory_config(
                layers, seq, batch_size, methods, args.dim, args.heads, args.device
            )
        speed.log(f"{text}: {time.perf_counter() - start:.0f} s")
    meta["loadavg_end"] = list(os.getloadavg())
    report = table(time_rows, memory_rows)
    print(report)
    print(f"load average start {meta['loadavg_start']}, end {meta['loadavg_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "time": time_rows, "memory": memory_rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
