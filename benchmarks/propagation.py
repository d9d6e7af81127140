"""Readout-row propagation vs full matrix products, for rollout and Chefer relevance.

Both methods compute ``readout @ M_L @ ... @ M_1``. ehrlens carries the readout row down the
layers (``O(layers * seq^2)``); the full-matrix form multiplies ``seq x seq`` matrices first
(``O(layers * seq^3)``) and reads the row out afterwards. The full-matrix form is run here
through the same interpreter code, on a model that states no readout row.

Every configuration times, in one process with interleaved repetitions (medians):
plain inference under ``torch.inference_mode()`` (the floor), rollout both ways, and Chefer
both ways. Ratios are to the floor measured in the same run.

    python benchmarks/propagation.py            # full table
    python benchmarks/propagation.py --quick    # seconds; used by the test suite
    python benchmarks/propagation.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from ehrlens.app.random_models import random_code_batch, random_code_transformer
from ehrlens.data import move_to_device
from ehrlens.interpret import AttentionRollout, CheferRelevance
from ehrlens.models import Transformer


class FullMatrixTransformer(Transformer):
    """Baseline: states no readout row, so interpreters form full ``seq x seq`` products."""

    def get_readout_weights(self, **data):
        return None


def build_models(layers: int, dim: int, heads: int) -> tuple[Transformer, Transformer]:
    """The same weights twice: stating the readout row, and not (full-matrix baseline)."""
    row = random_code_transformer(layers, dim, heads)
    full = FullMatrixTransformer(row.schema, embedding_dim=dim, heads=heads, num_layers=layers)
    full.load_state_dict(row.state_dict())
    return row, full.eval()


def timed(fn, repeats: int, device: str = "cpu") -> list[float]:
    out = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def run(
    configs: list[tuple[int, int, int]], repeats: int, dim: int, heads: int, device: str = "cpu"
) -> list[dict]:
    rows = []
    for layers, seq, batch_size in configs:
        row_model, full_model = (m.to(device) for m in build_models(layers, dim, heads))
        batch = move_to_device(random_code_batch(row_model, batch_size, seq, seed=seq), device)

        def inference(model=row_model, batch=batch):
            with torch.inference_mode():
                model(**batch)

        def rollout(model, batch=batch):
            with torch.inference_mode():
                return AttentionRollout(model).attribute(**batch)

        def chefer(model, batch=batch):
            return CheferRelevance(model).attribute(**batch)

        cases = {
            "inference": inference,
            "rollout (row)": partial(rollout, row_model),
            "rollout (full matrix)": partial(rollout, full_model),
            "chefer (row)": partial(chefer, row_model),
            "chefer (full matrix)": partial(chefer, full_model),
        }
        same = {
            "rollout": torch.allclose(
                rollout(row_model)["codes"], rollout(full_model)["codes"], atol=1e-5
            ),
            "chefer": torch.allclose(
                chefer(row_model)["codes"], chefer(full_model)["codes"], atol=1e-5
            ),
        }
        times = {name: [] for name in cases}
        for _ in range(repeats):  # interleaved, so drifts hit every case alike
            for name, fn in cases.items():
                times[name] += timed(fn, 1, device)
        floor = statistics.median(times["inference"])
        for name, samples in times.items():
            median = statistics.median(samples)
            rows.append(
                {
                    "layers": layers,
                    "seq": seq,
                    "batch": batch_size,
                    "method": name,
                    "median_s": median,
                    "ratio_to_inference": median / floor,
                    "same_scores_as_full_matrix": same.get(name.split(" ")[0]),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| layers | seq | batch | method | median s | × inference |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['seq']} | {r['batch']} | {r['method']} | "
            f"{r['median_s']:.4f} | {r['ratio_to_inference']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/propagation.json"))
    args = parser.parse_args(argv)
    if args.quick:
        configs, repeats, dim, heads = [(2, 32, 2)], args.repeats or 2, 16, 2
    else:
        configs = [(n, s, 8) for n in (2, 6) for s in (64, 256, 1024)]
        repeats, dim, heads = args.repeats or 5, 128, 4
    torch.manual_seed(0)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    rows = run(configs, repeats, dim, heads, args.device)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "embedding_dim": dim,
        "heads": heads,
        "repeats": repeats,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
