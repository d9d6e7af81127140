"""Speed and memory of ehrlens interpreters against their floors and an old-way baseline.

A ``Transformer`` (embedding_dim 128, 4 heads) on one ``"codes"`` sequence feature, with 2 and
6 layers, at 64, 256 and 1024 codes (the attention sequence adds [CLS]) and batch sizes 1 and
32. Methods:

- ``inference``: plain forward under ``torch.inference_mode()``: the floor of rollout/flow;
- ``rollout``: ehrlens :class:`AttentionRollout` under ``inference_mode``;
- ``rollout_old_way``: a BASELINE implemented in this file, not ehrlens code: grad-enabled
  forward with gradient capture on (per-head maps kept in the autograd graph, tensor hooks
  registered), heads fused by mean, full ``[seq, seq]`` products
  ``A_hat_L @ ... @ A_hat_1`` with ``A_hat = 0.5 * (A + I)``, read out at row 0 without
  column 0;
- ``forward_backward``: forward, ``logit[:, 0].sum().backward()``, grads set to None: the
  floor of Chefer;
- ``chefer``: ehrlens :class:`CheferRelevance`;
- ``integrated_gradients``: Captum integrated gradients, 50 steps, for context, where flow runs;
- ``flow``: ehrlens :class:`AttentionFlow` under ``inference_mode``, for context, at 64 codes
  only (its cost grows about as ``seq^3``).

Time: one process, interleaved repetitions (each repetition runs every method once in turn),
medians, one untimed warm-up per method; ratios are to the floor's median in the same config
(the JSON also has the ratio of minima, steadier on a busy machine). Memory: one fresh
subprocess per (config, method): build model and batch, a tiny warm-up (batch 1, 8 codes),
then one call; the peak RSS during the call (``VmHWM``, reset just before it; ``ru_maxrss``
where ``/proc`` is missing: on Linux a child's ``ru_maxrss`` starts at its parent's peak) and
the peak minus the RSS before the call ("extra"). On CUDA, ``torch.cuda.max_memory_allocated``
(reset before the call) instead. Also: patients explained per second over a dataloader
(synthetic cohort), and rollout on batch 256 x 1024 codes x 6 layers (the "fits in 24 GiB"
goal).

    python benchmarks/speed.py              # full run (about 15 minutes on 2 CPU cores)
    python benchmarks/speed.py --quick      # seconds; used by the test suite
    python benchmarks/speed.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ehrlens.app.random_models import random_code_batch, random_code_transformer
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader, move_to_device
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    IntegratedGradients,
)
from ehrlens.models import Transformer

METHODS = (
    "inference",
    "rollout",
    "rollout_low_memory",
    "rollout_old_way",
    "forward_backward",
    "chefer",
    "flow",
    "integrated_gradients",
)
#: Costly methods shown for context only at the flow sequence lengths, when fast enough.
CONTEXT_METHODS = ("flow", "integrated_gradients")
LABELS = {
    "inference": "inference (floor)",
    "rollout": "ehrlens rollout",
    "rollout_low_memory": "ehrlens rollout, low_memory=True",
    "rollout_old_way": "rollout, old way [baseline]",
    "forward_backward": "forward+backward (floor)",
    "chefer": "ehrlens chefer",
    "flow": "ehrlens flow",
    "integrated_gradients": "Captum integrated gradients (50 steps)",
}
FLOORS = {
    "inference": "inference",
    "rollout": "inference",
    "rollout_low_memory": "inference",
    "rollout_old_way": "inference",
    "forward_backward": "forward_backward",
    "chefer": "forward_backward",
    "flow": "inference",
    "integrated_gradients": "forward_backward",
}
FLOW_SKIP_SEQ = "skipped (cost ~seq^3)"
FLOW_MAX_SECONDS = 60.0  # flow cases estimated above this (per call) are skipped
BIG_REPEATS = 3  # repetitions at seq >= 1024 with batch >= 32, or when a round is slow
SLOW_ROUND_SECONDS = 10.0  # a warm-up round of every method longer than this: BIG_REPEATS
LARGE_CASE = {"layers": 6, "seq": 1024, "batch": 256, "method": "rollout"}
GIB = 1024**3
RESULT_TAG = "SPEED_MEMORY_RESULT "


# --------------------------------------------------------------------------- model and data
def build_model(layers: int, dim: int, heads: int, device: str) -> Transformer:
    """A seeded, untrained Transformer on one ``"codes"`` sequence feature (500 codes)."""
    return random_code_transformer(layers, dim, heads).to(device).eval()


def make_batch(model: Transformer, batch_size: int, seq: int, seed: int, device: str) -> dict:
    """Random code ids (no padding) ``[batch_size, seq]`` on ``device``."""
    return move_to_device(random_code_batch(model, batch_size, seq, seed), device)


# --------------------------------------------------------------------------- methods
def rollout_old_way(model: Transformer, batch: dict) -> dict[str, torch.Tensor]:
    """BASELINE, not ehrlens code: rollout as computed before forward-only capture.

    Grad-enabled forward with gradient capture on (``set_attention_hooks(True,
    capture_gradients=True)``): every layer's per-head map stays in the autograd graph with a
    tensor hook registered on it. Then heads are fused (mean), ``A_hat = 0.5 * (A + I)``, and
    full ``[seq, seq]`` matrices are multiplied, ``R = A_hat_L @ ... @ A_hat_1``
    (``O(layers * seq^3)``), read out at row 0 ([CLS]) without column 0. The products run on
    detached maps (they are not recorded in the graph too), which favours the baseline.
    """
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        with torch.enable_grad():
            outputs = model(**batch)  # kept alive while the products run, as a caller would
            scores = {}
            for key, maps in model.get_attention_layers().items():
                product = None
                for attention, _ in maps:  # input side first
                    fused = attention.detach().mean(dim=1)
                    eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
                    a_hat = 0.5 * (fused + eye)
                    product = a_hat if product is None else torch.bmm(a_hat, product)
                scores[key] = product[:, 0, 1:]
            del outputs
        return scores
    finally:
        model.set_attention_hooks(False)


def method_callable(method: str, model: Transformer, batch: dict) -> Callable[[], Any]:
    """A zero-argument function that runs ``method`` once on ``batch``."""
    if method == "inference":

        def run() -> Any:
            with torch.inference_mode():
                return model(**batch)["logit"]

    elif method == "rollout":
        rollout = AttentionRollout(model, head_fusion="mean")

        def run() -> Any:
            with torch.inference_mode():
                return rollout.attribute(**batch)

    elif method == "rollout_low_memory":
        low_memory = AttentionRollout(model, head_fusion="mean", low_memory=True)

        def run() -> Any:
            with torch.inference_mode():
                return low_memory.attribute(**batch)

    elif method == "rollout_old_way":

        def run() -> Any:
            return rollout_old_way(model, batch)

    elif method == "forward_backward":

        def run() -> Any:
            out = model(**batch)
            out["logit"][:, 0].sum().backward()
            model.zero_grad(set_to_none=True)
            return out["logit"].detach()

    elif method == "chefer":
        chefer = CheferRelevance(model)

        def run() -> Any:
            return chefer.attribute(**batch)

    elif method == "integrated_gradients":
        gradients = IntegratedGradients(model, n_steps=50)

        def run() -> Any:
            return gradients.attribute(**batch)

    elif method == "flow":
        flow = AttentionFlow(model, head_fusion="mean")

        def run() -> Any:
            with torch.inference_mode():
                return flow.attribute(**batch)

    else:
        raise ValueError(f"unknown method {method!r}")
    return run


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_once(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def is_big(seq: int, batch_size: int) -> bool:
    return seq >= 1024 and batch_size >= 32


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the script was loaded."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing
def time_configs(
    layer_counts: Sequence[int],
    seqs: Sequence[int],
    batches: Sequence[int],
    flow_seqs: Sequence[int],
    repeats: int,
    dim: int,
    heads: int,
    device: str,
) -> tuple[list[dict], dict[tuple, str]]:
    """Time every method at every config. Returns rows and ``{(L, seq, batch, method): why}``
    for the cases that were skipped (the memory phase skips them too)."""
    rows: list[dict] = []
    skipped: dict[tuple, str] = {}
    for layers in layer_counts:
        model = build_model(layers, dim, heads, device)
        warmed: set[str] = set()
        for seq in seqs:
            for batch_size in batches:
                key = (layers, seq, batch_size)
                batch = make_batch(model, batch_size, seq, seed=seq, device=device)
                methods = [m for m in METHODS if m not in CONTEXT_METHODS]
                for context in CONTEXT_METHODS:
                    if seq not in flow_seqs:
                        skipped[(*key, context)] = FLOW_SKIP_SEQ
                        continue
                    # Estimate from one sample (also the method's warm-up at batch 1).
                    one = {"codes": batch["codes"][:1], "masks": {}, "times": {}}
                    probe, _ = timed_once(method_callable(context, model, one), device)
                    estimate = probe * batch_size
                    if estimate > FLOW_MAX_SECONDS:
                        skipped[(*key, context)] = (
                            f"skipped (estimated {estimate:.0f} s per call > "
                            f"{FLOW_MAX_SECONDS:.0f} s)"
                        )
                    else:
                        methods.append(context)
                fns = {m: method_callable(m, model, batch) for m in methods}
                big = is_big(seq, batch_size)
                results: dict[str, Any] = {}
                warmup = {}
                round_s = 0.0
                for m, fn in fns.items():
                    # At the big sizes a method already warmed on this model is not warmed
                    # again: one call costs up to a minute there, and lazy initialisation is
                    # done.
                    warmup[m] = not (big and m in warmed)
                    if warmup[m]:
                        log(f"  warm-up L={layers} seq={seq} batch={batch_size} {m}")
                        elapsed, results[m] = timed_once(fn, device)
                        round_s += elapsed
                        warmed.add(m)
                slow = big or round_s > SLOW_ROUND_SECONDS
                reps = min(repeats, BIG_REPEATS) if slow else repeats
                samples: dict[str, list[float]] = {m: [] for m in fns}
                for rep in range(reps):  # interleaved: drifts hit every method alike
                    log(f"  rep {rep + 1}/{reps} L={layers} seq={seq} batch={batch_size}")
                    for m, fn in fns.items():
                        elapsed, results[m] = timed_once(fn, device)
                        samples[m].append(elapsed)
                same = torch.allclose(
                    results["rollout"]["codes"].float().cpu(),
                    results["rollout_old_way"]["codes"].float().cpu(),
                    rtol=1e-4,
                    atol=1e-6,
                )
                del results
                medians = {m: statistics.median(s) for m, s in samples.items()}
                for m in METHODS:
                    row = {
                        "layers": layers,
                        "seq": seq,
                        "batch": batch_size,
                        "method": m,
                        "label": LABELS[m],
                        "floor": FLOORS[m],
                    }
                    if m not in fns:
                        row.update(skipped=skipped[(*key, m)], median_s=None, ratio_to_floor=None)
                    else:
                        row.update(
                            skipped=None,
                            median_s=medians[m],
                            min_s=min(samples[m]),
                            max_s=max(samples[m]),
                            repeats=reps,
                            warmup=warmup[m],
                            samples_s=samples[m],
                            ratio_to_floor=medians[m] / medians[FLOORS[m]],
                            ratio_min_to_floor_min=min(samples[m]) / min(samples[FLOORS[m]]),
                        )
                    if m == "rollout_old_way":
                        row["same_scores_as_ehrlens_rollout"] = same
                    rows.append(row)
                log(
                    f"L={layers} seq={seq} batch={batch_size}: "
                    + ", ".join(f"{m} {medians[m]:.4f}s" for m in fns)
                )
        del model
        gc.collect()
    return rows, skipped


# --------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` of this process from ``/proc/self/status`` (Linux), in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False if unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _maxrss_kib() -> float:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1024 if sys.platform == "darwin" else float(maxrss)  # bytes on macOS


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: build model and batch, tiny warm-up, measure one call.

    CPU peak: ``VmHWM`` (the RSS high-water mark of this process's own memory) where
    ``/proc`` has it, reset to the current RSS just before the call, so ``extra`` is what the
    call added at its peak. ``ru_maxrss`` is recorded too but is not used on Linux: a process
    started by ``subprocess`` inherits the parent's RSS high-water mark in ``ru_maxrss``
    (``execve`` folds the old address space's peak into it), so in a child of a large
    benchmark process it reports the parent's peak, not the child's.
    """
    device = spec["device"]
    model = build_model(spec["layers"], spec["dim"], spec["heads"], device)
    batch = make_batch(model, spec["batch"], spec["seq"], seed=spec["seq"], device=device)
    # Lazy initialisation (kernels, thread pools, allocator, igraph import) is not counted.
    tiny = make_batch(model, 1, 8, seed=0, device=device)
    method_callable(spec["method"], model, tiny)()
    fn = method_callable(spec["method"], model, batch)
    gc.collect()
    out: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        elapsed, result = timed_once(fn, device)
        peak = torch.cuda.max_memory_allocated()
        out.update(metric="torch.cuda.max_memory_allocated", baseline_mib=baseline / 2**20)
        out.update(peak_mib=peak / 2**20, extra_mib=(peak - baseline) / 2**20)
    else:
        lifetime_hwm = _proc_status_kib("VmHWM")
        reset = _reset_peak_rss()
        maxrss_before = _maxrss_kib()
        baseline = _proc_status_kib("VmHWM" if reset else "VmRSS")
        elapsed, result = timed_once(fn, device)
        maxrss_after = _maxrss_kib()
        peak = _proc_status_kib("VmHWM")
        if baseline is None or peak is None:  # no /proc: ru_maxrss (see the docstring)
            out["metric"] = "ru_maxrss"
            baseline, peak = maxrss_before, maxrss_after
        else:
            out["metric"] = "VmHWM (reset before the call)" if reset else "VmHWM"
            out["lifetime_peak_mib"] = max(peak, lifetime_hwm or 0) / 1024
        out.update(baseline_mib=baseline / 1024, peak_mib=peak / 1024)
        out["extra_mib"] = (peak - baseline) / 1024
        out["ru_maxrss_before_mib"] = maxrss_before / 1024
        out["ru_maxrss_after_mib"] = maxrss_after / 1024
    del result
    out["elapsed_s"] = elapsed
    out["threads"] = torch.get_num_threads()
    return out


