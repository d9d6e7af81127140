"""Synthetic cohorts with planted signal: the ground truth explanations are scored against.

Each patient has several visits with diagnosis (ICD-10-like), procedure (ICD-10-PCS-like) and
drug (ATC-like) codes drawn from Zipf-distributed vocabularies. The binary label is driven by a
few **planted signal codes** (each with its own weight) and, optionally, by the **interaction**
of two codes that carry no signal alone. It is learnable but not trivial:

- labels are flipped with probability ``label_noise``;
- every signal code has a **distractor** code that co-occurs with it (in the same visit) with
  probability ``distractor_rate``, so the distractor correlates with the label without
  causing it;
- signal codes also sit among many frequent background codes.

The ground truth (which planted codes each patient has, per feature) is returned alongside the
samples, keyed by ``patient_id``.

Example:
    >>> cohort = generate_cohort(n_patients=500, layout="sequence", seed=0)
    >>> ds = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    >>> cohort.ground_truth[cohort.samples[0]["patient_id"]]   # {feature: [planted codes]}
    {'diagnoses': [...], 'procedures': [...], 'drugs': [...]}
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Layout = Literal["sequence", "nested", "stagenet"]
FEATURES = ("diagnoses", "procedures", "drugs")
_VOCAB_SEED = 20200504  # fixed: the code vocabulary is the same for every cohort seed


@dataclass
class SyntheticCohort:
    """A generated cohort and its ground truth.

    Attributes:
        samples: patient dicts ready for :func:`ehrlens.data.create_sample_dataset`.
        input_schema / output_schema: schema dicts matching ``samples``.
        signal_weights: ``{(feature, code): weight}`` of the planted main effects.
        interaction: ``((feature, code), (feature, code), weight)`` or ``None``.
        distractors: ``{(feature, signal code): (feature, distractor code)}``.
        ground_truth: ``{patient_id: {feature: sorted planted codes present}}``; the two
            interaction codes count only when the patient has both.
        risk: ``{patient_id: P(label = 1)}`` before label noise: the best any model can do.
        positive_rate: fraction of label 1 after noise.
    """

    samples: list[dict[str, Any]]
    input_schema: dict[str, str]
    output_schema: dict[str, str]
    signal_weights: dict[tuple[str, str], float]
    interaction: tuple[tuple[str, str], tuple[str, str], float] | None
    distractors: dict[tuple[str, str], tuple[str, str]]
    ground_truth: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    risk: dict[str, float] = field(default_factory=dict)
    positive_rate: float = 0.0

    @property
    def signal_codes(self) -> set[tuple[str, str]]:
        """Every planted ``(feature, code)``: main effects and both interaction codes."""
        codes = set(self.signal_weights)
        if self.interaction is not None:
            codes |= {self.interaction[0], self.interaction[1]}
        return codes


def _vocabularies(n_diagnoses: int, n_procedures: int, n_drugs: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(_VOCAB_SEED)
    letters = np.array(list("ABCDEFGIJKLMNORZ"))
    alnum = np.array(list(string.digits + "ABCDEFGHJKLMNPQRSTVWXYZ"))

    def unique(make, n: int) -> list[str]:
        out: dict[str, None] = {}
        while len(out) < n:
            out.setdefault(make(), None)
        return list(out)

    def icd10() -> str:
        return f"{rng.choice(letters)}{rng.integers(0, 100):02d}.{rng.integers(0, 10)}"

    def pcs() -> str:
        return "0" + "".join(rng.choice(alnum, 4)) + "Z" + str(rng.choice(list("XZ")))

    def atc() -> str:
        return (
            f"{rng.choice(list('ABCDGHJLMNPRSV'))}{rng.integers(1, 20):02d}"
            f"{''.join(rng.choice(list('ABCDEFGX'), 2))}{rng.integers(1, 30):02d}"
        )

    return {
        "diagnoses": unique(icd10, n_diagnoses),
        "procedures": unique(pcs, n_procedures),
        "drugs": unique(atc, n_drugs),
    }


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(p / p.sum())


def generate_cohort(
    n_patients: int = 2000,
    layout: Layout = "sequence",
    seed: int = 0,
    *,
    n_diagnoses: int = 200,
    n_procedures: int = 60,
    n_drugs: int = 80,
    n_signal: int = 6,
    signal_prevalence: float = 0.12,
    interaction: bool = True,
    label_noise: float = 0.05,
    distractor_rate: float = 0.6,
    mean_visits: float = 4.0,
    include_labs: bool = False,
    include_demographics: bool = False,
) -> SyntheticCohort:
    """Generate a seeded cohort whose binary label is driven by planted codes.

    Args:
        n_patients: number of patients (one sample each).
        layout: how codes are laid out per feature: ``"sequence"`` (all codes of a feature in
            time order, schema ``"sequence"``), ``"nested"`` (a list of visits, schema
            ``"nested_sequence"``) or ``"stagenet"`` (``(visit_times, visits)``, schema
            ``"stagenet"``).
        seed: seeds everything but the code vocabulary, which is fixed.
        n_diagnoses / n_procedures / n_drugs: vocabulary sizes.
        n_signal: planted main-effect codes (split between diagnoses and drugs).
        signal_prevalence: chance that a patient has a given signal code.
        interaction: plant a pair of diagnosis codes that raise risk only together.
        label_noise: probability of flipping each label.
        distractor_rate: chance that a signal code's distractor joins it in the same visit.
        mean_visits: mean number of visits per patient (at least one).
        include_labs: add ``"labs"`` (``"timeseries"``, 3 values per visit; the first rises
            with the first signal code).
        include_demographics: add ``"demographics"`` (``"tensor"``: age / 100, sex).

    Returns:
        A :class:`SyntheticCohort`.
    """
    if layout not in ("sequence", "nested", "stagenet"):
        raise ValueError(f"layout must be 'sequence', 'nested' or 'stagenet', got {layout!r}")
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    vocab = _vocabularies(n_diagnoses, n_procedures, n_drugs)
    freq = {f: _zipf(len(vocab[f]), 1.1, rng) for f in FEATURES}
    codes_per_visit = {"diagnoses": 2.0, "procedures": 0.8, "drugs": 1.6}

    # Signal codes come from the middle of the frequency ranking: neither ubiquitous nor rare.
    def middle(feature: str, k: int, exclude: set[str]) -> list[str]:
        ranked = [vocab[feature][i] for i in np.argsort(-freq[feature])]
        band = [c for c in ranked[len(ranked) // 5 : len(ranked) // 2] if c not in exclude]
        return [str(c) for c in rng.choice(band, size=k, replace=False)]

    n_drug_signal = n_signal // 3
    chosen = middle("diagnoses", n_signal - n_drug_signal + (2 if interaction else 0), set())
    signal = [("diagnoses", c) for c in chosen[: n_signal - n_drug_signal]]
    signal += [("drugs", c) for c in middle("drugs", n_drug_signal, set())]
    draws = rng.uniform(1.5, 2.5, len(signal))
    weights = {sc: float(w) for sc, w in zip(signal, draws, strict=True)}
    pair = None
    if interaction:
        a, b = chosen[-2:]
        pair = (("diagnoses", a), ("diagnoses", b), 3.0)

    planted = {c for _, c in signal} | ({pair[0][1], pair[1][1]} if pair else set())
    distractors = {}
    for feature, code in signal:
        options = [c for c in middle(feature, 3, planted) if c not in planted]
        distractors[(feature, code)] = (feature, options[0])
        planted.add(options[0])

    bias = -2.5
    samples, ground_truth, risk, labels = [], {}, {}, []
    for p in range(n_patients):
        pid = f"P{p:06d}"
        n_visits = 1 + min(int(rng.poisson(mean_visits - 1)), 19)
        gaps = rng.exponential(45.0, size=n_visits)
        gaps[0] = 0.0
        times = np.round(np.cumsum(gaps), 1)
        visits = {
            f: [
                list(rng.choice(vocab[f], size=rng.poisson(codes_per_visit[f]), p=freq[f]))
                for _ in range(n_visits)
            ]
            for f in FEATURES
        }
        for v in range(n_visits):  # every visit has at least one diagnosis
            if not visits["diagnoses"][v]:
                code = rng.choice(vocab["diagnoses"], p=freq["diagnoses"])
                visits["diagnoses"][v].append(str(code))

        def plant(feature: str, code: str, visit: int | None = None, visits=visits) -> int:
            """Insert ``code`` at a random place of a (random) visit; return the visit."""
            v = int(rng.integers(len(visits[feature]))) if visit is None else visit
            visits[feature][v].insert(int(rng.integers(len(visits[feature][v]) + 1)), code)
            return v

        for (feature, code), (d_feature, d_code) in distractors.items():
            if rng.random() < signal_prevalence:
                v = plant(feature, code)
                if rng.random() < distractor_rate:
                    plant(d_feature, d_code, v)
            elif rng.random() < signal_prevalence * 0.3:
                plant(d_feature, d_code)
        if pair is not None:
            for feature, code in pair[:2]:
                if rng.random() < 0.25:
                    plant(feature, code)

        present = {f: {c for visit in visits[f] for c in visit} for f in FEATURES}
        logit = bias + sum(w for (f, c), w in weights.items() if c in present[f])
        truth = {
            f: sorted(c for (sf, c) in weights if sf == f and c in present[f]) for f in FEATURES
        }
        if pair is not None and all(c in present[f] for f, c in pair[:2]):
            logit += pair[2]
            for f, c in pair[:2]:
                truth[f] = sorted({*truth[f], c})
        age = float(np.clip(rng.normal(62, 15), 18, 99))
        logit += 0.01 * (age - 62)
        risk[pid] = float(1 / (1 + np.exp(-logit)))
        label = int(rng.random() < risk[pid])
        if rng.random() < label_noise:
            label = 1 - label
        labels.append(label)

        sample: dict[str, Any] = {"patient_id": pid, "label": label}
        for f in FEATURES:
            visit_lists = [[str(c) for c in visit] for visit in visits[f]]
            if layout == "sequence":
                sample[f] = [c for visit in visit_lists for c in visit]
            elif layout == "nested":
                sample[f] = visit_lists
            else:
                sample[f] = (times.tolist(), visit_lists)
        if include_labs:
            has_first = signal[0][1] in present[signal[0][0]]
            values = rng.normal(0.0, 1.0, size=(n_visits, 3)) + np.array([1.5 * has_first, 0, 0])
            sample["labs"] = (times.tolist(), np.round(values, 3).tolist())
        if include_demographics:
            sample["demographics"] = [round(age / 100, 3), float(rng.integers(0, 2))]
        samples.append(sample)
        ground_truth[pid] = truth

    code_schema = {"sequence": "sequence", "nested": "nested_sequence", "stagenet": "stagenet"}
    input_schema = {f: code_schema[layout] for f in FEATURES}
    if include_labs:
        input_schema["labs"] = "timeseries"
    if include_demographics:
        input_schema["demographics"] = "tensor"
    return SyntheticCohort(
        samples=samples,
        input_schema=input_schema,
        output_schema={"label": "binary"},
        signal_weights=weights,
        interaction=pair,
        distractors=distractors,
        ground_truth=ground_truth,
        risk=risk,
        positive_rate=float(np.mean(labels)),
    )
