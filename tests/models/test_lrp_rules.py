"""Each AttnLRP rule against its definition, on hand-built cases.

Relevance in the gradient x input form: with output relevance ``R_out`` at ``y``, the
backward pass is seeded with ``R_out / y`` and the relevance at the input is
``x * grad_x``. The references below are the rules as the paper writes them, in explicit
relevance form (float64, loops or plain matrix algebra).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ehrlens.models.attention import MultiHeadAttention
from ehrlens.models.lrp import (
    LRPRules,
    identity_rule,
    lrp_layer_norm,
    qkv_gradient_scale,
    scale_gradient,
    with_gradient_of,
)


@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons: every tensor of these tests is float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def relevance_in(x, y, r_out):
    """``x * grad_x`` with the backward pass seeded by ``r_out / y``."""
    (grad,) = torch.autograd.grad(y, x, r_out / y)
    return x * grad


def test_scale_gradient_scales_only_the_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_gradient(x, torch.tensor([0.25, 0.5, 1.0]))
    assert torch.equal(y, x.detach())
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.tolist() == [0.25, 0.5, 1.0]


def test_with_gradient_of_keeps_values_exactly():
    x = torch.tensor([0.3, 1.7], requires_grad=True)
    value = torch.tanh(x)
    out = with_gradient_of(value, 3.0 * x)
    assert torch.equal(out, value)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.tolist() == [3.0, 3.0]


@pytest.mark.parametrize("activation", [nn.GELU(), nn.Tanh(), nn.ReLU(), nn.SiLU()])
def test_identity_rule_passes_each_units_relevance_unchanged(activation):
    x = torch.tensor([-1.5, -0.2, 0.0, 0.7, 2.0], requires_grad=True)
    y = identity_rule(x, activation(x))
    assert torch.equal(y, activation(x))
    r_out = torch.tensor([0.4, -1.0, 2.0, 0.25, -0.5])
    mask = y.detach() != 0  # where f(x) = 0 there is no relevance to seed
    (grad,) = torch.autograd.grad(y, x, torch.where(mask, r_out / y.detach(), 0.0))
    r_in = x.detach() * grad
    # Identity rule: R_in = R_out element by element (and 0 where x = 0).
    expected = torch.where(mask, r_out, 0.0)
    assert torch.allclose(r_in, expected, atol=1e-12)


def test_identity_rule_hand_numbers_for_gelu():
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    y = identity_rule(x, nn.functional.gelu(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    # backward multiplies by gelu(x) / x = Phi(x): Phi(2) = 0.97725, Phi(-1) = 0.15866
    phi = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in (2.0, -1.0)]
    assert grad.tolist() == pytest.approx(phi, abs=1e-12)


def test_layer_norm_rule_is_the_epsilon_rule_of_the_linearised_norm():
    norm = nn.LayerNorm(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    x = torch.tensor([[1.0, 2.0, 6.0]], requires_grad=True)
    y = lrp_layer_norm(norm, x, norm(x))
    assert torch.equal(y, norm(x))
    r_out = torch.tensor([[0.3, -0.2, 0.5]])
    r_in = relevance_in(x, y, r_out)[0]
    # Explicit epsilon rule (epsilon = 0) for y_j = sum_i x_i W_ij + b_j with
    # W_ij = gamma_j (delta_ij - 1/D) / sigma, sigma held constant (the identity rule).
    xs = [1.0, 2.0, 6.0]
    gamma, beta, r = [1.0, 2.0, 0.5], [0.1, 0.0, -0.2], [0.3, -0.2, 0.5]
    mean = sum(xs) / 3
    sigma = math.sqrt(sum((v - mean) ** 2 for v in xs) / 3 + norm.eps)
    z = [gamma[j] * (xs[j] - mean) / sigma + beta[j] for j in range(3)]
    expected = [
        sum(xs[i] * gamma[j] * ((i == j) - 1 / 3) / sigma * r[j] / z[j] for j in range(3))
        for i in range(3)
    ]
    assert r_in.tolist() == pytest.approx(expected, abs=1e-12)
    # Conservation up to the bias share: sum R_in = sum_j R_j (z_j - b_j) / z_j.
    kept = sum(r[j] * (z[j] - beta[j]) / z[j] for j in range(3))
    assert float(r_in.sum().detach()) == pytest.approx(kept, abs=1e-12)


def test_uniform_rule_on_a_matrix_product():
    a = torch.tensor([[0.2, 0.8], [0.6, 0.4]], requires_grad=True)
    v = torch.tensor([[1.0, -2.0], [3.0, 1.5]], requires_grad=True)
    out = scale_gradient(a @ v, 0.5)
    r_out = torch.tensor([[1.0, 0.5], [-0.3, 2.0]])
    grad_a, grad_v = torch.autograd.grad(out, (a, v), r_out / out.detach())
    r_a, r_v = a.detach() * grad_a, v.detach() * grad_v
    # Explicit: the sum over k is split by the epsilon rule, each product A_ik V_kj in half.
    o = a.detach() @ v.detach()
    ref_a = torch.zeros(2, 2)
    ref_v = torch.zeros(2, 2)
    for i in range(2):
        for j in range(2):
            for k in range(2):
                share = a[i, k].item() * v[k, j].item() * r_out[i, j].item() / o[i, j].item()
                ref_a[i, k] += 0.5 * share
                ref_v[k, j] += 0.5 * share
    assert torch.allclose(r_a, ref_a, atol=1e-12)
    assert torch.allclose(r_v, ref_v, atol=1e-12)
    assert float(r_a.sum() + r_v.sum()) == pytest.approx(float(r_out.sum()), abs=1e-12)


def test_softmax_rule_of_proposition_3_1_is_the_plain_gradient():
    x = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    s = x.softmax(dim=-1)
    r_out = torch.tensor([[0.2, 0.7, -0.4]])
    r_in = relevance_in(x, s, r_out)[0]
    # R_in_i = x_i (R_i - s_i sum_j R_j)
    xs, ss, rs = x[0].tolist(), s[0].tolist(), r_out[0].tolist()
    expected = [xs[i] * (rs[i] - ss[i] * sum(rs)) for i in range(3)]
    assert r_in.tolist() == pytest.approx(expected, abs=1e-12)


def test_qkv_scaling_equals_halving_both_attention_products():
    """The rule as attached (gradient x 1/4 on queries and keys, x 1/2 on values) gives the
    relevance of the rule as written (half of the gradient of Q K^T and of A V)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(dim=4, heads=2).eval()
    x = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    seed = torch.randn(2, 3, 4)

    rules = LRPRules(projections=[(mha.qkv, qkv_gradient_scale(4))])
    try:
        out = mha(x, mask)
    finally:
        rules.remove()
    (attached,) = torch.autograd.grad(out, x, seed)

    # As written: explicit attention with the two products' gradients halved.
    q, k, v = mha.qkv(x).view(2, 3, 3, 2, 2).permute(2, 0, 3, 1, 4)
    scores = scale_gradient(q @ k.transpose(-2, -1), 0.5) / math.sqrt(2)
    scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    context = scale_gradient(scores.softmax(dim=-1) @ v, 0.5)
    written = mha.proj(context.transpose(1, 2).reshape(2, 3, 4))
    assert torch.allclose(written, out)
    (expected,) = torch.autograd.grad(written, x, seed)
    assert torch.allclose(attached, expected, atol=1e-12)
    assert not mha.qkv._forward_hooks  # removed


def test_rules_leave_other_threads_alone():
    import threading

    norm = nn.LayerNorm(3)
    rules = LRPRules(norms=[norm])
    grads = {}

    def other():
        x = torch.tensor([[1.0, 2.0, 4.0]], requires_grad=True)
        (grads["other"],) = torch.autograd.grad(norm(x)[0, 0], x)

    try:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    finally:
        rules.remove()
    x = torch.tensor([[1.0, 2.0, 4.0]], requires_grad=True)
    (plain,) = torch.autograd.grad(norm(x)[0, 0], x)
    assert torch.allclose(grads["other"], plain)


def test_rules_refuse_a_module_of_the_wrong_kind():
    with pytest.raises(TypeError, match=r"nn\.LayerNorm"):
        LRPRules(norms=[nn.Linear(2, 2)])  # type: ignore[list-item]
