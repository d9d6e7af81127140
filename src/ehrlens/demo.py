"""End-to-end demo on built-in synthetic data: train two models, explain a few patients.

Run with ``python -m ehrlens.demo`` (``make demo``). It generates a cohort with planted
signal codes, trains a :class:`~ehrlens.models.Transformer` and a
:class:`~ehrlens.models.StageAttentionNet`, prints each one's test AUROC next to the
best achievable (the cohort's noise-free risk), then explains the highest-risk test patients
with attention rollout, attention flow and Chefer relevance and marks which of their top codes
were planted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from .data import create_sample_dataset, generate_cohort, get_dataloader, split_by_patient
from .interpret import AttentionFlow, AttentionRollout, CheferRelevance, top_codes
from .models import StageAttentionNet, Transformer
from .prediction_metrics import compute_metrics
from .trainer import Trainer

MODELS = {
    "Transformer": ("sequence", Transformer, {"embedding_dim": 64, "heads": 4, "num_layers": 2}),
    "StageAttentionNet": (
        "stagenet",
        StageAttentionNet,
        {"embedding_dim": 64, "chunk_size": 32, "levels": 3, "heads": 4},
    ),
}


def _explain(model, trainer, dataset, cohort, n_patients: int, k: int) -> None:
    _, y_prob, _ = trainer.inference(get_dataloader(dataset, batch_size=256))
    highest = np.argsort(-y_prob[:, 0], kind="stable")[:n_patients]
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
    parser = argparse.ArgumentParser(prog="python -m ehrlens.demo", description=__doc__)
    parser.add_argument("--patients", type=int, default=3000, help="cohort size")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model")
    parser.add_argument("--explain", type=int, default=4, help="test patients to explain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    print(f"ehrlens demo: synthetic cohort of {args.patients} patients (seed {args.seed})")
    results = {}
    for name, (layout, model_class, hparams) in MODELS.items():
        cohort = generate_cohort(args.patients, layout=layout, seed=args.seed)
        if not results:
            signal = _codes(sorted(cohort.signal_codes))
            print(f"  positive rate {cohort.positive_rate:.2f}; planted codes: {signal}")
        dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
        train, val, test = split_by_patient(dataset, (0.7, 0.15, 0.15), seed=args.seed)
        model = model_class(dataset, **hparams)
        trainer = Trainer(model, metrics=["roc_auc", "pr_auc"], seed=args.seed, progress=False)
        start = time.perf_counter()
        trainer.train(
            get_dataloader(train, 64, shuffle=True, seed=args.seed),
            get_dataloader(val, 256),
            epochs=args.epochs,
            lr=2e-3,
            monitor="roc_auc",
        )
        seconds = time.perf_counter() - start
        test_metrics = trainer.evaluate(get_dataloader(test, 256))
        labels = np.array([cohort.samples[i]["label"] for i in range(len(cohort.samples))])
        risks = np.array([cohort.risk[s["patient_id"]] for s in cohort.samples])
        test_ids = set(test.patient_ids)
        in_test = np.array([s["patient_id"] in test_ids for s in cohort.samples])
        oracle = compute_metrics("binary", labels[in_test], risks[in_test], ["roc_auc"])
        results[name] = test_metrics["roc_auc"]
        print(
            f"\n{name}: test AUROC {test_metrics['roc_auc']:.3f} "
            f"(best achievable {oracle['roc_auc']:.3f}, chance 0.500), "
            f"AUPRC {test_metrics['pr_auc']:.3f}, trained in {seconds:.0f}s"
        )
        print(
            f"  top codes of the {args.explain} highest-risk test patients "
            "(* = planted signal code):"
        )
        _explain(model, trainer, test, cohort, args.explain, k=5)
    print("\nsummary: " + ", ".join(f"{n} test AUROC {a:.3f}" for n, a in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
