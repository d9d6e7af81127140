"""Which diagnosis, not which visit: code-level scores on per-visit input.

The visit-level ``Transformer`` pools a visit into one token, so every attention method gives
all codes of a visit the same score (the tie reproduced here). ``CodeTransformer`` makes each
code a token: its scores differ inside a visit, and on a hand-built case they are the
numbers computed by hand below. Flow on it is checked against networkx.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _reference_flow import nx_flow
from ehrlens.data import create_sample_dataset
from ehrlens.interpret import AttentionFlow, AttentionRollout, CheferRelevance
from ehrlens.models import CodeTransformer, Transformer

METHODS = {
    "rollout": AttentionRollout,
    "flow": AttentionFlow,
    "chefer": CheferRelevance,
}

# p01: myocardial infarction and hypertension share the first visit.
SAMPLES = [
    {"patient_id": "p01", "dx": [["I21.4", "I10"], ["E11.9"]], "y": 1},
    {"patient_id": "p02", "dx": [["I10", "E11.9"]], "y": 0},
    {"patient_id": "p03", "dx": [["E11.9", "I10", "I21.4"], ["I10"]], "y": 1},
    {"patient_id": "p04", "dx": [["I10"], ["I21.4", "E11.9"]], "y": 0},
]


@pytest.fixture(scope="module")
def dataset():
    return create_sample_dataset(SAMPLES, {"dx": "nested_sequence"}, {"y": "binary"})


def full_batch(dataset):
    return dataset.collate([dataset[i] for i in range(len(dataset))])


def shared_visits(values):
    """(sample, visit) pairs with at least two real codes."""
    real = values != 0
    return [(b, v) for b, v in zip(*torch.nonzero(real.sum(-1) >= 2, as_tuple=True), strict=True)]


@pytest.mark.parametrize("method", list(METHODS))
def test_visit_level_transformer_ties_codes_of_a_visit(dataset, method):
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    batch = full_batch(dataset)
    scores = METHODS[method](model).attribute(**batch)["dx"]
    values = batch["dx"]
    assert shared_visits(values)
    for b, v in shared_visits(values):
        real = values[b, v] != 0
        visit_scores = scores[b, v][real]
        assert visit_scores.abs().max() > 0
        torch.testing.assert_close(visit_scores, visit_scores[:1].expand_as(visit_scores))


@pytest.mark.parametrize("method", list(METHODS))
def test_code_transformer_scores_codes_of_a_visit_apart(dataset, method):
    torch.manual_seed(0)
    model = CodeTransformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    batch = full_batch(dataset)
    scores = METHODS[method](model).attribute(**batch)["dx"]
    values = batch["dx"]
    assert (scores[values == 0] == 0).all()
    for b, v in shared_visits(values):
        visit_scores = scores[b, v][values[b, v] != 0]
        spread = float(visit_scores.max() - visit_scores.min())
        assert spread > 1e-6 * float(visit_scores.abs().max()), (method, int(b), int(v))


def hand_built_model(dataset):
    """One layer, one head, width 4, weights set so the [CLS] row's attention is known.

    Tokens of p01's first visit sit at visit 0, whose sinusoidal encoding is [0, 1, 0, 1];
    embedding rows are chosen so each token is a vector of mean 0 and variance 1 (the
    pre-attention LayerNorm, eps 0, leaves it as it is): [CLS] u0 = [1, -1, 1, -1],
    I21.4 u1 = [1, 1, -1, -1], I10 u2 = [-1, -1, 1, 1]. Queries are the constant
    [2 ln 2, 0, 0, 0] and keys the tokens themselves, so the scaled logits q.u / sqrt(4) are
    ln 2, ln 2 and -ln 2: weights 2 : 2 : 1/2 of 4.5, i.e. [CLS] 4/9, I21.4 4/9, I10 1/9.
    """
    torch.manual_seed(0)
    model = CodeTransformer(dataset, embedding_dim=4, heads=1, num_layers=1, dropout=0.0)
    vocab = dataset.schema.input_processors["dx"].vocabulary.code_to_id
    visit0 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    u0 = torch.tensor([1.0, -1.0, 1.0, -1.0])
    u1 = torch.tensor([1.0, 1.0, -1.0, -1.0])
    u2 = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    block = model.blocks["dx"][0]
    with torch.no_grad():
        model.cls["dx"].copy_(u0)
        unit = model.embeddings["dx"].unit
        unit.weight[vocab["I21.4"]] = u1 - visit0
        unit.weight[vocab["I10"]] = u2 - visit0
        model.segments["dx"].weight.zero_()
        block.norm1.eps = 0.0
        block.norm1.weight.fill_(1.0)
        block.norm1.bias.zero_()
        qkv = block.attention.qkv
        qkv.weight.zero_()
        qkv.bias.zero_()
        qkv.bias[0] = 2 * math.log(2)  # q = [2 ln 2, 0, 0, 0] for every token
        qkv.weight[4:8] = torch.eye(4)  # k = LN(x) = x
        qkv.weight[8:12] = torch.eye(4)  # v: anything; the maps do not depend on it
    return model.eval()


def test_hand_built_case_gives_the_hand_computed_scores(dataset):
    model = hand_built_model(dataset)
    p01 = create_sample_dataset([{**SAMPLES[0], "dx": [["I21.4", "I10"]]}], schema=dataset.schema)
    batch = p01.collate([p01[0]])
    ids = dataset.schema.input_processors["dx"].vocabulary.code_to_id
    values = batch["dx"][0, 0].tolist()
    mi, htn = values.index(ids["I21.4"]), values.index(ids["I10"])
    # Rollout, one layer: the [CLS] row of 0.5 * (A + I): I21.4 2/9, I10 1/18.
    rollout = AttentionRollout(model).attribute(**batch)["dx"][0, 0]
    assert rollout[mi].item() == pytest.approx(2 / 9, abs=1e-6)
    assert rollout[htn].item() == pytest.approx(1 / 18, abs=1e-6)
    # One layer, one path: flow equals rollout; normalised over the two codes: 0.8 / 0.2.
    flow = AttentionFlow(model, normalize=False).attribute(**batch)["dx"][0, 0]
    assert flow[mi].item() == pytest.approx(2 / 9, abs=1e-6)
    assert flow[htn].item() == pytest.approx(1 / 18, abs=1e-6)
    normalized = AttentionFlow(model).attribute(**batch)["dx"][0, 0]
    assert normalized[mi].item() == pytest.approx(0.8, abs=1e-6)
    assert normalized[htn].item() == pytest.approx(0.2, abs=1e-6)
    # The visit-level model, whatever its weights, gives the two codes one score.
    visit_level = Transformer(dataset, embedding_dim=4, heads=1, num_layers=1).eval()
    tied = AttentionRollout(visit_level).attribute(**batch)["dx"][0, 0]
    assert tied[mi].item() == tied[htn].item()


def test_hand_built_chefer_matches_the_gradient_of_the_cls_row(dataset):
    """Chefer, one layer: score_j = mean_h clamp(dlogit/dA * A, 0)[CLS, j] (the identity adds
    nothing off the diagonal); the gradient is taken here by autograd independently."""
    model = hand_built_model(dataset)
    p01 = create_sample_dataset([{**SAMPLES[0], "dx": [["I21.4", "I10"]]}], schema=dataset.schema)
    batch = p01.collate([p01[0]])
    model.set_attention_hooks(True, capture_gradients=True)
    try:
        logit = model(**batch)["logit"][:, 0]
        ((attention, _),) = model.get_attention_layers()["dx"]
        (grad,) = torch.autograd.grad(logit.sum(), [attention])
    finally:
        model.set_attention_hooks(False)
    torch.testing.assert_close(
        attention[0, 0, 0].detach(), torch.tensor([4 / 9, 4 / 9, 1 / 9]), atol=1e-6, rtol=0
    )
    cam = (grad * attention.detach()).clamp(min=0)[0, 0, 0]  # [CLS] row, one head
    scores = CheferRelevance(model).attribute(**batch)["dx"][0, 0]
    ids = dataset.schema.input_processors["dx"].vocabulary.code_to_id
    values = batch["dx"][0, 0].tolist()
    assert scores[values.index(ids["I21.4"])].item() == pytest.approx(cam[1].item(), abs=1e-7)
    assert scores[values.index(ids["I10"])].item() == pytest.approx(cam[2].item(), abs=1e-7)


@pytest.mark.parametrize("layers", [1, 2])
def test_flow_on_codes_matches_networkx(dataset, layers):
    torch.manual_seed(1)
    model = CodeTransformer(dataset, embedding_dim=8, heads=2, num_layers=layers).eval()
    batch = full_batch(dataset)
    scores = AttentionFlow(model, normalize=False).attribute(**batch)["dx"]
    model.set_attention_hooks(True, capture_gradients=False)
    with torch.no_grad():
        model(**batch)
    maps = [a.double().mean(dim=1) for a, _ in model.get_attention_layers()["dx"]]
    model.set_attention_hooks(False)
    a_hat = (0.5 * (torch.stack(maps, dim=1) + torch.eye(maps[0].shape[-1]))).numpy()
    values = batch["dx"]
    for b in range(values.shape[0]):
        # Token j + 1 is the j-th real code in visit, then code order.
        codes = [(v, c) for v in range(values.shape[1]) for c in range(values.shape[2])]
        codes = [(v, c) for v, c in codes if values[b, v, c] != 0]
        readout = np.zeros(a_hat.shape[-1])
        readout[0] = 1.0
        flows = nx_flow(a_hat[b], readout, one_hot=True)
        for j, (v, c) in enumerate(codes):
            assert scores[b, v, c].item() == pytest.approx(flows[1 + j], rel=1e-6, abs=1e-9)
        assert float(scores[b].sum()) == pytest.approx(sum(flows[1 : 1 + len(codes)]), rel=1e-6)


def _softmax_share(attention, gradient):
    """``sum(R_A) - sum(R_scores)`` of one softmax under AttnLRP (the uniform rule gives the
    map half of ``A V``'s relevance; Proposition 3.1 for the scores)."""
    h = gradient / 2
    centred = h - (attention * h).sum(dim=-1, keepdim=True)
    return (attention * h).sum() - (torch.xlogy(attention, attention) * centred).sum()


def test_attnlrp_on_codes_conserves_the_logit(dataset):
    """Logit = relevance of the codes + shares of the additive constants ([CLS], segment and
    visit encodings, biases) + the softmax bias terms, each computed here on its own."""
    from ehrlens.interpret import AttnLRP
    from ehrlens.interpret.api import lrp_rules
    from ehrlens.models.embedding import sinusoidal_encoding

    torch.manual_seed(2)
    model = CodeTransformer(dataset, embedding_dim=8, heads=2, num_layers=2).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.3)
    batch = full_batch(dataset)
    scores = AttnLRP(model).attribute(**batch)["dx"].double()
    embeds = {}

    def keep(module, inputs, output):
        embeds["dx"] = output.detach().requires_grad_(True)
        return embeds["dx"]

    handle = model.get_embedding_layers()["dx"].register_forward_hook(keep)
    params = dict(model.named_parameters())
    try:
        with torch.enable_grad(), lrp_rules(model):
            model.set_attention_hooks(True, capture_gradients=True)
            logit = model(**batch)["logit"][:, 0]
            maps = [a for a, _ in model.get_attention_layers()["dx"]]
            wrt = [embeds["dx"], *maps, *params.values()]
            grads = torch.autograd.grad(logit.sum(), wrt, allow_unused=True)
    finally:
        model.set_attention_hooks(False)
        model.clear_attention_capture()
        handle.remove()
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)]
    unit_grad, map_grads = grads[0], grads[1 : 1 + len(maps)]
    param_grads = dict(zip(params, grads[1 + len(maps) :], strict=True))
    values = batch["dx"]
    visits = torch.arange(values.shape[1], dtype=torch.float64)[None, :, None].expand(values.shape)
    encodings = sinusoidal_encoding(visits, 8)  # [batch, visits, codes, 8]
    shares = {
        "visit encodings": (encodings * unit_grad * (values != 0)[..., None]).sum(),
        "cls": (params["cls.dx"] * param_grads["cls.dx"]).sum(),
        "segments": (params["segments.dx.weight"] * param_grads["segments.dx.weight"]).sum(),
        "biases": sum((params[n] * param_grads[n]).sum() for n in params if n.endswith("bias")),
        "softmax": sum(_softmax_share(a.detach(), g) for a, g in zip(maps, map_grads, strict=True)),
    }
    total = scores.sum() + sum(shares.values())
    assert float(total.detach()) == pytest.approx(float(logit.detach().sum()), rel=1e-6)
    for name, share in shares.items():
        assert abs(float(share.detach())) > 1e-8, name
    assert (scores[values == 0] == 0).all()
