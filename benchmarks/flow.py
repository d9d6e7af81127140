"""Attention flow: ehrlens (igraph, reduced graph) vs a networkx reference, per sample.

Both solve the same problem on the same attention graph (Abnar & Zuidema 2020): a node per
position per layer boundary, an edge ``(l-1, j) -> (l, i)`` with capacity
``A_hat_l[i, j] = 0.5 * (mean_heads(A_l)[i, j] + I[i, j])``, and the score of input token
``j`` is the maximum flow from ``(0, j)`` to the [CLS] node at the top, ``(L, 0)``.

- **ehrlens**: ``AttentionFlow(model, normalize=False).attribute(**batch)`` under
  ``torch.inference_mode()`` on a batch (forward pass, head fusion and every max-flow
  included), divided by the batch size; once with ``n_jobs=1`` and once with ``n_jobs=2``
  (worker processes started by an untimed warm-up call, then reused).
- **networkx**: the full layered graph built as an ``nx.DiGraph`` (time included, once per
  sample) and ``nx.maximum_flow_value`` (its default, preflow-push) from ``(0, j)`` to
  ``(L, 0)`` for every input token ``j``, one call per token as in the authors' code. Maps
  are captured with the model's own hooks and fused in float64. Where the whole sample would
  take longer than ``--ref-budget`` seconds (estimated from a fixed, evenly spaced subset of
  ``--ref-tokens`` source tokens), only that subset is solved and the per-sample time is
  extrapolated linearly: ``build + n_tokens * mean(token time)``; the table and the JSON say
  so ("extrapolated from k of n tokens").
- **rollout**: ``AttentionRollout`` on the same batch, for scale.

Scores are compared on every token the reference solved (max relative difference). The
model is a seeded random :class:`~ehrlens.models.Transformer` (embedding_dim 64, 4 heads)
on random code ids; its ``qkv`` weights are multiplied by ``--qkv-scale`` (default 4) so
that attention is less uniform than at initialisation and the flows differ between tokens
(``--qkv-scale 1`` keeps the initial weights).

    python benchmarks/flow.py            # full table (a few minutes)
    python benchmarks/flow.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from ehrlens.app.random_models import random_code_batch, random_code_transformer
from ehrlens.interpret import AttentionFlow, AttentionRollout
from ehrlens.models import Transformer

READOUT = 0  # [CLS] is attention position 0; input token j is attention position j + 1


def build_model(layers: int, dim: int, heads: int, qkv_scale: float) -> Transformer:
    """Untrained model on random codes, attention sharpened by scaling the q/k/v weights."""
    model = random_code_transformer(layers, dim, heads)
    with torch.no_grad():
        for block in model.encoders["codes"].blocks:
            block.attention.qkv.weight.mul_(qkv_scale)
    return model


def captured_a_hat(model: Transformer, batch: dict) -> np.ndarray:
    """``[batch, layers, s, s]`` float64 ``0.5 * (mean_heads(A) + I)`` from the model's hooks."""
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.inference_mode():
            model(**batch)
        maps = [a.double().mean(dim=1) for a, _ in model.get_attention_layers()["codes"]]
    finally:
        model.set_attention_hooks(False)
    fused = torch.stack(maps, dim=1)
    return (0.5 * (fused + torch.eye(fused.shape[-1], dtype=torch.float64))).numpy()


def nx_graph(a_hat: np.ndarray) -> nx.DiGraph:
    """The full layered graph: node ``(l, i)``, edge ``(l-1, j) -> (l, i)``, capacity
    ``a_hat[l-1, i, j]`` (zero-capacity edges left out: they carry no flow)."""
    layers, seq, _ = a_hat.shape
    graph = nx.DiGraph()
    graph.add_nodes_from((layer, i) for layer in range(layers + 1) for i in range(seq))
    for layer in range(1, layers + 1):
        for i in range(seq):
            for j in range(seq):
                capacity = float(a_hat[layer - 1, i, j])
                if capacity > 0:
                    graph.add_edge((layer - 1, j), (layer, i), capacity=capacity)
    return graph


