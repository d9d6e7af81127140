"""Hand-built attention maps with closed-form rollout / Chefer answers (computed by hand).

The fake models (see conftest) return given maps and ``logit = sum_l sum(W_l * A_l)``, so
``d logit / d A_l == W_l``. Without readout weights, interpreters hand the full relevance
matrix to ``get_relevance_tensor`` (recorded in ``model.received``); with them, one row is
propagated. Both paths must give the hand-computed numbers.
"""

from __future__ import annotations

import pytest
import torch

from ehrlens.interpret import AttentionRollout, CheferRelevance


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# Two tokens, two layers, two heads that differ.
LAYER1 = [[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]]
LAYER2 = [[[0.25, 0.75], [1.0, 0.0]], [[0.75, 0.25], [0.5, 0.5]]]

# By hand (A_hat = (A + I) / 2, R = A_hat_2 @ A_hat_1):
#  mean: A1 = [[3/4,1/4],[1/4,3/4]] -> [[7/8,1/8],[1/8,7/8]];
#        A2 = [[1/2,1/2],[3/4,1/4]] -> [[3/4,1/4],[3/8,5/8]];
#        R = [[11/16, 5/16], [13/32, 19/32]]
#  max:  A1 = [[1,1/2],[1/2,1]] -> [[1,1/4],[1/4,1]];
#        A2 = [[3/4,3/4],[1,1/2]] -> [[7/8,3/8],[1/2,3/4]];
#        R = [[31/32, 19/32], [11/16, 7/8]]
#  min:  A1 = [[1/2,0],[0,1/2]] -> [[3/4,0],[0,3/4]];
#        A2 = [[1/4,1/4],[1/2,0]] -> [[5/8,1/8],[1/4,1/2]];
#        R = [[15/32, 3/32], [3/16, 3/8]]
EXPECTED_ROLLOUT = {
    "mean": [[11 / 16, 5 / 16], [13 / 32, 19 / 32]],
    "max": [[31 / 32, 19 / 32], [11 / 16, 7 / 8]],
    "min": [[15 / 32, 3 / 32], [3 / 16, 3 / 8]],
}


