"""Planted-code recovery on a tiny GPT trained here for next-event prediction.

Synthetic MEDS-like code streams (nothing downloaded): each stream is ``[BOS]`` followed by
10-18 background codes drawn from 35 codes; in half of the streams one planted code is
inserted somewhere in the first two thirds. The next event after the stream is
``EVENT_YES`` with probability 0.95 when the planted code is there and 0.05 when it is not,
``EVENT_NO`` otherwise. A GPT-2-shaped ``GPT2LMHeadModel`` (2 layers, 2 heads, width 32,
untied output) is trained on the next-event token only (cross-entropy at the last real
token), with right padding.

Each method explains the logit of ``EVENT_YES`` at the last real token
(:class:`~ehrlens.integrations.huggingface.HuggingFaceModel`, ``target_class_idx`` the token
id) on held-out streams that contain the planted code. ``[BOS]`` is marked as a special token,
so every method gives it 0 and it is not a candidate. The measure is the within-sequence
signal AUROC: per stream, the AUROC of the scores separating the planted code's position from
the stream's other codes (ties count half; a random order gives 0.5, the planted code on top
gives 1), averaged over streams with a 95% percentile-bootstrap interval.

Sanity checks (Adebayo et al. 2018) on the same streams, with ehrlens.metrics.sanity:
cascading parameter randomisation (output head, then each block, then everything) and a
model of the same shape trained on shuffled events: the mean Spearman correlation of each
stream's scores with the trained model's (a method passes when it falls).

    python benchmarks/hf_planted_code.py            # minutes on a shared two-core machine
    python benchmarks/hf_planted_code.py --quick    # seconds; a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

PAD, BOS, EVENT_NO, EVENT_YES, PLANTED = 0, 1, 2, 3, 4
BACKGROUND = range(5, 40)
VOCAB = 40
METHODS: dict[str, dict[str, Any]] = {
    "random": {},
    "raw_attention": {},
    "rollout": {},
    "flow": {},
    "chefer": {},
    "attnlrp": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 16},
}
SANITY_METHODS = ("rollout", "chefer", "attnlrp", "input_x_gradient")


def streams(n: int, seed: int, planted_share: float = 0.5) -> dict[str, torch.Tensor]:
    """``n`` streams, right-padded: input_ids, attention_mask, special_tokens_mask, the
    next event ``event`` and the planted position ``planted_at`` (-1 without)."""
    rng = np.random.default_rng(seed)
    rows, events, planted_at = [], [], []
    for _ in range(n):
        length = int(rng.integers(10, 19))
        codes = [int(c) for c in rng.choice(list(BACKGROUND), size=length)]
        where = -1
        if rng.random() < planted_share:
            where = int(rng.integers(0, (2 * length) // 3))
            codes[where] = PLANTED
        p_event = 0.95 if where >= 0 else 0.05
        events.append(EVENT_YES if rng.random() < p_event else EVENT_NO)
        rows.append([BOS, *codes])
        planted_at.append(where + 1 if where >= 0 else -1)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    mask = (ids != PAD).long()
    special = (ids == BOS).long()
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "special_tokens_mask": special,
        "event": torch.tensor(events),
        "planted_at": torch.tensor(planted_at),
    }


def build(seed: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=24,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EVENT_NO,
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def last_logits(model: Any, data: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    last = data["attention_mask"].sum(dim=1) - 1
    return out.logits[torch.arange(len(last)), last]  # [batch, vocab]


def train(data: dict[str, torch.Tensor], epochs: int, seed: int, shuffle_events: bool) -> Any:
    model = build(seed)
    events = data["event"]
    if shuffle_events:
        events = events[torch.randperm(len(events), generator=torch.Generator().manual_seed(1))]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(events), generator=generator)
        for start in range(0, len(order), 100):
            index = order[start : start + 100]
            batch = {k: data[k][index] for k in ("input_ids", "attention_mask")}
            loss = torch.nn.functional.cross_entropy(last_logits(model, batch), events[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC, ties half (the library's own, as signal recovery computes it)."""
    from ehrlens.metrics.recovery import _auroc

    return _auroc(scores, labels)


