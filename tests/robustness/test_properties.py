"""Properties of every method on random small models and random padded batches (hypothesis).

For each drawn case (model class and size, which features, how many patients, every
feature's length per patient, including empty features, empty visits and unknown codes):

- every score is finite, shaped like its input, and exactly 0 on padding;
- attention-share methods are non-negative;
- the batch equals each patient explained alone (batch size 1);
- the same seed gives bit-identical explanations (and a second call on the same model too);
- rollout and flow scores lie in [0, 1]; flow (normalised) sums to 1 over each patient's real
  positions of a non-empty feature, rollout does for ``StageAttentionNet`` (the readout is a
  real step) and sums to at most 1 for ``Transformer`` (the rest stays on [CLS]).
"""

from __future__ import annotations

import random

import torch
from _robustness_kit import ATTENTION_METHODS, METHODS, SCHEMA, VOCAB, make_model, real_mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrlens.data import create_sample_dataset

FAST = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _value(key: str, length: int, rng: random.Random):
    def codes(k: int) -> list[str]:  # with an occasional code the model has never seen
        return [rng.choice([*VOCAB, "UNSEEN"]) for _ in range(k)]

    times = [float(t) for t in range(length)]
    if key == "codes":
        return codes(length)
    if key == "visits":  # visits may be empty lists
        return [codes(rng.randint(0, 3)) for _ in range(length)]
    if key == "steps":
        return (times, [codes(rng.randint(1, 2)) for _ in range(length)])
    if key == "labs":
        return (times, [[rng.uniform(-2, 2), rng.uniform(-2, 2)] for _ in range(length)])
    return [rng.uniform(-1, 1) for _ in range(3)]


@st.composite
def cases(draw):
    name = draw(st.sampled_from(["Transformer", "StageAttentionNet"]))
    keys = draw(st.lists(st.sampled_from(list(SCHEMA)), min_size=1, max_size=3, unique=True))
    n = draw(st.integers(1, 3))
    lengths = [{k: draw(st.integers(0, 5)) for k in keys} for _ in range(n)]
    if "labs" in keys:  # a time series needs one step somewhere to fit its width
        lengths[0]["labs"] = max(lengths[0]["labs"], 1)
    size = draw(
        st.fixed_dictionaries(
            {"embedding_dim": st.sampled_from([8, 16]), "heads": st.sampled_from([1, 2])}
        )
    )
    layers = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    rng = random.Random(seed)
    samples = [
        {
            "patient_id": f"p{i}",
            **{k: _value(k, lengths[i][k], rng) for k in keys},
            "y": i % 2,
        }
        for i in range(n)
    ]
    samples.append(  # every vocabulary code seen at fit time; not explained
        {"patient_id": "fit", **{k: _value(k, 2, rng) for k in keys}, "y": 1}
    )
    samples[-1].update({k: v for k, v in _full(keys).items()})
    dataset = create_sample_dataset(samples, {k: SCHEMA[k] for k in keys}, {"y": "binary"})
    overrides = {**size, ("num_layers" if name == "Transformer" else "attention_layers"): layers}
    return name, dataset, overrides, seed, n


def _full(keys: list[str]) -> dict:
    values = {
        "codes": list(VOCAB),
        "visits": [list(VOCAB)],
        "steps": ([0.0], [list(VOCAB)]),
        "labs": ([0.0], [[0.0, 0.0]]),
        "demo": [0.0, 0.0, 0.0],
    }
    return {k: values[k] for k in keys}


def _positions(scores: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input position (code, visit, step, element): its score and whether it is real."""
    if scores.dim() == 2:
        return scores, real
    if scores.shape[-1] == 0:  # every visit of the batch is empty
        return scores.new_zeros(scores.shape[:2]), real.new_zeros(real.shape[:2])
    # a visit's / step's score sits on each of its units (>= 0 here, padding 0)
    return scores.amax(dim=-1), real.any(dim=-1)


@FAST
@given(case=cases())
def test_every_method_on_random_models_and_batches(case):
    name, dataset, overrides, seed, n = case
    model = make_model(name, dataset, seed=seed, **overrides)
    twin = make_model(name, dataset, seed=seed, **overrides)  # same seed, built again
    batch = dataset.collate(dataset.items[:n])
    singles = [dataset.collate([item]) for item in dataset.items[:n]]
    for method, build in METHODS.items():
        scores = build(model).attribute(**batch)
        assert set(scores) == set(dataset.feature_keys), method
        again = build(twin).attribute(**batch)
        flow_totals, flow_present = [], []
        for key, value in scores.items():
            where = f"{method}, feature '{key}'"
            real = real_mask(batch, key)
            assert value.shape == batch[key].shape, where
            assert bool(torch.isfinite(value).all()), where
            assert not value[~real].any(), f"{where}: padding must score exactly 0"
            assert torch.equal(value, again[key]), f"{where}: not deterministic for a seed"
            if method in ATTENTION_METHODS:
                assert bool((value >= 0).all()), where
            if method in ("rollout", "rollout_low_memory", "flow"):
                _check_shares(method, name, value, real, where)
            if method == "flow":
                positions, present = _positions(value, real)
                flow_totals.append(positions.sum(dim=1))
                flow_present.append(present.any(dim=1))
        if method == "flow":  # normalised per patient: all of a patient's features sum to 1
            expected = torch.stack(flow_present).any(dim=0).to(flow_totals[0].dtype)
            torch.testing.assert_close(
                torch.stack(flow_totals).sum(dim=0), expected, atol=1e-5, rtol=0, msg="flow"
            )
        if method == "random":  # random scores depend on the batch shape, by design
            continue
        for i, single in enumerate(singles):
            alone = build(model).attribute(**single)
            for key, value in alone.items():
                region = (i, *(slice(0, s) for s in value.shape[1:]))
                torch.testing.assert_close(
                    scores[key][region],
                    value[0],
                    atol=5e-5,
                    rtol=1e-4,
                    msg=lambda m, w=f"{method}, '{key}', sample {i}": f"{w}: {m}",
                )


def _check_shares(method: str, name: str, value, real, where: str) -> None:
    scores, present = _positions(value, real)
    assert bool((scores <= 1 + 1e-6).all()), f"{where}: above 1"
    totals = scores.sum(dim=1)
    non_empty = present.any(dim=1)
    if method != "flow" and name == "StageAttentionNet":
        expected = non_empty.to(totals.dtype)  # 1 where the feature has a real position
        torch.testing.assert_close(totals, expected, atol=1e-5, rtol=0, msg=where)
    else:  # flow: this feature's share of the patient's 1; Transformer rollout: [CLS] keeps some
        assert bool((totals <= 1 + 1e-6).all()), where
        assert bool((totals[non_empty] > 0).all()), where
