"""Peak memory of explaining Hugging Face encoders: capture by hooks vs ``output_attentions``.

Two configurations built offline from config objects with random weights (seeded; nothing is
downloaded): a 6-layer MiniLM-size BERT (hidden 384, 12 heads, intermediate 1536; its position
table extended to 8192 so that long inputs can be run) and a 22-layer ModernBERT-size encoder
(``ModernBertConfig()`` defaults: hidden 768, 12 heads, intermediate 1152, 8192 positions,
local attention every layer but each third). Both with a 2-label classification head. The
adapter switches them to its ``"ehrlens"`` attention (SDPA when nothing listens, eager where
maps are needed, the fused kernel for rollout's key capture); the BASELINE rows keep them on
eager attention, as the adapter did before.

Methods, each measured in a fresh subprocess (peak RSS of the call, ``VmHWM`` reset just
before it; ``torch.cuda.max_memory_allocated`` on CUDA; and the call's wall time):

- ``inference_sdpa``: the floor, the plain ``transformers`` model built with
  ``attn_implementation="sdpa"`` (PyTorch's fused attention), forward under
  ``torch.inference_mode()``; ``forward_backward_sdpa`` (with ``--chefer``) likewise for one
  forward + backward;
- ``inference``: the wrapped model's forward under ``torch.inference_mode()``, no capture
  (SDPA under the ``"ehrlens"`` attention);
- ``rollout``: :class:`AttentionRollout`, the default: on CPU the fused kernel keeps each
  layer's queries, keys and row log-sum-exp, and the readout row is carried down by one more
  fused call per layer; no map is formed;
- ``rollout_maps``: the same with ``low_memory=False``: maps computed eagerly, captured by
  forward hooks and fused over heads at capture;
- ``inference_eager``, ``rollout_eager``: BASELINE, the adapter keeping the model on eager
  attention (before: every forward eager, rollout's maps fused at capture);
- ``rollout_output_attentions``: BASELINE, the eager adapter made to capture through
  ``output_attentions=True`` (every layer's per-head map held to the end);
- ``forward_backward`` and ``chefer``: with ``--chefer``.

Part 1 (the goal): MiniLM, 512 tokens x batch 16. Part 2: batch 1 at growing lengths per
configuration; a length is skipped when the previous one's peak, scaled by the square of the
length ratio, would pass ``--budget-gib``. The longest measured length within the budget is
reported, with the length where a quadratic through the last three measured peaks reaches the
budget (an estimate, labelled as such).

    python benchmarks/hf_memory.py                       # both parts
    python benchmarks/hf_memory.py --device cuda
    python benchmarks/hf_memory.py --configs minilm --no-ladder --repeats 2   # the goal
    python benchmarks/hf_memory.py --quick               # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed

RESULT_TAG = "HF_MEMORY_RESULT "
METHODS = (
    "inference_sdpa",
    "inference",
    "rollout",
    "rollout_maps",
    "inference_eager",
    "rollout_eager",
    "rollout_output_attentions",
)
#: BASELINE methods: the adapter keeps the model on eager attention, as before.
EAGER_METHODS = ("inference_eager", "rollout_eager", "rollout_output_attentions")
CHEFER_METHODS = ("forward_backward_sdpa", "forward_backward", "chefer")
SDPA_METHODS = ("inference_sdpa", "forward_backward_sdpa")
LADDERS = {"minilm": [512, 1024, 2048, 4096], "modernbert": [256, 512, 1024]}


def build(name: str, quick: bool = False) -> Any:
    """A seeded random-weight classifier of the named size (offline, from a config)."""
    import transformers

    torch.manual_seed(0)
    if name == "minilm":
        size = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12}
        size["intermediate_size"] = 1536
        if quick:
            size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
            size["intermediate_size"] = 64
        config = transformers.BertConfig(**size, max_position_embeddings=8192, num_labels=2)
        return transformers.BertForSequenceClassification(config).eval()
    if name == "modernbert":
        extra: dict[str, Any] = {"num_labels": 2}
        if quick:
            extra.update(hidden_size=32, num_hidden_layers=3, num_attention_heads=4)
            extra.update(intermediate_size=64, vocab_size=128, pad_token_id=1)
            extra.update(bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)
            extra.update(mask_token_id=4)
        config = transformers.ModernBertConfig(**extra)
        return transformers.ModernBertForSequenceClassification(config).eval()
    raise ValueError(f"unknown configuration {name!r}")


def make_batch(model: Any, batch: int, tokens: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(tokens)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(5, vocab, (batch, tokens), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}


def run_method(method: str, encoder: Any, batch: dict) -> Any:
    from ehrlens.interpret import AttentionRollout, CheferRelevance

    if method == "inference_sdpa":  # ``encoder`` is the plain transformers model here
        with torch.inference_mode():
            return encoder(**batch).logits
    if method == "forward_backward_sdpa":
        logits = encoder(**batch).logits
        logits[:, 0].sum().backward()
        encoder.zero_grad(set_to_none=True)
        return logits.detach()
    if method in ("inference", "inference_eager"):
        with torch.inference_mode():
            return encoder(**batch)["logit"]
    if method in ("rollout", "rollout_eager", "rollout_output_attentions"):
        with torch.inference_mode():
            return AttentionRollout(encoder).attribute(**batch)
    if method == "rollout_maps":
        with torch.inference_mode():
            return AttentionRollout(encoder, low_memory=False).attribute(**batch)
    if method == "forward_backward":
        out = encoder(**batch)
        out["logit"][:, 0].sum().backward()
        encoder.zero_grad(set_to_none=True)
        return out["logit"].detach()
    if method == "chefer":
        return CheferRelevance(encoder).attribute(**batch)
    raise ValueError(f"unknown method {method!r}")


def memory_worker(spec: dict) -> dict:
    from ehrlens.integrations import huggingface
    from ehrlens.integrations.huggingface import HuggingFaceEncoder

    if spec["method"] in EAGER_METHODS:  # BASELINE: the adapter keeps eager attention
        huggingface.supports_fused_attention = lambda model, modules: False  # type: ignore

    device = spec["device"]
    model = build(spec["config"], spec.get("quick", False))
    if spec["method"] in SDPA_METHODS:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
        else:  # transformers releases before set_attn_implementation
            model.config._attn_implementation = "sdpa"
        encoder = model.to(device)
    else:
        encoder = HuggingFaceEncoder(model).to(device)
    if spec["method"] == "rollout_output_attentions":
        encoder._attention_modules = {}  # BASELINE: the previous output_attentions capture
    batch = {k: v.to(device) for k, v in make_batch(model, spec["batch"], spec["tokens"]).items()}
    tiny = {k: v.to(device) for k, v in make_batch(model, 1, 8).items()}
    run_method(spec["method"], encoder, tiny)  # lazy initialisation is not counted
    gc.collect()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        result = run_method(spec["method"], encoder, batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out["metric"] = "torch.cuda.max_memory_allocated"
    else:
        speed._reset_peak_rss()
        baseline = (speed._proc_status_kib("VmHWM") or 0) * 1024
        result = run_method(spec["method"], encoder, batch)
        peak = (speed._proc_status_kib("VmHWM") or 0) * 1024
        out["metric"] = "VmHWM (reset before the call)"
    out["elapsed_s"] = time.perf_counter() - start
    del result
    out.update(baseline_mib=baseline / 2**20, peak_mib=peak / 2**20)
    out["extra_mib"] = (peak - baseline) / 2**20
    return out


def measure(spec: dict) -> dict:
    speed.log(f"  {spec['config']} {spec['method']} tokens={spec['tokens']} batch={spec['batch']}")
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return {**spec, **json.loads(line[len(RESULT_TAG) :])}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {**spec, "error": f"failed rc={proc.returncode}: {tail}"}


def combine(rows: list[dict]) -> dict:
    """One method's repetitions: the median time (all kept in ``elapsed_all_s``), the largest
    peak; the first error if any failed."""
    failed = [r for r in rows if "error" in r]
    if failed:
        return failed[0]
    out = dict(rows[0])
    times = sorted(r["elapsed_s"] for r in rows)
    middle = len(times) // 2
    median = times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2
    out.update(elapsed_s=median, elapsed_all_s=[r["elapsed_s"] for r in rows])
    for what in ("peak_mib", "extra_mib", "baseline_mib"):
        out[what] = max(r[what] for r in rows)
    out["repeats"] = len(rows)
    return out


def quadratic_limit(points: list[tuple[int, float]], budget_mib: float) -> float | None:
    """Length where the quadratic through the last three (length, peak MiB) points reaches
    ``budget_mib``; ``None`` with fewer points or no positive root beyond the last length."""
    if len(points) < 3:
        return None
    (x1, y1), (x2, y2), (x3, y3) = points[-3:]
    denom = (x1 - x2) * (x1 - x3) * (x2 - x3)
    a = (x3 * (y2 - y1) + x2 * (y1 - y3) + x1 * (y3 - y2)) / denom
    b = (x3 * x3 * (y1 - y2) + x2 * x2 * (y3 - y1) + x1 * x1 * (y2 - y3)) / denom
    c = y1 - a * x1 * x1 - b * x1
    if a <= 0:
        return None
    root = (-b + math.sqrt(b * b - 4 * a * (c - budget_mib))) / (2 * a)
    return root if root > x3 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="+", default=["minilm", "modernbert"])
    parser.add_argument("--budget-gib", type=float, default=20.0)
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=None, help="part 2 lengths (default per config)"
    )
    parser.add_argument(
        "--ladder-methods", nargs="+", default=list(METHODS), choices=METHODS, help="part 2"
    )
    parser.add_argument("--chefer", action="store_true", help="also forward+backward and Chefer")
    parser.add_argument("--no-goal", action="store_true", help="skip part 1 (512 x 16)")
    parser.add_argument("--no-ladder", action="store_true", help="skip part 2 (longest input)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=1, help="part 1: fresh processes per method, interleaved"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/hf_memory.json"))
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker is not None:
        print(RESULT_TAG + json.dumps(memory_worker(json.loads(args.memory_worker))), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    methods = list(METHODS) + (list(CHEFER_METHODS) if args.chefer else [])
    base = {"device": args.device, "quick": args.quick}
    meta = {
        "command": " ".join(["hf_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
        "budget_gib": args.budget_gib,
    }
    goal_rows: list[dict] = []
    if not args.no_goal:
        tokens, batch = (16, 4) if args.quick else (512, 16)
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(max(1, args.repeats)):  # round by round: load drifts hit all methods
            for m in methods:
                spec = {**base, "config": "minilm", "method": m, "tokens": tokens, "batch": batch}
                runs[m].append(measure(spec))
        goal_rows = [combine(rows) for rows in runs.values()]
        floor = {r["method"]: r for r in goal_rows}
        for r in goal_rows:
            gradient = r["method"] in CHEFER_METHODS
            ref = floor.get("forward_backward_sdpa" if gradient else "inference_sdpa", {})
            for what in ("peak_mib", "extra_mib", "elapsed_s"):
                if r.get(what) and ref.get(what):
                    name = what.removesuffix("_mib").removesuffix("_s")
                    r[f"{name}_ratio_to_floor"] = r[what] / ref[what]
    ladder_rows: list[dict] = []
    longest: list[dict] = []
    if not args.no_ladder:
        budget_mib = args.budget_gib * 1024
        for name in args.configs:
            ladder = [16, 32, 64] if args.quick else (args.lengths or LADDERS[name])
            for m in args.ladder_methods:
                points: list[tuple[int, float]] = []
                for tokens in ladder:
                    if points:
                        last_tokens, last_peak = points[-1]
                        if last_peak * (tokens / last_tokens) ** 2 > budget_mib:
                            ladder_rows.append(
                                {
                                    "config": name,
                                    "method": m,
                                    "tokens": tokens,
                                    "skipped": "over budget (estimated)",
                                }
                            )
                            continue
                    row = measure(
                        {**base, "config": name, "method": m, "tokens": tokens, "batch": 1}
                    )
                    ladder_rows.append(row)
                    if row.get("peak_mib"):
                        points.append((tokens, row["peak_mib"]))
                fit = [p for p in points if p[1] <= budget_mib]
                longest.append(
                    {
                        "config": name,
                        "method": m,
                        "longest_measured_tokens": fit[-1][0] if fit else None,
                        "estimated_limit_tokens": quadratic_limit(points, budget_mib),
                    }
                )
    meta["loadavg_end"] = list(os.getloadavg())
    for r in goal_rows:
        print(
            f"goal {r['method']}: {r.get('elapsed_s', 0):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in r.get('elapsed_all_s', []))}), "
            f"x floor {r.get('elapsed_ratio_to_floor', float('nan')):.2f}; "
            f"peak {r.get('peak_mib', 0):.0f} MiB, "
            f"x floor {r.get('peak_ratio_to_floor', float('nan')):.2f}"
        )
    for r in longest:
        print(
            f"{r['config']} {r['method']}: longest measured {r['longest_measured_tokens']}, "
            f"estimated limit {r['estimated_limit_tokens']}"
        )
    print(f"load average start {meta['loadavg_start']}, end {meta['loadavg_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"meta": meta, "goal": goal_rows, "ladder": ladder_rows, "longest": longest}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
