"""AttentionFlow against an independent networkx max-flow reference, and the paper's oracles.

The reference builds the full layered attention graph of Abnar & Zuidema (2020) with
networkx: a node ``(l, i)`` for every position ``i`` at every layer boundary ``l = 0..L``, an
edge ``(l-1, j) -> (l, i)`` with capacity ``A_hat_l[i, j] = 0.5 * (fuse(A_l)[i, j] + I[i, j])``,
and the score of input ``j`` = ``networkx.maximum_flow_value`` from ``(0, j)`` to the readout
node: ``(L, c)`` for a one-hot readout at ``c``, or a super-sink fed by every top-layer node
``(L, i)`` with capacity ``w_i`` for a weighted readout. It uses no ehrlens.interpret code:
maps come from the model's own capture interface (``set_attention_hooks`` /
``get_attention_layers``), heads are fused in float64, readout positions and padding are
derived from the batch tensors.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from _reference_flow import nx_flow
from _tolerance import FLOAT32_ACROSS
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import AttentionFlow, AttentionRollout
from ehrlens.interpret.methods.maxflow import flow_values
from ehrlens.models import StageAttentionNet, Transformer

RTOL = 1e-6


# ----------------------------------------------------------------------------- reference


def ref_fuse(attention: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """``[batch, heads, s, s]`` -> ``[batch, s, s]`` in float64."""
    attention = attention.detach().double()
    if head_fusion == "mean":
        return attention.sum(dim=1) / attention.shape[1]
    if head_fusion == "max":
        return attention.max(dim=1).values
    if head_fusion == "min":
        return attention.min(dim=1).values
    raise AssertionError(head_fusion)


def ref_capture(model: nn.Module, batch: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
    """One forward in eval mode with forward-only capture; the caller's mode is restored."""
    training = model.training
    model.eval()
    model.set_attention_hooks(True, capture_gradients=False)
    try:
        with torch.no_grad():
            model(**batch)
        layers = model.get_attention_layers()
        return {key: [a.detach().clone() for a, _ in maps] for key, maps in layers.items()}
    finally:
        model.set_attention_hooks(False)
        model.train(training)


def ref_real(values: torch.Tensor) -> np.ndarray:
    """``[batch, n_inputs]`` bool: real input positions (code id != 0; non-empty visits)."""
    real = values != 0
    if values.dim() == 3:
        real = real.any(dim=-1)
    return real.numpy()


def ref_a_hat(maps: list[torch.Tensor], head_fusion: str) -> np.ndarray:
    """``[batch, L, s, s]`` float64 residual-augmented fused maps."""
    fused = torch.stack([ref_fuse(a, head_fusion) for a in maps], dim=1)
    eye = torch.eye(fused.shape[-1], dtype=torch.float64)
    return (0.5 * (fused + eye)).numpy()


def ref_flow_scores(
    model: nn.Module,
    batch: dict[str, Any],
    head_fusion: str = "mean",
    normalize: str | bool = False,
) -> dict[str, np.ndarray]:
    """Per feature ``[batch, n_inputs]`` flow scores of the model's readout (padding 0);
    ``normalize``: ``"patient"`` divides by each patient's sum over every feature,
    ``"per_feature"`` by each feature's own sum, ``False`` keeps the raw flows."""
    maps = ref_capture(model, batch)
    out = {}
    for key, layer_maps in maps.items():
        a_hat = ref_a_hat(layer_maps, head_fusion)
        real = ref_real(batch[key])
        scores = np.zeros(real.shape)
        for b in range(real.shape[0]):
            seq = a_hat.shape[-1]
            readout = np.zeros(seq)
            if isinstance(model, Transformer):
                readout[0] = 1.0  # [CLS]
            else:
                steps = np.flatnonzero(real[b])
                readout[steps[-1] if len(steps) else 0] = 1.0  # last valid step
            flows = nx_flow(a_hat[b], readout, one_hot=True)
            if isinstance(model, Transformer):
                flows = flows[1:]  # drop [CLS]
            flows = flows * real[b]
            if normalize == "per_feature" and flows.sum() > 0:
                flows = flows / flows.sum()
            scores[b] = flows
        out[key] = scores
    if normalize == "patient":
        totals = sum(s.sum(axis=1) for s in out.values())
        for key, s in out.items():
            out[key] = np.divide(
                s, totals[:, None], out=np.zeros_like(s), where=totals[:, None] > 0
            )
    return out