def measure_memory(spec: dict) -> dict:
    """Run :func:`memory_worker` in a fresh subprocess: one process per measurement."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
    return {"error": f"failed rc={proc.returncode}{killed}: {tail}"}


def _estimated_bytes(layers: int, seq: int, batch_size: int, heads: int) -> int:
    """A rough upper bound on what one call holds: a few per-head maps per layer."""
    return 4 * batch_size * (seq + 1) ** 2 * heads * layers * 3


def memory_configs(
    configs: Sequence[tuple[int, int, int]],
    skipped: dict[tuple, str],
    dim: int,
    heads: int,
    device: str,
    jobs: int = 2,
) -> list[dict]:
    """One subprocess per (config, method). Small cases (estimated under 1 GiB) run ``jobs``
    at a time, which changes no process's own peak; the others run one by one."""
    rows, pending = [], []
    for layers, seq, batch_size in configs:
        for m in METHODS:
            row = {"layers": layers, "seq": seq, "batch": batch_size, "method": m}
            row["label"] = LABELS[m]
            row["skipped"] = skipped.get((layers, seq, batch_size, m))
            rows.append(row)
            if row["skipped"] is None:
                spec = {"layers": layers, "seq": seq, "batch": batch_size, "method": m}
                pending.append((row, {**spec, "dim": dim, "heads": heads, "device": device}))

    def run(item: tuple[dict, dict]) -> None:
        row, spec = item
        log(f"  memory L={row['layers']} seq={row['seq']} batch={row['batch']} {row['method']}")
        row.update(measure_memory(spec))

    small = [
        item
        for item in pending
        if _estimated_bytes(item[1]["layers"], item[1]["seq"], item[1]["batch"], heads) < GIB
    ]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run, small))
    for item in pending:
        if not any(item is done for done in small):
            run(item)

    for layers, seq, batch_size in configs:
        config_rows = [
            r for r in rows if (r["layers"], r["seq"], r["batch"]) == (layers, seq, batch_size)
        ]
        base = next(r for r in config_rows if r["method"] == "inference").get("extra_mib")
        for row in config_rows:
            extra = row.get("extra_mib")
            ok = extra is not None and base is not None and base > 0
            row["extra_ratio_to_inference"] = extra / base if ok else None
    return rows


