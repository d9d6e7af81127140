"""RETAIN's contributions (Choi et al. 2016) on a model written as PyHealth's ``RETAIN`` is
(``_pyhealth_versions.RetainStyle``): a hand-computed case, and the scores adding up to the
logit with random weights."""

from __future__ import annotations

import pytest
import torch
from _pyhealth_versions import RetainStyle, RNNStyle, make_batch

from ehrlens.integrations import pyhealth
from ehrlens.integrations.pyhealth import wrap
from ehrlens.integrations.pyhealth_retain import RetainContributions


@pytest.fixture
def batch():
    return make_batch()


def hand_built_retain() -> RetainStyle:
    """RETAIN on one feature, dim 2, whose attentions are set by biases alone: every GRU
    weight 0 (so each GRU output is 0), alpha uniform over the visits, beta = (0.5, -0.25);
    codes 1, 2, 3 embedded as (1, 2), (3, -1), (0, 4); output weights (2, 1), bias 0.3."""
    model = RetainStyle(dim=2, features=("visits",)).eval()
    layer = model.retain["visits"]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        layer.beta_li.bias.copy_(torch.atanh(torch.tensor([0.5, -0.25])))
        codes = model.embedding_model.embedding_layers["visits"].weight
        codes[1:4] = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
        model.fc.weight.copy_(torch.tensor([[2.0, 1.0]]))
        model.fc.bias.fill_(0.3)
    return model


def test_retain_contributions_equal_a_hand_computed_case():
    model = hand_built_retain()
    visits = torch.tensor([[[1, 2, 0], [3, 0, 0]]])  # two visits: alpha = 1/2 each
    batch = {"visits": visits, "label": torch.tensor([[1.0]])}
    # code j of visit i: alpha_i * w . (beta_i * e_j) = 0.5 * (2 * 0.5 * e1 + 1 * -0.25 * e2)
    expected = torch.tensor([[[0.25, 1.625, 0.0], [-0.5, 0.0, 0.0]]])
    scores = pyhealth.RetainContributions(model).attribute(**batch)
    torch.testing.assert_close(scores["visits"], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        logit = model(**batch)["logit"]
    assert abs(float(logit) - (0.25 + 1.625 - 0.5 + 0.3)) < 1e-6  # the model agrees
    negative = RetainContributions(wrap(model)).attribute(target_class_idx=0, **batch)
    torch.testing.assert_close(negative["visits"], -expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("outputs", [1, 3])
def test_retain_contributions_add_up_to_the_logit(batch, outputs):
    torch.manual_seed(6)
    model = RetainStyle(outputs=outputs).eval()
    with torch.no_grad():
        model.embedding_model.embedding_layers["vitals"].bias.zero_()  # no unattributed share
    target = 2 if outputs == 3 else None
    scores = RetainContributions(wrap(model)).attribute(target, **batch)
    with torch.no_grad():
        logit = model(**batch)["logit"][:, target or 0]
    total = scores["visits"].sum(dim=(1, 2)) + scores["vitals"].sum(dim=(1, 2))
    torch.testing.assert_close(total + model.fc.bias[target or 0], logit, atol=1e-5, rtol=0)
    assert float(scores["visits"][:, 0, 2].abs().sum()) == 0.0  # padded codes
    assert scores["vitals"].shape == (3, 4, 2)  # each value its own share


def test_retain_contributions_refuse_a_model_that_is_not_retain_shaped():
    with pytest.raises(TypeError, match="RETAIN-shaped model"):
        RetainContributions(wrap(RNNStyle()))
