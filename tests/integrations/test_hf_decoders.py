"""Decoders through ``HuggingFaceModel``: GPT-2, Llama, Qwen2 and Mistral families.

Each family is built from a tiny config (grouped-query attention, rotary positions, sliding
windows switched on; offline), with a sequence-classification head and with a
language-model head (the logit of a chosen next token). Rollout, Chefer, raw attention and
input x gradient must equal references computed from an unwrapped eager copy's
``output_attentions`` and ``torch.autograd.grad``, read out at the last real token, for left
and right padding; a padded batch must give each sample's scores alone.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

import _decoders as dec

from ehrlens.integrations.huggingface import HuggingFaceEncoder, HuggingFaceModel
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RawAttention,
)

TOL = {"rtol": 1e-5, "atol": 1e-6, "check_dtype": False}
CASES = [(f, h) for f in dec.FAMILIES for h in dec.HEADS]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{h}" for f, h in CASES])
def case(request):
    family, head = request.param
    model = dec.build(family, head)
    return family, head, model, HuggingFaceModel(copy.deepcopy(model)), dec.eager_copy(model)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_rollout_and_chefer_equal_the_references(case, padding):
    _, head, _, wrapped, reference = case
    batch = dec.token_batch(padding)
    mask = batch["attention_mask"]
    logits, maps = dec.ref_forward(reference, batch)
    target = 7 if head == "lm" else 1  # a chosen next token; a chosen class
    grads = torch.autograd.grad(logits[:, target].sum(), maps)

    assert wrapped.causal and wrapped.readout == "last"
    with torch.inference_mode():
        rollout = AttentionRollout(wrapped).attribute(**batch)["input_ids"]
        low_memory = AttentionRollout(wrapped, low_memory=True).attribute(**batch)["input_ids"]
        raw = RawAttention(wrapped).attribute(**batch)["input_ids"]
    chefer = CheferRelevance(wrapped).attribute(target_class_idx=target, **batch)["input_ids"]

    torch.testing.assert_close(rollout, dec.ref_rollout(maps, mask), **TOL)
    torch.testing.assert_close(low_memory, dec.ref_rollout(maps, mask), **TOL)
    torch.testing.assert_close(chefer, dec.ref_chefer(maps, grads, mask), **TOL)
    last_layer = maps[-1].detach().mean(dim=1)[torch.arange(3), dec.last_real(mask)]
    torch.testing.assert_close(raw, last_layer * mask, **TOL)
    for scores in (rollout, chefer, raw):
        assert bool((scores[mask == 0] == 0).all())  # padding exactly 0
    # the readout row of a row-stochastic product sums to 1 over the real tokens
    torch.testing.assert_close(rollout.sum(dim=1), torch.ones(3), **TOL)


@pytest.mark.parametrize("padding", ["right", "left"])
def test_a_padded_batch_gives_each_sample_alone(case, padding):
    wrapped = case[3]
    batch = dec.token_batch(padding)
    with torch.inference_mode():
        together = AttentionRollout(wrapped).attribute(**batch)["input_ids"]
        logits = wrapped(**batch)["logit"]
    chefer = CheferRelevance(wrapped).attribute(target_class_idx=2, **batch)["input_ids"]
    for row in range(3):
        one = dec.alone(batch, row)
        real = batch["attention_mask"][row].bool()
        with torch.inference_mode():
            torch.testing.assert_close(
                together[row, real], AttentionRollout(wrapped).attribute(**one)["input_ids"][0]
            )
            torch.testing.assert_close(logits[row], wrapped(**one)["logit"][0])
        chefer_alone = CheferRelevance(wrapped).attribute(target_class_idx=2, **one)
        torch.testing.assert_close(chefer[row, real], chefer_alone["input_ids"][0], **TOL)


def test_input_x_gradient_equals_the_reference(case):
    _, head, _, wrapped, reference = case
    batch = dec.token_batch("left")
    mask = batch["attention_mask"]
    embeddings = reference.get_input_embeddings()(batch["input_ids"]).detach()
    embeddings.requires_grad_(True)
    outputs = reference(
        inputs_embeds=embeddings,
        attention_mask=mask,
        position_ids=dec.positions(mask),
        use_cache=False,
    )
    logits = outputs.logits
    if head == "lm":
        logits = logits[torch.arange(3), dec.last_real(mask)]
    else:  # inputs_embeds: the head cannot find padding by id; left padding ends at -1
        logits = logits[:, -1] if logits.dim() == 3 else logits
    target = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), embeddings)
    expected = (grad * embeddings).sum(dim=-1) * mask
    got = InputXGradient(wrapped).attribute(**batch)["input_ids"]
    torch.testing.assert_close(got, expected.detach(), **TOL)


@pytest.mark.parametrize("head", dec.HEADS)
def test_integrated_gradients_runs_on_both_heads_and_pads_to_zero(head):
    """Its baseline is a batch of pad ids, which the head check must let through."""
    wrapped = HuggingFaceModel(dec.build("llama", head))
    batch = dec.token_batch("left")
    scores = IntegratedGradients(wrapped, n_steps=4).attribute(target_class_idx=1, **batch)
    mask = batch["attention_mask"]
    assert bool((scores["input_ids"][mask == 0] == 0).all())
    assert bool((scores["input_ids"][mask == 1] != 0).any())


def test_next_token_logits_are_read_at_the_last_real_token():
    model = dec.build("llama", "lm")
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    assert wrapped.mode == "multiclass"
    for padding in ("left", "right"):
        batch = dec.token_batch(padding)
        with torch.no_grad():
            logits, _ = dec.ref_forward(dec.eager_copy(model), batch)
            got = wrapped(**batch)
        torch.testing.assert_close(got["logit"], logits)
        assert got["logit"].shape == (3, dec.VOCAB)


def ref_flow(maps, tokens: int) -> torch.Tensor:
    """Attention flow with networkx, one unpadded sample: max-flow from each ``(0, j)`` to
    the last token at the top ``(L, tokens - 1)``; capacities ``0.5 * (mean_h(A) + I)``;
    normalised to sum to 1."""
    import networkx as nx

    graph = nx.DiGraph()
    for layer, m in enumerate(maps, start=1):
        a = 0.5 * (m[0].detach().double().mean(dim=0) + torch.eye(tokens))
        for i in range(tokens):
            for j in range(tokens):
                if float(a[i, j]) > 0:
                    graph.add_edge((layer - 1, j), (layer, i), capacity=float(a[i, j]))
    sink = (len(maps), tokens - 1)
    values = torch.tensor([nx.maximum_flow_value(graph, (0, j), sink) for j in range(tokens)])
    return (values / values.sum())[None]


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_flow_equals_the_networkx_reference_and_pads_to_zero(family):
    model = dec.build(family, "classifier")
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    batch = dec.token_batch("left")
    one = dec.alone(batch, 1)  # 4 tokens, no padding
    with torch.no_grad():
        _, maps = dec.ref_forward(dec.eager_copy(model), one)
    with torch.inference_mode():
        alone = AttentionFlow(wrapped).attribute(**one)["input_ids"]
        flow = AttentionFlow(wrapped).attribute(**batch)["input_ids"]
    torch.testing.assert_close(alone, ref_flow(maps, 4), **TOL)
    mask = batch["attention_mask"].bool()
    assert bool((flow[~mask] == 0).all()) and bool((flow[mask] >= 0).all())
    # a sliding window of 3 over 2 layers: the first codes of 7 cannot reach the last one
    reach = flow[0, :2] == 0
    assert bool(reach.all()) if family == "mistral" else not bool(reach.any())
    torch.testing.assert_close(flow[1, mask[1]], alone[0], **TOL)


def test_a_head_that_reads_another_token_is_refused_naming_the_row():
    wrapped = HuggingFaceModel(dec.build("llama", "classifier"))
    batch = dec.token_batch("right")
    batch["input_ids"][1, 3] = dec.PAD  # the head's rule: the last non-pad token is 2
    with pytest.raises(ValueError, match=r"row 1: the classification head reads token 2"):
        wrapped(**batch)


def test_readouts_that_do_not_fit_a_decoder_are_refused():
    with pytest.raises(ValueError, match=r"causal self-attention.*readout='cls'"):
        HuggingFaceModel(dec.build("gpt2", "classifier"), readout="cls")
    with pytest.raises(ValueError, match="readout must be 'last' for its next-token logits"):
        HuggingFaceModel(dec.build("gpt2", "lm"), readout="mean")
    with pytest.raises(ValueError, match="wrap it with HuggingFaceModel"):
        HuggingFaceEncoder(dec.build("llama", "classifier"))


def test_an_empty_row_is_refused_naming_it():
    wrapped = HuggingFaceModel(dec.build("llama", "lm"))
    batch = dec.token_batch("right")
    batch["attention_mask"][2] = 0
    with pytest.raises(ValueError, match="row 2 of input_ids has no real token"):
        wrapped(**batch)


def test_a_model_without_attention_is_refused_by_name():
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, state_size=4)
    with pytest.raises(ValueError, match="MambaForCausalLM has no attention modules"):
        HuggingFaceModel(MambaForCausalLM(config))


def test_an_encoder_decoder_is_refused_by_name():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=32, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    with pytest.raises(ValueError, match="T5ForConditionalGeneration is an encoder-decoder"):
        HuggingFaceModel(T5ForConditionalGeneration(config))