def position_scores(scores: torch.Tensor) -> np.ndarray:
    """Scores shaped like the input -> ``[batch, n_inputs]`` (nested: max over codes)."""
    s = scores.detach().double()
    if s.dim() == 3:
        s = s.amax(dim=-1)
    return s.numpy()


def assert_rel_close(actual, expected, rtol: float = RTOL, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def rollout_numpy(a_hat: np.ndarray, readout: np.ndarray) -> np.ndarray:
    """``readout @ A_hat_L @ ... @ A_hat_1`` (plain numpy)."""
    row = readout.astype(np.float64)
    for layer in reversed(range(a_hat.shape[0])):
        row = row @ a_hat[layer]
    return row


def random_a_hat(rng: np.random.Generator, layers: int, seq: int, n_pad: int = 0) -> np.ndarray:
    """Row-stochastic (softmax) maps with the last ``n_pad`` keys padded (zero columns, as the
    model produces), residual-augmented."""
    scores = rng.normal(scale=2.0, size=(layers, seq, seq))
    if n_pad:
        scores[:, :, seq - n_pad :] = -np.inf
    maps = np.exp(scores - scores.max(axis=-1, keepdims=True))
    maps /= maps.sum(axis=-1, keepdims=True)
    return 0.5 * (maps + np.eye(seq))


# ----------------------------------------------------------------------------- data, models


@cache
def cohort_dataset(layout: str, seed: int = 5, n_patients: int = 10):
    # Few visits keep sequences short (networkx reference on tiny graphs).
    cohort = generate_cohort(n_patients=n_patients, layout=layout, seed=seed, mean_visits=3.0)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


def first_batch(dataset, batch_size: int) -> dict[str, Any]:
    return next(iter(get_dataloader(dataset, batch_size)))


def collate(dataset, indices: list[int]) -> dict[str, Any]:
    return first_batch(dataset.subset(indices), len(indices))


def build_model(name: str, dataset, layers: int = 2, seed: int = 0) -> nn.Module:
    """Small seeded model, left in train mode with dropout on (eval mode must be used)."""
    torch.manual_seed(seed)
    if name == "Transformer":
        return Transformer(dataset, embedding_dim=16, heads=2, num_layers=layers)
    return StageAttentionNet(
        dataset, embedding_dim=16, chunk_size=8, levels=2, heads=2, attention_layers=layers
    )


MODEL_CASES = [
    ("Transformer", "sequence", 1),
    ("Transformer", "sequence", 2),
    ("Transformer", "sequence", 3),
    ("Transformer", "nested", 2),
    ("StageAttentionNet", "stagenet", 2),
    ("StageAttentionNet", "sequence", 2),
]
MODEL_IDS = [f"{n}-{lay}-L{k}" for n, lay, k in MODEL_CASES]
SMALL_CASES = [("Transformer", "sequence", 2), ("StageAttentionNet", "stagenet", 2)]
SMALL_IDS = ["Transformer", "StageAttentionNet"]


def make_case(name: str, layout: str, layers: int, batch_size: int = 6):
    dataset = cohort_dataset(layout)
    return dataset, build_model(name, dataset, layers), first_batch(dataset, batch_size)


class NoReadoutTransformer(Transformer):
    def get_readout_weights(self, **data):
        return None


class MeanReadoutTransformer(Transformer):
    """States a weighted readout (uniform over [CLS] and the real inputs): super-sink path."""

    def get_readout_weights(self, **data):
        weights = {}
        for key in self.feature_keys:
            real = torch.as_tensor(ref_real(data[key]))
            w = torch.cat([torch.ones(real.shape[0], 1, dtype=torch.bool), real], dim=1).float()
            weights[key] = w / w.sum(dim=1, keepdim=True)
        return weights


# ----------------------------------------------------------------------------- max-flow core

SHAPES = [
    (seed, layers, seq)
    for seed, (layers, seq) in enumerate(
        [(1, 2), (1, 7), (2, 2), (2, 5), (2, 12), (3, 3), (3, 9), (4, 4), (4, 8), (4, 12)]
    )
]


@pytest.mark.parametrize(("seed", "layers", "seq"), SHAPES)
def test_flow_values_match_networkx_one_hot(seed, layers, seq):
    rng = np.random.default_rng(seed)
    a_hat = random_a_hat(rng, layers, seq)
    for c in sorted({0, seq - 1, int(rng.integers(seq))}):
        readout = np.zeros(seq)
        readout[c] = 1.0
        expected = nx_flow(a_hat, readout, one_hot=True)
        assert expected.max() > 0
        assert_rel_close(flow_values(a_hat, readout), expected)


@pytest.mark.parametrize(("seed", "layers", "seq"), SHAPES)
def test_flow_values_match_networkx_weighted_readout(seed, layers, seq):
    rng = np.random.default_rng(100 + seed)
    a_hat = random_a_hat(rng, layers, seq)
    readout = rng.uniform(0.05, 1.0, size=seq)
    if seq > 2:
        readout[rng.choice(seq, size=seq // 3, replace=False)] = 0.0  # some positions unread
    readout[:2] = [0.3, 0.6]  # at least two positive weights: a genuinely weighted readout
    expected = nx_flow(a_hat, readout, one_hot=False)
    assert expected.max() > 0
    assert_rel_close(flow_values(a_hat, readout), expected)
    # The super-sink's in-edges cap every source's flow at the total readout weight.
    assert (flow_values(a_hat, readout) <= readout.sum() + 1e-9).all()


@pytest.mark.parametrize(("seed", "layers", "seq"), [s for s in SHAPES if s[2] >= 3])
def test_flow_values_match_networkx_with_padding(seed, layers, seq):
    rng = np.random.default_rng(200 + seed)
    n_pad = max(1, seq // 3)
    a_hat = random_a_hat(rng, layers, seq, n_pad=n_pad)
    assert (a_hat[:, :, seq - n_pad :] == 0.5 * np.eye(seq)[:, seq - n_pad :]).all()
    for one_hot in (True, False):
        readout = np.zeros(seq)
        if one_hot:
            readout[seq - n_pad - 1] = 1.0  # last real position, as StageAttentionNet
        else:
            readout[: seq - n_pad] = 1.0 / (seq - n_pad)
        expected = nx_flow(a_hat, readout, one_hot=one_hot)
        actual = flow_values(a_hat, readout)
        assert_rel_close(actual, expected)
        assert (actual[seq - n_pad :] == 0).all()  # padded sources reach no readout


def test_flow_values_single_non_unit_weight_is_a_capped_super_sink():
    # Only a weight of exactly 1 is a one-hot readout (its node is the sink); a single weight
    # of 0.25 is a weighted readout: the super-sink edge caps every flow at 0.25.
    rng = np.random.default_rng(7)
    a_hat = random_a_hat(rng, 3, 5)
    quarter = np.zeros(5)
    quarter[2] = 0.25
    flows = flow_values(a_hat, quarter)
    assert_rel_close(flows, nx_flow(a_hat, quarter, one_hot=False))
    assert (flows <= 0.25 + 1e-12).all()


@pytest.mark.parametrize("seed", range(6))
def test_flow_between_rollout_and_one_on_stochastic_maps(seed):
    rng = np.random.default_rng(300 + seed)
    layers, seq = 1 + seed % 4, 3 + 2 * seed
    a_hat = random_a_hat(rng, layers, seq, n_pad=seed % 2)
    readout = np.zeros(seq)
    readout[0] = 1.0
    flows = flow_values(a_hat, readout)
    rollout = rollout_numpy(a_hat, readout)
    assert (flows >= rollout - 1e-6).all()
    assert (flows <= 1 + 1e-6).all()
    if layers == 1:
        assert_rel_close(flows, rollout)


# ----------------------------------------------------------------------------- real models


@pytest.mark.parametrize(("name", "layout", "layers"), MODEL_CASES, ids=MODEL_IDS)
def test_attention_flow_matches_networkx_reference(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers)
    scores = AttentionFlow(model, normalize=False).attribute(**batch)
    assert model.training  # the caller's mode is restored
    expected = ref_flow_scores(model, batch)
    assert set(scores) == set(dataset.feature_keys)
    for key in dataset.feature_keys:
        assert scores[key].shape == batch[key].shape
        assert expected[key].max() > 0
        assert_rel_close(position_scores(scores[key]), expected[key], atol=1e-9)
        assert (scores[key][batch[key] == 0] == 0).all()  # padding exactly 0


@pytest.mark.parametrize("head_fusion", ["max", "min"])
@pytest.mark.parametrize(("name", "layout", "layers"), SMALL_CASES, ids=SMALL_IDS)
def test_head_fusion_max_min_match_networkx(name, layout, layers, head_fusion):
    _, model, batch = make_case(name, layout, layers, batch_size=4)
    scores = AttentionFlow(model, head_fusion=head_fusion, normalize=False).attribute(**batch)
    expected = ref_flow_scores(model, batch, head_fusion)
    for key, exp in expected.items():
        assert_rel_close(position_scores(scores[key]), exp, atol=1e-9)
    # Guards against an ignored head_fusion: mean gives other scores.
    mean = AttentionFlow(model, normalize=False).attribute(**batch)
    assert any(not torch.allclose(mean[k], scores[k]) for k in expected)


def test_weighted_readout_model_matches_networkx_super_sink():
    dataset = cohort_dataset("sequence")
    torch.manual_seed(0)
    model = MeanReadoutTransformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    batch = first_batch(dataset, 4)
    scores = AttentionFlow(model, normalize=False).attribute(**batch)
    maps = ref_capture(model, batch)
    for key, layer_maps in maps.items():
        a_hat = ref_a_hat(layer_maps, "mean")
        real = ref_real(batch[key])
        for b in range(real.shape[0]):
            readout = np.concatenate([[1.0], real[b]]).astype(np.float64)
            readout /= readout.sum()
            if readout.astype(bool).sum() < 2:  # [CLS] only: the one-hot path
                continue
            expected = nx_flow(a_hat[b], readout, one_hot=False)[1:] * real[b]
            assert_rel_close(position_scores(scores[key])[b], expected, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "layout"),
    [("Transformer", "sequence"), ("Transformer", "nested"), ("StageAttentionNet", "stagenet")],
)
def test_one_layer_flow_equals_rollout(name, layout):
    dataset = cohort_dataset(layout)
    model = build_model(name, dataset, layers=1)
    batch = first_batch(dataset, 6)
    for head_fusion in ("mean", "max", "min"):
        flow = AttentionFlow(model, head_fusion=head_fusion, normalize=False).attribute(**batch)
        rollout = AttentionRollout(model, head_fusion=head_fusion).attribute(**batch)
        for key in dataset.feature_keys:
            assert rollout[key].abs().sum() > 0
            torch.testing.assert_close(flow[key], rollout[key], rtol=RTOL, atol=1e-9)


@pytest.mark.parametrize(("name", "layout", "layers"), MODEL_CASES, ids=MODEL_IDS)
def test_flow_at_least_rollout_and_at_most_one(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers)
    flow = AttentionFlow(model, normalize=False).attribute(**batch)
    rollout = AttentionRollout(model).attribute(**batch)
    for key in dataset.feature_keys:
        assert (flow[key] >= rollout[key] - 1e-6).all()
        assert (flow[key] <= 1 + 1e-6).all()
        if layers > 1:  # more than one path: flow is strictly above rollout somewhere
            assert (flow[key] > rollout[key] + 1e-6).any()


@pytest.mark.parametrize(("name", "layout", "layers"), MODEL_CASES, ids=MODEL_IDS)
def test_per_feature_scores_sum_to_one_over_each_features_real_positions(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers)
    scores = AttentionFlow(model, normalize="per_feature").attribute(**batch)
    raw = AttentionFlow(model, normalize=False).attribute(**batch)
    for key in dataset.feature_keys:
        real = torch.as_tensor(ref_real(batch[key]))
        per_position = torch.as_tensor(position_scores(scores[key]))
        assert (per_position[~real] == 0).all()
        has_real = real.any(dim=1)
        assert has_real.any()
        torch.testing.assert_close(
            per_position[has_real].sum(dim=1),
            torch.ones(int(has_real.sum()), dtype=torch.float64),
            rtol=0,
            atol=1e-6,
        )
        assert (per_position[~has_real] == 0).all()
        # normalisation only rescales: proportional to the raw flows
        raw_pos = torch.as_tensor(position_scores(raw[key]))
        total = raw_pos.sum(dim=1, keepdim=True)
        expected = torch.where(total > 0, raw_pos / torch.where(total > 0, total, 1), 0.0)
        torch.testing.assert_close(per_position, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("name", "layout", "layers"), MODEL_CASES, ids=MODEL_IDS)
def test_patient_scores_sum_to_one_across_all_features(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers)
    scores = AttentionFlow(model).attribute(**batch)  # normalize="patient", the default
    raw = AttentionFlow(model, normalize="none").attribute(**batch)
    per_position = {k: torch.as_tensor(position_scores(scores[k])) for k in dataset.feature_keys}
    raw_position = {k: torch.as_tensor(position_scores(raw[k])) for k in dataset.feature_keys}
    totals = sum(p.sum(dim=1) for p in per_position.values())
    raw_totals = sum(p.sum(dim=1) for p in raw_position.values())
    assert len(dataset.feature_keys) > 1 and (raw_totals > 0).all()
    torch.testing.assert_close(totals, torch.ones_like(totals), rtol=0, atol=1e-6)
    for key in dataset.feature_keys:  # one divisor per patient, shared by its features
        expected = raw_position[key] / raw_totals[:, None]
        torch.testing.assert_close(per_position[key], expected, rtol=1e-5, atol=1e-7)


def test_patient_normalisation_by_hand():
    from ehrlens.interpret.methods.flow import _normalized_per_patient

    scores = {
        "dx": torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]),
        "rx": torch.tensor([[[4.0, 4.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),  # 2 visits
    }
    out = _normalized_per_patient(scores)
    # patient 0: total 1 + 3 + 4 + 4 = 12 (nested values are summed as given); patient 1: 0
    torch.testing.assert_close(out["dx"], torch.tensor([[1 / 12, 3 / 12, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(
        out["rx"], torch.tensor([[[1 / 3, 1 / 3], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    )
    # a feature without real units in a sample stays out of that sample's total
    present = {"dx": torch.tensor([True, True]), "rx": torch.tensor([False, True])}
    out = _normalized_per_patient(scores, present)
    torch.testing.assert_close(out["dx"][0], torch.tensor([0.25, 0.75, 0.0]))


@pytest.mark.parametrize("value", ["per_patient", "sum", 1])
def test_an_unknown_normalisation_is_refused(value):
    _, model, _ = make_case("Transformer", "sequence", 1)
    with pytest.raises(ValueError, match=r"normalize must be one of \('patient', 'per_feature'"):
        AttentionFlow(model, normalize=value)


def test_true_and_false_keep_their_meaning():
    _, model, _ = make_case("Transformer", "sequence", 1)
    assert AttentionFlow(model, normalize=True).normalize == "patient"
    assert AttentionFlow(model, normalize=False).normalize == "none"


@pytest.mark.parametrize("normalize", ["patient", "per_feature"])
@pytest.mark.parametrize(("name", "layout", "layers"), MODEL_CASES[2:], ids=MODEL_IDS[2:])
def test_normalized_matches_networkx_reference(name, layout, layers, normalize):
    _, model, batch = make_case(name, layout, layers, batch_size=4)
    scores = AttentionFlow(model, normalize=normalize).attribute(**batch)
    expected = ref_flow_scores(model, batch, normalize=normalize)
    for key, exp in expected.items():
        assert_rel_close(position_scores(scores[key]), exp, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize(("name", "layout", "layers"), SMALL_CASES, ids=SMALL_IDS)
def test_batch_equals_one_by_one(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers, batch_size=5)
    flow = AttentionFlow(model)
    together = flow.attribute(**batch)
    for i in range(5):
        alone = flow.attribute(**collate(dataset, [i]))
        for key in dataset.feature_keys:
            got = alone[key][0]
            idx = tuple(slice(0, n) for n in got.shape)
            torch.testing.assert_close(together[key][i][idx], got, rtol=1e-5, atol=1e-6)
            # the rest of the batched row is padding of this sample
            rest = together[key][i].clone()
            rest[idx] = 0
            assert (rest == 0).all()


@pytest.mark.parametrize(("name", "layout", "layers"), SMALL_CASES, ids=SMALL_IDS)
def test_padding_invariance(name, layout, layers):
    dataset = cohort_dataset(layout)
    model = build_model(name, dataset, layers)
    lengths = [int(ref_real(collate(dataset, [i])["diagnoses"]).sum()) for i in range(len(dataset))]
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]
    flow = AttentionFlow(model, normalize=False)
    alone = flow.attribute(**collate(dataset, [short]))
    padded = flow.attribute(**collate(dataset, [short, long]))
    assert padded["diagnoses"].shape[1] > alone["diagnoses"].shape[1]
    for key in dataset.feature_keys:
        got = alone[key][0]
        idx = tuple(slice(0, n) for n in got.shape)
        torch.testing.assert_close(padded[key][0][idx], got, rtol=1e-5, atol=1e-6)
        rest = padded[key][0].clone()
        rest[idx] = 0
        assert (rest == 0).all()


@pytest.mark.parametrize(("name", "layout", "layers"), SMALL_CASES, ids=SMALL_IDS)
def test_inference_mode_equals_no_grad(name, layout, layers):
    """The same scores whatever the autograd mode (within float32 rounding: a mode may pick
    other kernels for the forward)."""
    dataset, model, batch = make_case(name, layout, layers, batch_size=4)
    flow = AttentionFlow(model)
    with torch.inference_mode():
        inference = flow.attribute(**batch)
    with torch.no_grad():
        no_grad = flow.attribute(**batch)
    plain = flow.attribute(**batch)
    for key in dataset.feature_keys:
        torch.testing.assert_close(inference[key], no_grad[key], **FLOAT32_ACROSS)
        torch.testing.assert_close(plain[key], no_grad[key], **FLOAT32_ACROSS)
        assert not no_grad[key].requires_grad


@pytest.mark.parametrize(("name", "layout", "layers"), SMALL_CASES, ids=SMALL_IDS)
def test_two_jobs_equal_one_job(name, layout, layers):
    dataset, model, batch = make_case(name, layout, layers, batch_size=6)
    serial = AttentionFlow(model, normalize=False).attribute(**batch)
    with AttentionFlow(model, normalize=False, n_jobs=2) as flow:
        parallel = flow.attribute(**batch)
        again = flow.attribute(**batch)  # the pool is reused
        assert flow._pool is not None
    assert flow._pool is None  # closed on exit
    for key in dataset.feature_keys:  # worker processes: float32 rounding at most
        torch.testing.assert_close(parallel[key], serial[key], **FLOAT32_ACROSS)
        torch.testing.assert_close(again[key], serial[key], **FLOAT32_ACROSS)


# ----------------------------------------------------------------------------- guards, edges


def test_max_seq_len_guard():
    dataset, model, batch = make_case("Transformer", "sequence", 2, batch_size=4)
    attention_len = 1 + max(batch[key].shape[1] for key in dataset.feature_keys)  # + [CLS]
    with pytest.raises(ValueError, match="max_seq_len") as info:
        AttentionFlow(model, max_seq_len=attention_len - 1).attribute(**batch)
    assert "AttentionRollout" in str(info.value)
    # the longest accepted attention sequence is max_seq_len itself
    AttentionFlow(model, max_seq_len=attention_len).attribute(**batch)


def test_max_seq_len_guard_stage_attention():
    dataset, model, batch = make_case("StageAttentionNet", "stagenet", 2, batch_size=4)
    steps = max(batch[key].shape[1] for key in dataset.feature_keys)
    with pytest.raises(ValueError, match="max_seq_len") as info:
        AttentionFlow(model, max_seq_len=steps - 1).attribute(**batch)
    assert "AttentionRollout" in str(info.value)


def test_model_without_readout_weights_is_refused():
    dataset = cohort_dataset("sequence")
    torch.manual_seed(0)
    model = NoReadoutTransformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    with pytest.raises(TypeError, match="readout"):
        AttentionFlow(model).attribute(**first_batch(dataset, 2))


@pytest.mark.parametrize("obj", [object(), nn.Linear(2, 2)], ids=["object", "Linear"])
def test_object_without_interface_is_refused(obj):
    with pytest.raises(TypeError, match="AttentionInterpretable"):
        AttentionFlow(obj)


def test_invalid_arguments_are_refused():
    _, model, _ = make_case("Transformer", "sequence", 1)
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionFlow(model, head_fusion="median")
    with pytest.raises(ValueError, match="n_jobs"):
        AttentionFlow(model, n_jobs=0)


def _empty_feature_samples(layout: str) -> tuple[Any, list[dict[str, Any]]]:
    cohort = generate_cohort(n_patients=4, layout=layout, seed=11, mean_visits=2.0)
    samples = [dict(s) for s in cohort.samples]
    if layout == "sequence":
        samples[1]["procedures"] = []
    else:  # stagenet: keep the visit times, no code in any visit
        times, visits = samples[1]["procedures"]
        samples[1]["procedures"] = (times, [[] for _ in visits])
    return cohort, samples


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("Transformer", "sequence"),
        ("StageAttentionNet", "stagenet"),
        ("StageAttentionNet", "sequence"),
    ],
)
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
def test_empty_code_list_gives_zero_scores(name, layout, normalize):
    cohort, samples = _empty_feature_samples(layout)
    dataset = create_sample_dataset(samples, cohort.input_schema, cohort.output_schema)
    model = build_model(name, dataset, layers=2)
    flow = AttentionFlow(model, normalize=normalize)
    for indices in ([0, 1, 2, 3], [1]):  # in a batch, and alone (no position at all)
        scores = flow.attribute(**collate(dataset, indices))
        row = indices.index(1)
        for key, s in scores.items():
            assert not torch.isnan(s).any(), key
        assert (scores["procedures"][row] == 0).all()
        assert scores["diagnoses"][row].sum() > 0  # the other features are still scored
        if len(indices) > 1:
            others = [i for i in range(len(indices)) if i != row]
            assert scores["procedures"][others].sum() > 0
