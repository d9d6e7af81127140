"""End-to-end demo on built-in synthetic data: train two models, explain a few patients.

Run with ``python -m ehrlens.app.demo`` (``make demo``). It generates a cohort with planted
signal codes, trains a :class:`~ehrlens.models.Transformer` and a
:class:`~ehrlens.models.StageAttentionNet`, prints each one's test AUROC next to the
best achievable (the cohort's noise-free risk), then explains the highest-risk test patients
with attention rollout, attention flow and Chefer relevance and marks which of their top codes
were planted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data import get_dataloader
from ..data.synthetic import Layout
from ..interpret import AttentionFlow, AttentionRollout, CheferRelevance, top_codes
from ..models import BaseModel, StageAttentionNet, Transformer
from .workflow import train_on_cohort

MODELS: dict[str, tuple[Layout, type[BaseModel], dict[str, Any]]] = {
    "Transformer": ("sequence", Transformer, {"embedding_dim": 64, "heads": 4, "num_layers": 2}),
    "StageAttentionNet": (
        "stagenet",
        StageAttentionNet,
        {"embedding_dim": 64, "chunk_size": 32, "levels": 3, "heads": 4},
    ),
}


def _explain(model, dataset, cohort, n_patients: int, k: int) -> None:
    with torch.inference_mode():
        y_prob = torch.cat([model(**b)["y_prob"] for b in get_dataloader(dataset, 256)])
    highest = np.argsort(-y_prob[:, 0].numpy(), kind="stable")[:n_patients]
    batch = dataset.collate([dataset[int(i)] for i in highest])
    with torch.inference_mode():  # the forward-only methods
        risk = model(**batch)["y_prob"][:, 0]
        rollout = AttentionRollout(model).attribute(**batch)
        flow = AttentionFlow(model).attribute(**batch)
    chefer = CheferRelevance(model).attribute(**batch)  # needs gradients
    for i, pid in enumerate(batch["patient_id"]):
        planted = {(f, c) for f, codes in cohort.ground_truth[pid].items() for c in codes}
        label = int(batch["label"][i].item())
        print(f"  patient {pid}  label={label}  predicted risk={risk[i]:.2f}")
        print(f"    planted signal: {_codes(sorted(planted)) or '(none)'}")
        for name, scores in (("rollout", rollout), ("flow", flow), ("chefer", chefer)):
            top = top_codes(scores, batch, model.schema, i, k=k)
            shown = ", ".join(f"{c}{'*' if (f, c) in planted else ''} {s:.3f}" for f, c, s in top)
            print(f"    {name:8s} top {k}: {shown}")


def _codes(pairs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{feature}:{code}" for feature, code in pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ehrlens.app.demo", description=__doc__)
    parser.add_argument("--patients", type=int, default=3000, help="cohort size")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model")
    parser.add_argument("--explain", type=int, default=4, help="test patients to explain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    print(f"ehrlens demo: synthetic cohort of {args.patients} patients (seed {args.seed})")
    results: dict[str, float] = {}
    for name, (layout, model_class, hparams) in MODELS.items():
        run = train_on_cohort(
            model_class,
            hparams,
            n_patients=args.patients,
            layout=layout,
            seed=args.seed,
            epochs=args.epochs,
        )
        if not results:
            signal = _codes(sorted(run.cohort.signal_codes))
            print(f"  positive rate {run.cohort.positive_rate:.2f}; planted codes: {signal}")
        metrics = run.test_metrics
        results[name] = metrics["roc_auc"]
        print(
            f"\n{name}: test AUROC {metrics['roc_auc']:.3f} "
            f"(best achievable {run.oracle_roc_auc:.3f}, chance 0.500), "
            f"AUPRC {metrics['pr_auc']:.3f}, trained in {run.train_seconds:.0f}s"
        )
        print(
            f"  top codes of the {args.explain} highest-risk test patients "
            "(* = planted signal code):"
        )
        _explain(run.model, run.test, run.cohort, args.explain, k=5)
    print("\nsummary: " + ", ".join(f"{n} test AUROC {a:.3f}" for n, a in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
