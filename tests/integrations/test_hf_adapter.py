"""HuggingFaceEncoder: the interface, faithful capture, unchanged outputs, readable errors."""

from __future__ import annotations

import copy
import importlib
import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from _tolerance import FLOAT32_ACROSS
from ehrlens.integrations.huggingface import HuggingFaceEncoder, HuggingFaceModel, similarity_to
from ehrlens.interpret import (
    AttentionFlow,
    AttentionInterpretable,
    AttentionRollout,
    CheferRelevance,
    GradientInterpretable,
    capture_attention,
)

MODULE = "ehrlens.integrations.huggingface"


@pytest.fixture(scope="module")
def wrapped(classifier):
    return HuggingFaceEncoder(copy.deepcopy(classifier))


def test_is_gradient_interpretable_and_accepted_by_every_interpreter(wrapped):
    assert isinstance(wrapped, GradientInterpretable)
    assert isinstance(wrapped, AttentionInterpretable)
    assert isinstance(wrapped, nn.Module)
    for method in (AttentionRollout, AttentionFlow, CheferRelevance):
        method(wrapped)  # the isinstance check at construction passes
    assert wrapped.feature_keys == ["input_ids"]
    assert wrapped.mode == "multiclass"


def test_captured_maps_equal_output_attentions_of_an_unwrapped_copy(
    wrapped, classifier, padded_batch, refs
):
    _, expected = refs.attentions(refs.eager_copy(classifier), padded_batch)
    tokens = padded_batch["input_ids"].shape[1]
    with torch.no_grad(), capture_attention(wrapped, padded_batch) as run:
        layers = wrapped.get_attention_layers()["input_ids"]
    assert len(layers) == len(expected) == 6
    for (attention, gradient), reference in zip(layers, expected, strict=True):
        assert gradient is None
        assert attention.shape == (2, 12, tokens, tokens)
        # capture may form maps in blocks of query rows: float32 rounding, no more
        torch.testing.assert_close(attention, reference, **FLOAT32_ACROSS)
    # padded keys get exactly zero weight in every map
    pad = padded_batch["attention_mask"] == 0
    for attention, _ in layers:
        assert bool((attention.permute(0, 3, 1, 2)[pad] == 0).all())
    assert isinstance(run.outputs["logit"], torch.Tensor)


def test_logits_unchanged_by_wrapping_and_by_capture(wrapped, classifier, padded_batch, refs):
    with torch.no_grad():
        original = classifier(**padded_batch).logits  # unwrapped, its own sdpa attention
        eager = refs.eager_copy(classifier)(**padded_batch).logits
        plain = wrapped(**padded_batch)
        with capture_attention(wrapped, padded_batch) as run:
            captured = run.outputs["logit"]
    # nothing listens: SDPA itself; capture: the eager layers that return maps. Exact both.
    assert torch.equal(plain["logit"], original)
    assert torch.equal(captured, eager)
    torch.testing.assert_close(plain["logit"], eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(plain["y_prob"], torch.softmax(original, dim=-1))
    assert plain["model_output"].logits is plain["logit"]


def test_hidden_states_of_a_bare_encoder_unchanged(base_model, padded_batch, refs):
    reference = torch.zeros(base_model.config.hidden_size)
    wrapped = HuggingFaceEncoder(copy.deepcopy(base_model), output_fn=similarity_to(reference))
    with torch.no_grad():
        sdpa = base_model(**padded_batch).last_hidden_state
        eager = refs.eager_copy(base_model)(**padded_batch).last_hidden_state
        got = wrapped(**padded_batch)["model_output"].last_hidden_state
        with capture_attention(wrapped, padded_batch) as run:
            captured = run.outputs["model_output"].last_hidden_state
    assert torch.equal(got, sdpa)  # the same SDPA layers: exact
    assert torch.equal(captured, eager)  # the same eager layers: exact


def test_switch_to_the_ehrlens_attention_is_logged(classifier, caplog):
    model = copy.deepcopy(classifier)
    assert model.config._attn_implementation == "sdpa"
    with caplog.at_level(logging.INFO, logger=MODULE):
        HuggingFaceEncoder(model)
    assert model.config._attn_implementation == "ehrlens"
    messages = [r.getMessage() for r in caplog.records if r.name == MODULE]
    assert len(messages) == 1
    assert "BertForSequenceClassification" in messages[0] and "'ehrlens'" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=MODULE):
        HuggingFaceEncoder(model)  # already switched: nothing to say
    assert not [r for r in caplog.records if r.name == MODULE]


