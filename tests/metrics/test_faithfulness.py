"""Removal faithfulness on hand-built models whose answers are known exactly."""

import math

import pytest
import torch
from torch import nn

from ehrlens.metrics import RemovalFaithfulness, rank_units, remove_units, top_fraction_mask

SIGNAL = 7  # the only code id the model looks at


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class OneCodeModel(nn.Module):
    """Binary model: logit = 2 * (number of SIGNAL codes) - 1, whatever else is present."""

    mode = "binary"

    def forward(self, codes, **_):
        logit = 2.0 * (codes == SIGNAL).sum(dim=tuple(range(1, codes.dim()))).float() - 1.0
        return {"logit": logit[:, None], "y_prob": torch.sigmoid(logit)[:, None]}


def batch_of(rows):
    width = max(len(r) for r in rows)
    codes = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        codes[i, : len(r)] = torch.tensor(r)
    return {"patient_id": [str(i) for i in range(len(rows))], "codes": codes}


def attribution(batch, order):
    """Scores that rank the codes of each row in ``order`` (a code id -> score map)."""
    return {"codes": batch["codes"].clone().apply_(lambda c: order.get(c, 0)).float()}


def test_removing_the_only_signal_code_drops_probability_by_the_known_amount():
    batch = batch_of([[SIGNAL, 3, 4, 5]])
    ideal = attribution(batch, {SIGNAL: 4, 3: 3, 4: 2, 5: 1})
    result = RemovalFaithfulness(OneCodeModel(), percentages=(25, 50))(ideal, batch)
    expected = sigmoid(1) - sigmoid(-1)
    torch.testing.assert_close(result.comprehensiveness, torch.tensor([[expected, expected]]))
    torch.testing.assert_close(result.sufficiency, torch.zeros(1, 2))
    assert result.target.tolist() == [1] and result.n_scored == 1


def test_ideal_beats_random_beats_worst_on_comprehensiveness():
    rows = [[SIGNAL, 3, 4, 5, 6, 8, 9, 10, 11, 12]] * 8
    batch = batch_of(rows)
    model = RemovalFaithfulness(OneCodeModel(), percentages=(10, 20, 50))
    ideal = model(attribution(batch, {SIGNAL: 10}), batch).summary()["comprehensiveness"]
    worst = model(attribution(batch, {SIGNAL: -10}), batch).summary()["comprehensiveness"]
    generator = torch.Generator().manual_seed(0)
    random_scores = {"codes": torch.rand(batch["codes"].shape, generator=generator)}
    middle = model(random_scores, batch).summary()["comprehensiveness"]
    assert ideal == pytest.approx(sigmoid(1) - sigmoid(-1))
    assert worst == 0.0
    assert worst < middle < ideal


def test_removal_sets_codes_to_pad_and_keeps_integer_dtype():
    batch = batch_of([[SIGNAL, 3], [4, 5, 6]])
    keys, rank, real = rank_units({"codes": batch["codes"].float()}, batch)
    removed = remove_units(batch, keys, top_fraction_mask(rank, real, 50), "zero")
    assert removed["codes"].dtype == torch.long
    # ceil(50% of 2) = 1 code removed from row 0 (the 7); ceil(50% of 3) = 2 from row 1.
    assert removed["codes"].tolist() == [[0, 3, 0], [4, 0, 0]]
    assert batch["codes"].tolist() == [[7, 3, 0], [4, 5, 6]]  # the input is not modified