def _available_bytes(device: str) -> int | None:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def large_rollout(dim: int, heads: int, device: str) -> dict:
    """Rollout at batch 256 x 1024 codes x 6 layers: memory (and time, once) in a subprocess."""
    layers, seq, batch_size = LARGE_CASE["layers"], LARGE_CASE["seq"], LARGE_CASE["batch"]
    n = seq + 1
    # Fused maps kept for every layer, plus one layer's scores and softmax output per head.
    need = 4 * batch_size * n * n * (layers + 2 * heads + 1)
    row: dict[str, Any] = {**LARGE_CASE, "label": LABELS["rollout"], "estimated_gib": need / GIB}
    available = _available_bytes(device)
    if available is not None and available < 1.1 * need:
        row["skipped"] = (
            f"skipped (needs ~{need / GIB:.1f} GiB, {available / GIB:.1f} GiB available)"
        )
        return row
    log(f"  memory+time L={layers} seq={seq} batch={batch_size} rollout (large case)")
    spec = {**LARGE_CASE, "dim": dim, "heads": heads, "device": device}
    row.update(skipped=None, **measure_memory(spec))
    if "peak_mib" in row:
        row["fits_24_gib"] = row["peak_mib"] * 2**20 <= 24 * GIB
    return row


# --------------------------------------------------------------------------- dataloader
def loader_throughput(n_patients: int, batch_size: int, repeats: int, device: str) -> dict:
    """Patients per second over a whole dataloader: inference vs rollout, end to end."""
    cohort = generate_cohort(n_patients=n_patients, layout="sequence", seed=0)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=2).to(device).eval()
    loader = get_dataloader(dataset, batch_size)
    rollout = AttentionRollout(model, head_fusion="mean")
    longest = {key: 0 for key in cohort.input_schema}
    for batch in loader:
        for key in longest:
            longest[key] = max(longest[key], int(batch[key].shape[1]))

    def inference() -> None:
        with torch.inference_mode():
            for batch in loader:
                model(**move_to_device(batch, device))

    def explain() -> None:
        with torch.inference_mode():
            for batch in loader:
                rollout.attribute(**move_to_device(batch, device))

    cases = {"inference": inference, "rollout": explain}
    first = move_to_device(next(iter(loader)), device)
    with torch.inference_mode():  # warm-up: one batch each
        model(**first)
        rollout.attribute(**first)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(repeats):
        log(f"  dataloader rep {rep + 1}/{repeats}")
        for name, fn in cases.items():
            samples[name].append(timed_once(fn, device)[0])
    medians = {name: statistics.median(s) for name, s in samples.items()}
    rows = [
        {
            "method": name,
            "median_s": medians[name],
            "patients_per_s": n_patients / medians[name],
            "ratio_to_inference": medians[name] / medians["inference"],
            "samples_s": samples[name],
        }
        for name in cases
    ]
    return {
        "n_patients": n_patients,
        "batch_size": batch_size,
        "batches": len(loader),
        "features": list(cohort.input_schema),
        "longest_sequence": longest,
        "model": {"embedding_dim": 64, "heads": 4, "num_layers": 2},
        "repeats": repeats,
        "rows": rows,
    }


