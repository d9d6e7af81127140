"""Builders shared by the robustness tests: samples with every input schema, tiny seeded
models, and every interpreter behind one name (plain functions, so that parametrisations
and hypothesis tests can use them)."""

from __future__ import annotations

import random
from typing import Any

import torch

from ehrlens.data import create_sample_dataset
from ehrlens.data.dataset import SampleDataset
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
)
from ehrlens.models import StageAttentionNet, Transformer

#: One feature per input schema; the label is binary.
SCHEMA = {
    "codes": "sequence",
    "visits": "nested_sequence",
    "steps": "stagenet",
    "labs": "timeseries",
    "demo": "tensor",
}
LABELS = {"y": "binary"}
VOCAB = [f"C{i}" for i in range(8)]
MODELS = ("Transformer", "StageAttentionNet")

#: Every interpreter, built the same way from a model.
METHODS = {
    "rollout": lambda m: AttentionRollout(m),
    "rollout_low_memory": lambda m: AttentionRollout(m, low_memory=True, block_rows=2),
    "flow": lambda m: AttentionFlow(m),
    "chefer": lambda m: CheferRelevance(m),
    "raw": lambda m: RawAttention(m),
    "input_x_gradient": lambda m: InputXGradient(m),
    "integrated_gradients": lambda m: IntegratedGradients(m, n_steps=4),
    "random": lambda m: RandomBaseline(m, seed=0),
}
#: Methods that run the model (all but the random baseline).
MODEL_METHODS = [name for name in METHODS if name != "random"]
#: Methods whose scores are attention shares: non-negative.
ATTENTION_METHODS = ["rollout", "rollout_low_memory", "flow", "chefer", "raw"]


def make_sample(
    pid: str,
    rng: random.Random,
    lengths: dict[str, int] | None = None,
    label: int | None = None,
) -> dict[str, Any]:
    """One patient with every schema; ``lengths`` fixes a feature's number of steps."""
    lengths = lengths or {}

    def n(key: str) -> int:
        return lengths.get(key, rng.randint(1, 4))

    def codes(k: int) -> list[str]:
        return [rng.choice(VOCAB) for _ in range(k)]

    steps = n("steps")
    labs = n("labs")
    return {
        "patient_id": pid,
        "codes": codes(n("codes")),
        "visits": [codes(rng.randint(1, 3)) for _ in range(n("visits"))],
        "steps": (
            [float(t) for t in range(steps)],
            [codes(rng.randint(1, 2)) for _ in range(steps)],
        ),
        "labs": (
            [0.5 * t for t in range(labs)],
            [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(labs)],
        ),
        "demo": [rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)],
        "y": rng.randint(0, 1) if label is None else label,
    }


def make_samples(n: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` patients with random lengths, both labels and every vocabulary code present."""
    rng = random.Random(seed)
    samples = [make_sample(f"p{i}", rng, label=i % 2) for i in range(n)]
    samples[0]["codes"] = list(VOCAB)  # every code in every vocabulary
    samples[0]["visits"] = [list(VOCAB)]
    samples[0]["steps"] = ([0.0], [list(VOCAB)])
    return samples


def make_dataset(samples: list[dict[str, Any]] | None = None, **kwargs: Any) -> SampleDataset:
    return create_sample_dataset(
        make_samples() if samples is None else samples, SCHEMA, LABELS, **kwargs
    )


def make_model(name: str, dataset: Any, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny seeded model with dropout (so that eval mode matters), in eval mode."""
    torch.manual_seed(seed)
    if name == "Transformer":
        kwargs = {"embedding_dim": 8, "heads": 2, "num_layers": 2, "dropout": 0.1}
        return Transformer(dataset, **{**kwargs, **overrides}).eval()
    kwargs = {
        "embedding_dim": 8,
        "chunk_size": 4,
        "levels": 2,
        "heads": 2,
        "attention_layers": 2,
        "conv_size": 2,
        "dropout": 0.1,
    }
    return StageAttentionNet(dataset, **{**kwargs, **overrides}).eval()


def explain(method: str, model: Any, batch: dict[str, Any], target: Any = None) -> dict:
    return METHODS[method](model).attribute(target, **batch)


def no_hooks(model: Any) -> bool:
    """True when no attention or query-key hook is registered anywhere in the model."""
    return not any(m.has_attention_hooks for ms in model.attention_modules().values() for m in ms)


def real_mask(batch: dict[str, Any], key: str) -> torch.Tensor:
    """``bool`` shaped like ``batch[key]``: True at real input units (not padding)."""
    values = batch[key]
    if not values.is_floating_point():
        return values != 0
    mask = batch["masks"].get(key)
    if mask is not None:
        return mask[..., None].expand(values.shape)
    return torch.ones(values.shape, dtype=torch.bool)


def save_tiny_model(root: Any, dataset: Any, name: str = "Transformer") -> Any:
    """A tiny seeded model saved as a model directory ``root / "model"``; returns its path."""
    from ehrlens.models.directory import save_model_dir

    return save_model_dir(make_model(name, dataset), root / "model")


def run_cli(*args: Any) -> Any:
    """``ehrlens ARGS`` in-process; click's result (``exit_code``, ``stdout``, ``stderr``)."""
    from click.testing import CliRunner

    from ehrlens.cli.app import main

    return CliRunner().invoke(main, [str(a) for a in args])
