"""Cost of explaining a decoder: rollout and Chefer against SDPA inference, same run.

A tiny Llama-shaped classifier built from a config (seeded random weights, nothing
downloaded): hidden 64, 4 layers, 4 query heads sharing 2 key/value heads (grouped-query
attention), rotary positions, intermediate 128, vocabulary 512, 2 labels; one sequence of
2,048 tokens (``--tokens``). Timed, median of ``--repeats`` after one warm-up:

- ``sdpa_inference`` (BASELINE for gradient-free methods): the model with
  ``attn_implementation="sdpa"``, forward under ``torch.inference_mode()``;
- ``sdpa_forward_backward`` (BASELINE for gradient methods): the same model, forward and
  backward of the explained logit (to the input embeddings);
- ``eager_inference``: the eager implementation the adapter switches to (it returns maps);
- ``rollout``: :class:`~ehrlens.interpret.AttentionRollout` through
  :class:`~ehrlens.integrations.huggingface.HuggingFaceModel` (maps captured by hooks on the
  attention modules, fused over heads at capture, readout row propagated);
- ``chefer``: :class:`~ehrlens.interpret.CheferRelevance` (gradient x map fused in the
  backward as each layer's gradient arrives);
- ``attnlrp``: :class:`~ehrlens.interpret.AttnLRP` (one forward and backward with the rules).

    python benchmarks/hf_decoder_cost.py                 # 2,048 tokens
    python benchmarks/hf_decoder_cost.py --quick         # 256 tokens, seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def build(tokens: int) -> Any:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max(4096, tokens),
        num_labels=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default="benchmarks/out/hf_decoder_cost.json")
    args = parser.parse_args(argv)
    from ehrlens.integrations.huggingface import HuggingFaceModel
    from ehrlens.interpret import AttentionRollout, AttnLRP, CheferRelevance

    tokens = 256 if args.quick else args.tokens
    model = build(tokens)
    sdpa = copy.deepcopy(model)
    sdpa.set_attn_implementation("sdpa")
    wrapped = HuggingFaceModel(copy.deepcopy(model))  # switches its copy to eager
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 512, (1, tokens), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def sdpa_inference() -> None:
        with torch.inference_mode():
            sdpa(**batch)

    def sdpa_forward_backward() -> None:
        embeddings = sdpa.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = sdpa(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits
        torch.autograd.grad(logits[:, 1].sum(), embeddings)

    def eager_inference() -> None:
        with torch.inference_mode():
            wrapped(**batch)

    def rollout() -> None:
        with torch.inference_mode():
            AttentionRollout(wrapped).attribute(**batch)

    def chefer() -> None:
        CheferRelevance(wrapped).attribute(target_class_idx=1, **batch)

    def attnlrp() -> None:
        AttnLRP(wrapped).attribute(target_class_idx=1, **batch)

    runs = {
        "sdpa_inference": sdpa_inference,
        "eager_inference": eager_inference,
        "rollout": rollout,
        "sdpa_forward_backward": sdpa_forward_backward,
        "chefer": chefer,
        "attnlrp": attnlrp,
    }
    seconds = {name: timed(fn, args.repeats) for name, fn in runs.items()}
    ratios = {
        "eager_inference": seconds["eager_inference"] / seconds["sdpa_inference"],
        "rollout": seconds["rollout"] / seconds["sdpa_inference"],
        "chefer": seconds["chefer"] / seconds["sdpa_forward_backward"],
        "attnlrp": seconds["attnlrp"] / seconds["sdpa_forward_backward"],
    }
    print(f"tiny Llama-shaped classifier, {tokens} tokens, batch 1, torch threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'run':24s} {'seconds':>9s} {'ratio':>7s}  baseline")
    for name, value in seconds.items():
        base = "sdpa_inference" if name in ("eager_inference", "rollout") else None
        base = "sdpa_forward_backward" if name in ("chefer", "attnlrp") else base
        ratio = f"{ratios[name]:7.2f}" if name in ratios else f"{'-':>7s}"
        print(f"{name:24s} {value:9.3f} {ratio}  {base or '(baseline)'}")
    out = {
        "benchmark": "hf_decoder_cost",
        "tokens": tokens,
        "repeats": args.repeats,
        "seconds": seconds,
        "ratios": ratios,
        "load_average": os.getloadavg(),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