def test_a_model_whose_eager_attention_differs_stays_on_eager(caplog):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, reorder_and_upcast_attn=True)
    model = GPT2ForSequenceClassification(config).eval()
    with caplog.at_level(logging.INFO, logger=MODULE):
        wrapped = HuggingFaceModel(model)
    assert model.config._attn_implementation == "eager"
    assert not wrapped.fused_attention
    messages = [r.getMessage() for r in caplog.records if r.name == MODULE]
    assert len(messages) == 1 and "'eager'" in messages[0]


def test_gradient_capture_matches_autograd_and_leaves_no_trace(
    wrapped, classifier, padded_batch, refs
):
    reference_model = refs.eager_copy(classifier)
    outputs, maps = refs.attentions(reference_model, padded_batch)
    target = outputs.logits[:, 1].sum()
    expected = torch.autograd.grad(target, maps)

    wrapped.train()
    with capture_attention(wrapped, padded_batch, gradients=True) as run:
        run.outputs["logit"][:, 1].sum().backward()
        layers = wrapped.get_attention_layers()["input_ids"]
        for (attention, gradient), reference, map_ in zip(layers, expected, maps, strict=True):
            assert attention.requires_grad
            torch.testing.assert_close(attention.detach(), map_.detach(), **FLOAT32_ACROSS)
            torch.testing.assert_close(gradient, reference, rtol=1e-6, atol=1e-9)
    assert all(module.training for module in wrapped.modules())  # mode restored
    wrapped.eval()
    wrapped.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="capture is off"):
        wrapped.get_attention_layers()


def test_each_captured_forward_replaces_the_previous_one(wrapped, padded_batch, refs):
    first = refs.one_sentence(padded_batch, 0)
    wrapped.set_attention_hooks(True, capture_gradients=False)
    try:
        with pytest.raises(RuntimeError, match="no attention captured yet"):
            wrapped.get_attention_layers()
        with torch.no_grad():
            wrapped(**padded_batch)
            wrapped(**first)
        maps = wrapped.get_attention_layers()["input_ids"]
        assert all(a.shape[0] == 1 and a.shape[-1] == first["input_ids"].shape[1] for a, _ in maps)
    finally:
        wrapped.set_attention_hooks(False)