def token_subset(n_tokens: int, k: int) -> list[int]:
    """A fixed, evenly spaced subset of ``k`` input tokens (first and last included)."""
    if k >= n_tokens:
        return list(range(n_tokens))
    return sorted({round(float(x)) for x in np.linspace(0, n_tokens - 1, k)})


def reference_sample(a_hat: np.ndarray, mode: str, ref_tokens: int, budget_s: float) -> dict:
    """networkx flows of one sample's input tokens, timed.

    ``mode``: ``"full"`` solves every token, ``"subset"`` only the subset, ``"auto"`` the
    subset first and the rest only when the estimated sample time is within ``budget_s``.
    """
    layers, seq, _ = a_hat.shape
    n_tokens = seq - 1  # [CLS] is not an input
    start = time.perf_counter()
    graph = nx_graph(a_hat)
    build_s = time.perf_counter() - start
    sink = (layers, READOUT)
    values: dict[int, float] = {}
    token_s: dict[int, float] = {}

    def solve(tokens: list[int]) -> None:
        for j in tokens:
            start = time.perf_counter()
            values[j] = nx.maximum_flow_value(graph, (0, j + 1), sink)
            token_s[j] = time.perf_counter() - start

    subset = list(range(n_tokens)) if mode == "full" else token_subset(n_tokens, ref_tokens)
    solve(subset)
    estimate = build_s + n_tokens * statistics.fmean(token_s.values())
    if mode == "auto" and len(values) < n_tokens and estimate <= budget_s:
        solve([j for j in range(n_tokens) if j not in values])
    extrapolated = len(values) < n_tokens
    per_sample = estimate if extrapolated else build_s + sum(token_s.values())
    return {
        "values": values,
        "seconds": per_sample,
        "build_s": build_s,
        "extrapolated": extrapolated,
        "tokens_timed": len(values),
        "tokens_total": n_tokens,
    }