def interval(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    from ehrlens.metrics.evaluator import bootstrap_interval

    summary = bootstrap_interval(values, n_bootstrap=1000, seed=seed)
    return summary.mean, summary.low, summary.high


def within_sequence_auroc(scores: torch.Tensor, data: dict[str, torch.Tensor]) -> np.ndarray:
    out = []
    for row in range(scores.shape[0]):
        candidates = (data["attention_mask"][row] == 1) & (data["special_tokens_mask"][row] == 0)
        values = scores[row][candidates].double().numpy()
        labels = (torch.arange(scores.shape[1]) == data["planted_at"][row])[candidates].numpy()
        out.append(auroc(values, labels))
    return np.array(out)


def explain(wrapped: Any, method: str, params: dict[str, Any], batch: dict[str, Any]) -> Any:
    from ehrlens.interpret import make_interpreter

    interpreter = make_interpreter(method, wrapped, **params)
    if interpreter.gradient_free:
        with torch.inference_mode():
            return interpreter.attribute(**batch)["input_ids"]
    target = None if method in ("random",) else EVENT_YES
    return interpreter.attribute(target_class_idx=target, **batch)["input_ids"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default="benchmarks/out/hf_planted_code.json")
    args = parser.parse_args(argv)
    from ehrlens.integrations.huggingface import HuggingFaceModel
    from ehrlens.metrics.sanity import DataRandomisation, ModelParameterRandomisation

    torch.set_num_threads(1)
    n_train, n_test, epochs = (200, 40, 1) if args.quick else (1600, 300, 10)
    started = time.perf_counter()
    train_data = streams(n_train, seed=0)
    test_data = streams(n_test, seed=1, planted_share=1.0)
    model = train(train_data, epochs, seed=0, shuffle_events=False)
    shuffled = train(train_data, epochs, seed=0, shuffle_events=True)
    train_seconds = time.perf_counter() - started

    held_out = streams(n_test, seed=2)
    with torch.no_grad():
        p_yes = last_logits(model, held_out).softmax(dim=-1)[:, EVENT_YES].numpy()
    prediction_auroc = auroc(p_yes, (held_out["planted_at"] >= 0).numpy())

    wrapped = HuggingFaceModel(model)
    batch = {k: test_data[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")}
    rows = []
    print(f"{'method':22s} {'AUROC':>7s} {'95% interval':>16s} {'seconds':>8s}")
    for method, params in METHODS.items():
        t0 = time.perf_counter()
        scores = explain(wrapped, method, params, batch)
        seconds = time.perf_counter() - t0
        mean, low, high = interval(within_sequence_auroc(scores, test_data))
        rows.append({"method": method, "auroc": mean, "low": low, "high": high, "seconds": seconds})
        print(f"{method:22s} {mean:7.3f}   [{low:.3f}, {high:.3f}] {seconds:8.2f}")

    sanity_batch = {k: v[:100] for k, v in batch.items()}
    steps = ["model.lm_head", "model.transformer.h.1", "model.transformer.h.0", "*"]
    sanity = []
    header = " ".join(f"{s:>22s}" for s in [*steps, "random_labels"])
    print(f"\n{'sanity (Spearman vs trained)':30s} {header}")
    for method in SANITY_METHODS:
        params = METHODS[method]
        check = ModelParameterRandomisation(method, params, layers=steps, n_bootstrap=500)
        result = check(wrapped, sanity_batch, target_class_idx=EVENT_YES)
        labels = DataRandomisation(method, params, n_bootstrap=500)(
            wrapped, HuggingFaceModel(shuffled), sanity_batch, target_class_idx=EVENT_YES
        )
        records = result.to_records() + labels.to_records()
        sanity += records
        cells = " ".join(f"{r['mean']:6.2f} [{r['low']:.2f},{r['high']:.2f}]" for r in records)
        print(f"{method:30s} {cells}")

    out = {
        "benchmark": "hf_planted_code",
        "quick": args.quick,
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "train_seconds": train_seconds,
        "prediction_auroc": prediction_auroc,
        "recovery": rows,
        "sanity": sanity,
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    print(f"\nprediction AUROC (held out, planted vs not): {prediction_auroc:.3f}")
    print(f"training both models: {train_seconds:.1f} s")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