def test_tokenizer_extras_are_accepted(wrapped, tokenizer):
    encoding = tokenizer(
        ["short", "a longer sentence"],
        padding=True,
        return_tensors="pt",
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    with torch.inference_mode():
        scores = AttentionRollout(wrapped).attribute(**encoding)["input_ids"]
    special_or_pad = (encoding["special_tokens_mask"] == 1) | (encoding["attention_mask"] == 0)
    assert bool((scores[special_or_pad] == 0).all())
    assert bool((scores[~special_or_pad] > 0).all())


@pytest.mark.parametrize(
    "method", ["rollout", "flow", "chefer", "attnlrp", "integrated_gradients", "random"]
)
def test_every_method_gives_special_tokens_and_padding_exactly_0(wrapped, tokenizer, method):
    from ehrlens.interpret.registry import make_interpreter

    encoding = tokenizer(
        ["short", "a longer sentence"],
        padding=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    interpreter = make_interpreter(method, wrapped)
    if interpreter.gradient_free:
        with torch.inference_mode():
            scores = interpreter.attribute(**encoding)["input_ids"]
    else:
        scores = interpreter.attribute(**encoding)["input_ids"]
    special_or_pad = (encoding["special_tokens_mask"] == 1) | (encoding["attention_mask"] == 0)
    assert bool(special_or_pad.any()) and bool((~special_or_pad).any())
    assert bool((scores[special_or_pad] == 0).all()), method
    assert bool((scores[~special_or_pad] != 0).any()), method
    # without the tokenizer's mask, special tokens are scored like any token
    plain = {k: v for k, v in encoding.items() if k != "special_tokens_mask"}
    if interpreter.gradient_free:
        with torch.inference_mode():
            unmasked = interpreter.attribute(**plain)["input_ids"]
    else:
        unmasked = interpreter.attribute(**plain)["input_ids"]
    special = (encoding["special_tokens_mask"] == 1) & (encoding["attention_mask"] == 1)
    assert bool((unmasked[special] != 0).any()), method


def test_modes_follow_the_head_config(classifier):
    model = copy.deepcopy(classifier)
    encoder = HuggingFaceEncoder(model)
    assert encoder.mode == "multiclass"
    assert encoder.pad_ids == {"input_ids": 0}  # BERT's [PAD]
    model.config.problem_type = "multi_label_classification"
    assert HuggingFaceEncoder(model).mode == "multilabel"
    assert HuggingFaceEncoder(model, mode="regression").mode == "regression"
    with pytest.raises(ValueError, match="mode must be one of"):
        HuggingFaceEncoder(model, mode="ordinal")
    with pytest.raises(ValueError, match="readout must be one of"):
        HuggingFaceEncoder(model, readout="pooler")


# ----------------------------------------------------------------------------- errors
def test_non_transformers_object_is_refused():
    with pytest.raises(TypeError, match=r"PreTrainedModel.*got Linear"):
        HuggingFaceEncoder(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="got str"):
        HuggingFaceEncoder("bert-base-uncased")


def test_bare_encoder_needs_an_output_fn(base_model):
    message = r"BertModel has no sequence-classification head.*output_fn"
    with pytest.raises(ValueError, match=message):
        HuggingFaceEncoder(copy.deepcopy(base_model))
    with pytest.raises(TypeError, match="output_fn must be callable"):
        HuggingFaceEncoder(copy.deepcopy(base_model), output_fn=3)


def tiny(model_type: str, **overrides):
    from transformers import AutoConfig

    kwargs = {
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
    }
    return AutoConfig.for_model(model_type, **{**kwargs, **overrides})


def test_decoder_only_model_is_refused():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    gpt2 = GPT2Model(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(ValueError, match=r"GPT2Model has causal \(decoder\) self-attention"):
        HuggingFaceEncoder(gpt2, output_fn=similarity_to(torch.ones(16)))


def test_bert_configured_as_decoder_is_refused():
    from transformers import BertModel

    model = BertModel(tiny("bert", is_decoder=True))
    with pytest.raises(ValueError, match="BertModel has causal"):
        HuggingFaceEncoder(model, output_fn=similarity_to(torch.ones(16)))


def test_encoder_decoder_model_is_refused():
    from transformers import BartConfig, BartForSequenceClassification

    config = BartConfig(
        vocab_size=50,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    with pytest.raises(ValueError, match="BartForSequenceClassification is an encoder-decoder"):
        HuggingFaceEncoder(BartForSequenceClassification(config))


def test_model_without_attention_is_refused_at_construction():
    from transformers import FNetForSequenceClassification

    config = tiny("fnet", num_labels=2)
    config.num_attention_heads = 2
    torch.manual_seed(0)
    message = "FNetForSequenceClassification has no attention modules"
    with pytest.raises(ValueError, match=message):  # Fourier mixing, no attention
        HuggingFaceEncoder(FNetForSequenceClassification(config))


def test_model_without_attention_maps_is_refused_at_capture():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    encoder = HuggingFaceEncoder(BertForSequenceClassification(tiny("bert", num_labels=2)))
    encoder._attention_modules = {}  # as a model that lists none: output_attentions
    encoder.model.set_attn_implementation("sdpa")  # which returns no maps
    ids = torch.tensor([[2, 5, 6, 3]])
    with pytest.raises(TypeError, match="BertForSequenceClassification returned no attention"):
        AttentionRollout(encoder).attribute(input_ids=ids)
    with pytest.raises(RuntimeError, match="capture is off"):  # capture was cleaned up
        encoder.get_attention_layers()


def test_model_whose_attention_pools_tokens_is_refused_at_capture():
    from transformers import FunnelConfig, FunnelForSequenceClassification

    config = FunnelConfig(
        vocab_size=50, d_model=16, n_head=2, d_head=8, d_inner=32, block_sizes=[1, 1], num_labels=2
    )
    torch.manual_seed(0)
    encoder = HuggingFaceEncoder(FunnelForSequenceClassification(config))
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with pytest.raises(ValueError, match=r"FunnelForSequenceClassification: attention of layer"):
        AttentionRollout(encoder).attribute(input_ids=ids)


def test_output_fn_of_the_wrong_shape_is_refused(base_model, padded_batch):
    encoder = HuggingFaceEncoder(
        copy.deepcopy(base_model), output_fn=lambda outputs, batch: outputs.last_hidden_state
    )
    with pytest.raises(ValueError, match=r"output_fn must be \[batch\] or \[batch, outputs\]"):
        with torch.no_grad():
            encoder(**padded_batch)


def test_bad_input_ids_are_refused(wrapped):
    message = r"feature 'input_ids': expected token ids \[batch, tokens\]"
    with pytest.raises(ValueError, match=message):
        wrapped(input_ids=torch.tensor([101, 102]))


# ----------------------------------------------------------------------------- optional extra
def test_import_without_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    monkeypatch.delitem(sys.modules, MODULE)
    with pytest.raises(ImportError, match=r"pip install 'ehrlens\[hf\]'"):
        importlib.import_module(MODULE)


def test_ehrlens_imports_without_transformers():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["transformers"] = None  # as if not installed
        import ehrlens, ehrlens.interpret, ehrlens.models, ehrlens.integrations
        from ehrlens.integrations import hf_outputs, hf_words
        try:
            import ehrlens.integrations.huggingface
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "ImportError:" in result.stdout and "pip install 'ehrlens[hf]'" in result.stdout