def per_sample_time(fn, batch_size: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch_size


def run_config(
    seq: int,
    layers: int,
    mode: str,
    args: argparse.Namespace,
) -> dict:
    model = build_model(layers, args.dim, args.heads, args.qkv_scale)
    batch = random_code_batch(model, args.batch, seq, seed=1000 * layers + seq)
    serial = AttentionFlow(model, normalize=False)

    def ehrlens_serial():
        with torch.inference_mode():
            return serial.attribute(**batch)["codes"]

    def rollout():
        with torch.inference_mode():
            return AttentionRollout(model).attribute(**batch)["codes"]

    scores = ehrlens_serial().double().numpy()
    ehrlens_s = per_sample_time(ehrlens_serial, args.batch, args.repeats)
    rollout()
    rollout_s = per_sample_time(rollout, args.batch, args.repeats)
    with AttentionFlow(model, normalize=False, n_jobs=2) as parallel:
        warm = {"codes": batch["codes"][:2], "masks": {}, "times": {}}
        with torch.inference_mode():
            parallel.attribute(**warm)  # starts the worker processes

        def ehrlens_parallel():
            with torch.inference_mode():
                return parallel.attribute(**batch)["codes"]

        parallel_scores = ehrlens_parallel().double().numpy()
        parallel_s = per_sample_time(ehrlens_parallel, args.batch, args.repeats)

    a_hat = captured_a_hat(model, batch)
    refs = [
        reference_sample(a_hat[b], mode, args.ref_tokens, args.ref_budget)
        for b in range(min(args.ref_samples, args.batch))
    ]
    diffs = [
        abs(scores[b, j] - value) / max(abs(value), 1e-12)
        for b, ref in enumerate(refs)
        for j, value in ref["values"].items()
    ]
    networkx_s = statistics.fmean(r["seconds"] for r in refs)
    extrapolated = any(r["extrapolated"] for r in refs)
    timed, total = refs[0]["tokens_timed"], refs[0]["tokens_total"]
    label = (
        f"extrapolated from {timed} of {total} tokens"
        if extrapolated
        else f"measured, all {total} tokens"
    )
    return {
        "seq": seq,
        "layers": layers,
        "batch": args.batch,
        "ehrlens_s_per_sample": ehrlens_s,
        "ehrlens_n_jobs2_s_per_sample": parallel_s,
        "networkx_s_per_sample": networkx_s,
        "networkx_extrapolated": extrapolated,
        "networkx_tokens_timed": timed,
        "networkx_tokens_total": total,
        "networkx_timing": label,
        "networkx_build_s": statistics.fmean(r["build_s"] for r in refs),
        "networkx_samples": len(refs),
        "speedup": networkx_s / ehrlens_s,
        "rollout_s_per_sample": rollout_s,
        "max_rel_diff": max(diffs),
        "tokens_compared": len(diffs),
        "n_jobs2_identical": bool(np.array_equal(parallel_scores, scores)),
        "score_range": [float(scores.min()), float(scores.max())],
    }


def warm_up(args: argparse.Namespace) -> None:
    """Untimed first calls (lazy imports, allocator, igraph) before any measurement."""
    model = build_model(2, args.dim, args.heads, args.qkv_scale)
    batch = random_code_batch(model, 2, 8, seed=0)
    with torch.inference_mode():
        for _ in range(3):
            AttentionFlow(model).attribute(**batch)
            AttentionRollout(model).attribute(**batch)
    nx.maximum_flow_value(nx_graph(captured_a_hat(model, batch)[0]), (0, 1), (2, READOUT))


def table(rows: list[dict]) -> str:
    lines = [
        "| seq | layers | ehrlens s/sample | ehrlens n_jobs=2 s/sample | networkx s/sample "
        "| networkx timing | speed-up | rollout s/sample | max rel diff |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq']} | {r['layers']} | {r['ehrlens_s_per_sample']:.3g} | "
            f"{r['ehrlens_n_jobs2_s_per_sample']:.3g} | {r['networkx_s_per_sample']:.3g} | "
            f"{r['networkx_timing']} | {r['speedup']:.0f}× | "
            f"{r['rollout_s_per_sample']:.2g} | {r['max_rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8, help="samples per ehrlens batch")
    parser.add_argument("--ref-samples", type=int, default=None, help="samples for networkx")
    parser.add_argument("--ref-tokens", type=int, default=None, help="subset size (tokens)")
    parser.add_argument(
        "--ref-budget", type=float, default=60.0, help="longest networkx sample solved in full (s)"
    )
    parser.add_argument("--qkv-scale", type=float, default=4.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (tiny forwards)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/flow.json"))
    args = parser.parse_args(argv)
    args.dim, args.heads = 64, 4
    if args.quick:
        # seq 8: every token solved; seq 16: a couple of tokens, extrapolated.
        configs = [(8, 2, "full"), (16, 2, "subset")]
        args.repeats = args.repeats or 1
        args.ref_samples = args.ref_samples or 1
        args.ref_tokens = args.ref_tokens or 2
    else:
        configs = [(s, n, "auto") for n in (4, 6) for s in (16, 32, 64, 128)]
        args.repeats = args.repeats or 3
        args.ref_samples = args.ref_samples or 2
        args.ref_tokens = args.ref_tokens or 8
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        warm_up(args)
        start = time.perf_counter()
        rows = []
        for seq, layers, mode in configs:
            rows.append(run_config(seq, layers, mode, args))
            elapsed = time.perf_counter() - start
            print(f"seq {seq} layers {layers}: done ({elapsed:.0f} s)", flush=True)
    finally:
        torch.set_num_threads(threads_before)
    print(table(rows))
    meta = {
        "torch": torch.__version__,
        "networkx": nx.__version__,
        "networkx_flow_func": "preflow_push (networkx default)",
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "embedding_dim": args.dim,
        "heads": args.heads,
        "qkv_scale": args.qkv_scale,
        "batch": args.batch,
        "repeats": args.repeats,
        "ref_samples": args.ref_samples,
        "ref_tokens": args.ref_tokens,
        "ref_budget_s": args.ref_budget,
        "quick": args.quick,
        "total_s": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"total {meta['total_s']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