def test_padding_is_never_ranked_counted_or_changed():
    batch = batch_of([[SIGNAL], [3, 4, 5, 6]])
    scores = {"codes": torch.tensor([[0.1, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 4.0]])}
    keys, rank, real = rank_units(scores, batch)
    assert real.sum(1).tolist() == [1, 4]
    top = top_fraction_mask(rank, real, 100)
    assert top.tolist() == real.tolist()  # 100% removes exactly the real units
    removed = remove_units(batch, keys, top, "zero")
    assert removed["codes"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_ties_break_deterministically_by_position():
    batch = batch_of([[3, 4, 5, 6]])
    _, rank, _ = rank_units({"codes": torch.ones(1, 4)}, batch)
    assert rank.tolist() == [[0, 1, 2, 3]]


def test_nested_visits_are_removed_code_by_code():
    codes = torch.tensor([[[SIGNAL, 3], [4, 0]]])
    batch = {"patient_id": ["p"], "codes": codes}
    scores = {"codes": torch.tensor([[[5.0, 1.0], [2.0, 99.0]]])}  # 99 sits on padding
    keys, rank, real = rank_units(scores, batch)
    removed = remove_units(batch, keys, top_fraction_mask(rank, real, 33), "zero")  # 1 of 3
    assert removed["codes"].tolist() == [[[0, 3], [4, 0]]]


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_numeric_values_are_removed_by_zero_or_batch_mean(ablation):
    values = torch.tensor([[[1.0, 10.0], [3.0, 30.0]], [[5.0, 50.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    batch = {"patient_id": ["a", "b"], "labs": values, "masks": {"labs": mask}}
    scores = {"labs": torch.tensor([[[4.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])}
    keys, _, real = rank_units(scores, batch)
    assert real.sum(1).tolist() == [4, 2]
    remove = torch.zeros_like(real)
    remove[0, 0] = True  # the first value of patient a
    out = remove_units(batch, keys, remove, ablation)["labs"]
    expected = 0.0 if ablation == "zero" else (1.0 + 3.0 + 5.0) / 3  # real values of channel 0
    assert out[0, 0, 0].item() == pytest.approx(expected)
    assert torch.equal(out[1], values[1]) and out[0, 1, 0].item() == 3.0


def test_per_percentage_output_and_sample_filter_counts():
    batch = batch_of([[SIGNAL, 3], [3, 4], [SIGNAL, SIGNAL, 5]])
    scores = attribution(batch, {SIGNAL: 1})
    full = RemovalFaithfulness(OneCodeModel(), percentages=(1, 50, 100))(scores, batch)
    assert full.comprehensiveness.shape == (3, 3) and full.n_scored == 3
    assert set(full.summary()) >= {"comprehensiveness@1", "sufficiency@100", "n_scored"}
    positives = RemovalFaithfulness(
        OneCodeModel(), percentages=(50,), sample_filter="predicted_positive"
    )(scores, batch)
    assert positives.scored.tolist() == [True, False, True] and positives.n_scored == 2
    custom = RemovalFaithfulness(
        OneCodeModel(), percentages=(50,), sample_filter=lambda prob, target: prob[:, 0] > 0.9
    )(scores, batch)
    assert custom.scored.tolist() == [False, False, True]


def test_the_negative_class_is_explained_when_predicted():
    # Patient without the signal code: predicted class 0 with p(0) = 1 - sigmoid(-1).
    batch = batch_of([[3, 4]])
    result = RemovalFaithfulness(OneCodeModel(), percentages=(50,))(
        attribution(batch, {3: 1}), batch
    )
    assert result.target.tolist() == [0]
    torch.testing.assert_close(result.base_probability, torch.tensor([1 - sigmoid(-1)]))
    torch.testing.assert_close(result.comprehensiveness, torch.zeros(1, 1))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="percentages"):
        RemovalFaithfulness(OneCodeModel(), percentages=(0,))
    with pytest.raises(ValueError, match="ablation"):
        RemovalFaithfulness(OneCodeModel(), ablation="noise")
    batch = batch_of([[SIGNAL, 3]])
    with pytest.raises(ValueError, match="feature 'codes'"):
        RemovalFaithfulness(OneCodeModel())({"codes": torch.ones(1, 3)}, batch)
    with pytest.raises(ValueError, match="sample_filter"):
        RemovalFaithfulness(OneCodeModel(), sample_filter="some")(
            attribution(batch, {SIGNAL: 1}), batch
        )