def two_token_maps():
    return [t([LAYER1]), t([LAYER2])]  # each [batch=1, heads=2, 2, 2]


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_two_layer_two_token_rollout_full_matrix(fakes, head_fusion):
    model = fakes.Gradient(two_token_maps())
    scores = AttentionRollout(model, head_fusion=head_fusion).attribute(**model.inputs())
    expected = t([EXPECTED_ROLLOUT[head_fusion]])
    torch.testing.assert_close(model.received["codes"].double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(scores["codes"].double(), expected[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_two_layer_two_token_rollout_readout_row(fakes, head_fusion):
    model = fakes.GradientWithReadout(two_token_maps())
    scores = AttentionRollout(model, head_fusion=head_fusion).attribute(**model.inputs())
    expected = t([EXPECTED_ROLLOUT[head_fusion][0]])
    torch.testing.assert_close(scores["codes"].double(), expected, atol=1e-6, rtol=0)


def test_the_three_head_fusions_really_differ(fakes):
    model = fakes.GradientWithReadout(two_token_maps())
    results = [
        AttentionRollout(model, head_fusion=h).attribute(**model.inputs())["codes"]
        for h in ("mean", "max", "min")
    ]
    assert not torch.allclose(results[0], results[1])
    assert not torch.allclose(results[0], results[2])
    assert not torch.allclose(results[1], results[2])


@pytest.mark.parametrize("layers", [1, 2, 4])
@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_identity_maps_give_identity_rollout(fakes, layers, head_fusion):
    seq, heads = 3, 2
    eye = torch.eye(seq).expand(2, heads, seq, seq)
    model = fakes.Gradient([eye] * layers)
    rollout = AttentionRollout(model, head_fusion=head_fusion, discard_ratio=0.5)
    scores = rollout.attribute(**model.inputs())
    assert torch.equal(model.received["codes"], torch.eye(seq).expand(2, seq, seq))
    assert torch.equal(scores["codes"], torch.tensor([[1.0, 0.0, 0.0]] * 2))

    readout_model = fakes.GradientWithReadout([eye] * layers)
    row = AttentionRollout(readout_model, head_fusion=head_fusion).attribute(
        **readout_model.inputs()
    )
    assert torch.equal(row["codes"], torch.tensor([[1.0, 0.0, 0.0]] * 2))


# One layer, one head, 4 tokens, discard_ratio 0.5 (by hand):
#  row 0 [.4, 0, .35, .25]: candidates {2, 3} (col 1 is 0) -> drop 1: col 3
#        -> [.4, 0, .35, 0] / .75 = [8/15, 0, 7/15, 0]
#  row 1 [.3, .05, .25, .4]: the small diagonal is never dropped; candidates {0, 2, 3}
#        -> floor(1.5) = 1: col 2 -> [.3, .05, 0, .4] / .75 = [2/5, 1/15, 0, 8/15]
#  row 2 [.25, .25, .2, .3]: candidates {0, 1, 3}, tie at .25 -> lower index (col 0)
#        -> [0, .25, .2, .3] / .75 = [0, 1/3, 4/15, 2/5]
#  row 3 [.1, .2, .3, .4]: candidates {0, 1, 2} -> col 0 -> [0, 2/9, 1/3, 4/9]
DISCARD_MAP = [
    [0.4, 0.0, 0.35, 0.25],
    [0.3, 0.05, 0.25, 0.4],
    [0.25, 0.25, 0.2, 0.3],
    [0.1, 0.2, 0.3, 0.4],
]
DISCARDED_05 = [
    [8 / 15, 0.0, 7 / 15, 0.0],
    [2 / 5, 1 / 15, 0.0, 8 / 15],
    [0.0, 1 / 3, 4 / 15, 2 / 5],
    [0.0, 2 / 9, 1 / 3, 4 / 9],
]
# discard_ratio 0.75: row 0 floor(1.5)=1 (as above); rows 1-3 floor(2.25)=2:
#  row 1 drops cols 2 (.25) and 0 (.3) -> [0, .05, 0, .4] / .45 = [0, 1/9, 0, 8/9]
#  row 2 drops cols 0 and 1 (tie, both .25) -> [0, 0, .2, .3] / .5 = [0, 0, 2/5, 3/5]
#  row 3 drops cols 0 and 1 -> [0, 0, .3, .4] / .7 = [0, 0, 3/7, 4/7]
DISCARDED_075 = [
    [8 / 15, 0.0, 7 / 15, 0.0],
    [0.0, 1 / 9, 0.0, 8 / 9],
    [0.0, 0.0, 2 / 5, 3 / 5],
    [0.0, 0.0, 3 / 7, 4 / 7],
]


@pytest.mark.parametrize(
    ("ratio", "discarded"), [(0.5, DISCARDED_05), (0.75, DISCARDED_075)], ids=["0.5", "0.75"]
)
def test_discard_ratio_by_hand(fakes, ratio, discarded):
    model = fakes.Gradient([t([[DISCARD_MAP]])])
    scores = AttentionRollout(model, discard_ratio=ratio).attribute(**model.inputs())
    expected = 0.5 * (t(discarded) + torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(model.received["codes"][0].double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(scores["codes"][0].double(), expected[0], atol=1e-6, rtol=0)


def test_discard_ratio_zero_keeps_the_map(fakes):
    model = fakes.Gradient([t([[DISCARD_MAP]])])
    AttentionRollout(model, discard_ratio=0.0).attribute(**model.inputs())
    expected = 0.5 * (t(DISCARD_MAP) + torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(model.received["codes"][0].double(), expected, atol=1e-6, rtol=0)


def test_discard_ratio_two_layers_by_hand(fakes):
    # Layer 1 is DISCARD_MAP (ratio .5 -> DISCARDED_05), layer 2 a 4-token map whose rows
    # have 1 positive off-diagonal entry each (floor(.5 * 1) = 0: nothing dropped).
    layer2 = [
        [0.5, 0.5, 0.0, 0.0],
        [0.0, 0.5, 0.5, 0.0],
        [0.0, 0.0, 0.5, 0.5],
        [0.5, 0.0, 0.0, 0.5],
    ]
    model = fakes.GradientWithReadout([t([[DISCARD_MAP]]), t([[layer2]])])
    scores = AttentionRollout(model, discard_ratio=0.5).attribute(**model.inputs())
    # A_hat_2 row 0 = [3/4, 1/4, 0, 0]; A_hat_1 rows 0, 1 = (DISCARDED_05 + I) / 2:
    #   r0 = [23/30, 0, 7/30, 0], r1 = [1/5, 8/15, 0, 4/15]
    # row = 3/4 r0 + 1/4 r1 = [23/40 + 1/20, 2/15, 7/40, 1/15] = [5/8, 2/15, 7/40, 1/15]
    expected = t([[5 / 8, 2 / 15, 7 / 40, 1 / 15]])
    torch.testing.assert_close(scores["codes"].double(), expected, atol=1e-6, rtol=0)


# Chefer: two tokens, two layers, two heads.
CHEFER_A1 = [[[0.6, 0.4], [0.2, 0.8]], [[0.5, 0.5], [0.9, 0.1]]]
CHEFER_W1 = [[[1.0, -2.0], [3.0, 0.0]], [[2.0, 1.0], [-1.0, 4.0]]]
CHEFER_A2 = [[[0.3, 0.7], [0.5, 0.5]], [[1.0, 0.0], [0.4, 0.6]]]
CHEFER_W2 = [[[2.0, 1.0], [0.0, -1.0]], [[-1.0, 3.0], [2.0, 0.5]]]
# Positive target (the logit, grad = W):
#  W1*A1: head a [[.6,-.8],[.6,0]] -> [[.6,0],[.6,0]]; head b [[1,.5],[-.9,.4]] ->
#         [[1,.5],[0,.4]]; cam1 = [[.8,.25],[.3,.2]]
#  W2*A2: head a [[.6,.7],[0,-.5]] -> [[.6,.7],[0,0]]; head b [[-1,0],[.8,.3]] ->
#         [[0,0],[.8,.3]]; cam2 = [[.3,.35],[.4,.15]]
#  R = (I + cam2)(I + cam1) = [[1.3,.35],[.4,1.15]] @ [[1.8,.25],[.3,1.2]]
#    = [[2.445, .745], [1.065, 1.48]]
CHEFER_POSITIVE = [[2.445, 0.745], [1.065, 1.48]]
# Negative target (target_class_idx=0, the negated logit, grad = -W):
#  cam1 = mean([[0,.8],[0,0]], [[0,0],[.9,0]]) = [[0,.4],[.45,0]]
#  cam2 = mean([[0,0],[0,.5]], [[1,0],[0,0]]) = [[.5,0],[0,.25]]
#  R = [[1.5,0],[0,1.25]] @ [[1,.4],[.45,1]] = [[1.5,.6],[.5625,1.25]]
CHEFER_NEGATIVE = [[1.5, 0.6], [0.5625, 1.25]]


def chefer_model(cls):
    return cls([t([CHEFER_A1]), t([CHEFER_A2])], [t([CHEFER_W1]), t([CHEFER_W2])])


@pytest.mark.parametrize(
    ("target", "expected"),
    [(None, CHEFER_POSITIVE), (1, CHEFER_POSITIVE), (0, CHEFER_NEGATIVE)],
    ids=["None", "1", "0"],
)
def test_chefer_by_hand_full_matrix(fakes, target, expected):
    model = chefer_model(fakes.Gradient)
    scores = CheferRelevance(model).attribute(target, **model.inputs())
    torch.testing.assert_close(model.received["codes"][0].double(), t(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(scores["codes"][0].double(), t(expected[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(None, CHEFER_POSITIVE), (1, CHEFER_POSITIVE), (0, CHEFER_NEGATIVE)],
    ids=["None", "1", "0"],
)
def test_chefer_by_hand_readout_row(fakes, target, expected):
    model = chefer_model(fakes.GradientWithReadout)
    scores = CheferRelevance(model).attribute(target, **model.inputs())
    torch.testing.assert_close(scores["codes"][0].double(), t(expected[0]), atol=1e-6, rtol=0)


def test_chefer_per_sample_binary_targets(fakes):
    # Two identical samples, explained for the positive and the negative class at once.
    maps = [t([CHEFER_A1] * 2), t([CHEFER_A2] * 2)]
    model = fakes.GradientWithReadout(maps, [t([CHEFER_W1] * 2), t([CHEFER_W2] * 2)])
    scores = CheferRelevance(model).attribute(torch.tensor([1, 0]), **model.inputs())
    expected = t([CHEFER_POSITIVE[0], CHEFER_NEGATIVE[0]])
    torch.testing.assert_close(scores["codes"].double(), expected, atol=1e-6, rtol=0)


def test_chefer_layer_not_reaching_the_target_contributes_nothing(fakes):
    # Layer 2 does not enter the logit: its gradient is None, R = I + cam1.
    model = fakes.Gradient([t([CHEFER_A1]), t([CHEFER_A2])], [t([CHEFER_W1]), None])
    scores = CheferRelevance(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"][0].double(), t([1.8, 0.25]), atol=1e-6, rtol=0)


def test_chefer_zero_gradient_gives_identity(fakes):
    zero = torch.zeros(1, 2, 2, 2)
    model = fakes.Gradient([t([CHEFER_A1]), t([CHEFER_A2])], [zero, zero])
    scores = CheferRelevance(model).attribute(**model.inputs())
    assert torch.equal(model.received["codes"][0], torch.eye(2))
    assert torch.equal(scores["codes"][0], torch.tensor([1.0, 0.0]))


def test_padded_code_gets_exactly_zero_on_hand_built_maps(fakes):
    model = chefer_model(fakes.GradientWithReadout)
    inputs = model.inputs(pad_last=1)
    assert inputs["codes"][0, 1] == 0
    chefer = CheferRelevance(model).attribute(**inputs)["codes"]
    rollout = AttentionRollout(model).attribute(**inputs)["codes"]
    assert chefer[0, 1].item() == 0.0 and rollout[0, 1].item() == 0.0
    assert chefer[0, 0].item() == pytest.approx(CHEFER_POSITIVE[0][0], abs=1e-6)
    # mean A1 = [[.55,.45],[.55,.45]], A2 = [[.65,.35],[.45,.55]]; row 0 of A_hat_2 A_hat_1
    # = .825 * [.775, .225] + .175 * [.275, .725] = [.6875, .3125]
    assert rollout[0, 0].item() == pytest.approx(0.6875, abs=1e-6)