# --------------------------------------------------------------------------- tables
def _s(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def time_table(rows: list[dict]) -> str:
    lines = [
        "| layers | seq | batch | method | median s | × floor | floor | reps | min–max s "
        "| × floor (min) |",
        "|---:|---:|---:|---|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        head = f"| {r['layers']} | {r['seq']} | {r['batch']} | {r['label']} |"
        if r["skipped"]:
            lines.append(f"{head} {r['skipped']} | | {r['floor']} | | | |")
            continue
        note = "" if r["warmup"] else " (no warm-up)"
        if r.get("same_scores_as_ehrlens_rollout") is False:
            note += " SCORES DIFFER"
        lines.append(
            f"{head} {_s(r['median_s'])} | {r['ratio_to_floor']:.2f} | {r['floor']} | "
            f"{r['repeats']}{note} | {_s(r['min_s'])}–{_s(r['max_s'])} | "
            f"{r['ratio_min_to_floor_min']:.2f} |"
        )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    lines = [
        "| layers | seq | batch | method | peak MiB | extra MiB | extra ÷ inference extra |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['layers']} | {r['seq']} | {r['batch']} | {r['label']} |"
        if r.get("skipped"):
            lines.append(f"{head} {r['skipped']} | | |")
        elif "error" in r:
            lines.append(f"{head} {r['error']} | | |")
        else:
            ratio = r["extra_ratio_to_inference"]
            lines.append(
                f"{head} {r['peak_mib']:.1f} | {r['extra_mib']:.1f} | "
                f"{'n/a' if ratio is None else f'{ratio:.2f}'} |"
            )
    return "\n".join(lines)


def large_table(row: dict) -> str:
    lines = [
        "| layers | seq | batch | method | time once s | peak MiB | extra MiB | ≤ 24 GiB |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    head = f"| {row['layers']} | {row['seq']} | {row['batch']} | {row['label']} |"
    if row.get("skipped") or "error" in row:
        lines.append(f"{head} {row.get('skipped') or row['error']} | | | |")
    else:
        fits = "yes" if row["fits_24_gib"] else "no"
        lines.append(
            f"{head} {row['elapsed_s']:.2f} | {row['peak_mib']:.1f} | {row['extra_mib']:.1f} | "
            f"{fits} |"
        )
    return "\n".join(lines)


def loader_table(result: dict) -> str:
    lines = [
        "| method | median s (whole loader) | patients/s | × inference |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['median_s']:.3f} | {r['patients_per_s']:.1f} | "
            f"{r['ratio_to_inference']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def _metadata(args: argparse.Namespace, device: str, dim: int, heads: int) -> dict:
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "requested_device": args.device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "embedding_dim": dim,
        "heads": heads,
        "quick": args.quick,
        "flow_max_seconds": FLOW_MAX_SECONDS,
        "big_config_repeats": BIG_REPEATS,
        "slow_round_seconds": SLOW_ROUND_SECONDS,
        "memory_metric": "torch.cuda.max_memory_allocated"
        if device.startswith("cuda")
        else "peak RSS of a fresh subprocess per config and method (VmHWM reset before the "
        "call; ru_maxrss only where /proc is missing)",
    }
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    if hasattr(os, "getloadavg"):
        meta["loadavg_start"] = list(os.getloadavg())
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, well under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/speed.json"))
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--seqs", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip memory subprocesses")
    parser.add_argument("--no-loader", action="store_true", help="skip the dataloader run")
    parser.add_argument("--no-large", action="store_true", help="skip batch 256 x 1024 x 6")
    parser.add_argument(
        "--memory-jobs", type=int, default=2, help="small memory subprocesses run at a time"
    )
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_worker is not None:
        result = memory_worker(json.loads(args.memory_worker))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        log("warning: --device cuda but torch.cuda.is_available() is False; running on cpu")
        device = "cpu"
    dim, heads = 128, 4
    if args.quick:
        layer_counts, seqs, batches = [2], [16, 32], [1, 4]
        flow_seqs, repeats = seqs, args.repeats or 2
        memory_seqs, memory_batches = [32], [4]
        n_patients, loader_repeats = 200, 2
    else:
        layer_counts, seqs, batches = [2, 6], [64, 256, 1024], [1, 32]
        flow_seqs, repeats = [64], args.repeats or 5
        memory_seqs, memory_batches = seqs, batches
        n_patients, loader_repeats = 2000, 3
    layer_counts = args.layers or layer_counts
    seqs = args.seqs or seqs
    batches = args.batches or batches
    memory_seqs = [s for s in memory_seqs if s in seqs] if args.seqs is None else seqs
    memory_batches = (
        [b for b in memory_batches if b in batches] if args.batches is None else batches
    )

    start = time.perf_counter()
    meta = _metadata(args, device, dim, heads)
    log(f"timing: layers {layer_counts}, seq {seqs}, batch {batches}, {repeats} repetitions")
    time_rows, skipped = time_configs(
        layer_counts, seqs, batches, flow_seqs, repeats, dim, heads, device
    )
    print("## Time (median of interleaved repetitions)\n")
    print(time_table(time_rows), flush=True)

    memory_rows: list[dict] = []
    if not args.no_memory:
        configs = [(n, s, b) for n in layer_counts for s in memory_seqs for b in memory_batches]
        memory_rows = memory_configs(configs, skipped, dim, heads, device, args.memory_jobs)
        print("\n## Memory (one fresh subprocess per row)\n")
        print(memory_table(memory_rows), flush=True)

    loader = None
    if not args.no_loader:
        loader = loader_throughput(n_patients, 64, loader_repeats, device)
        print(
            f"\n## Patients explained per second ({loader['n_patients']} synthetic patients, "
            f"dataloader batch {loader['batch_size']}, Transformer 64/4 heads/2 layers)\n"
        )
        print(loader_table(loader), flush=True)

    large = None
    if not args.quick and not args.no_large:
        large = large_rollout(dim, heads, device)
        print("\n## Rollout at batch 256 (the 'fits in 24 GiB' goal; one subprocess)\n")
        print(large_table(large), flush=True)

    meta["total_runtime_s"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        meta["loadavg_end"] = list(os.getloadavg())
    meta["repeats"] = repeats
    meta["configs"] = {"layers": layer_counts, "seq": seqs, "batch": batches, "flow_seq": flow_seqs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "time": time_rows,
        "memory": memory_rows,
        "dataloader": loader,
        "large": large,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\ntotal runtime {meta['total_runtime_s']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
