"""The ``"ehrlens"`` attention of wrapped Hugging Face models (``hf_attention``).

Against independent references that use no ehrlens code: an unwrapped copy with
``attn_implementation="sdpa"`` (plain forwards must equal it bit for bit), an unwrapped eager
copy's ``output_attentions`` (captured maps must equal them bit for bit; the fused key
capture's maps and weighted rows within float64 rounding), and rollout written out with full
matrix products in float64. Encoders are float64 so that the fused kernel can be held to
1e-10, except ModernBERT: its eager attention runs its softmax in float32 whatever the dtype
(in float64 the mask's minimum becomes -inf there and fully masked rows turn NaN), so it is
built in float32 and held to float32 rounding.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import _decoders as dec
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ehrlens.integrations import hf_attention
from ehrlens.integrations.hf_attention import (
    ATTENTION_NAME,
    FusedLayerKeys,
    KeptTensors,
    attention_forward,
    key_padding,
    listening,
    supports_fused_attention,
)
from ehrlens.integrations.huggingface import (
    CapturedLayerCall,
    HuggingFaceEncoder,
    HuggingFaceModel,
    attention_modules,
)
from ehrlens.interpret import AttentionRollout, capture_attention

BERT_LIKE = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 40,
    "num_labels": 2,
}
ENCODERS: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "electra": {"embedding_size": 16},
    "albert": {"embedding_size": 8},
    "modernbert": {  # layers 0 and 2 global, layer 1 within a window of 4 tokens
        "pad_token_id": 1,
        "cls_token_id": 2,
        "sep_token_id": 3,
        "mask_token_id": 4,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "global_attn_every_n_layers": 2,
        "local_attention": 4,
    },
    "distilbert": {"dim": 16, "n_layers": 3, "n_heads": 2, "hidden_dim": 32},
}
#: Families whose eager attention computes its softmax in float32 whatever the dtype: float32.
SOFTMAX_IN_FLOAT32 = ("modernbert",)
EXACT = {"rtol": 0.0, "atol": 0.0}


def build_encoder(model_type: str, dtype: torch.dtype | None = None) -> Any:
    if dtype is None:
        dtype = torch.float32 if model_type in SOFTMAX_IN_FLOAT32 else torch.float64
    overrides = ENCODERS[model_type]
    if model_type == "distilbert":
        kwargs = {"vocab_size": 64, "max_position_embeddings": 40, "num_labels": 2, **overrides}
    else:
        kwargs = {**BERT_LIKE, **overrides}
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **kwargs)
    return AutoModelForSequenceClassification.from_config(config).eval().to(dtype)


def encoder_batch(model: Any) -> dict[str, torch.Tensor]:
    """Three sequences of 9, 6 and 3 real tokens (ids >= 5), right-padded."""
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    for row, length in ((1, 6), (2, 3)):
        ids[row, length:], mask[row, length:] = pad, 0
    return {"input_ids": ids, "attention_mask": mask}


def copy_with(model: Any, implementation: str) -> Any:
    model = copy.deepcopy(model)
    model.set_attn_implementation(implementation)
    return model.eval()


def tolerance(model_type: str) -> dict[str, float]:
    if model_type in SOFTMAX_IN_FLOAT32:
        return {"rtol": 1e-5, "atol": 1e-6}
    return {"rtol": 1e-10, "atol": 1e-12}


def ref_rollout(maps: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``R = Â_L ... Â_1`` with ``Â = 0.5 * (mean_h A + I)``, the [CLS] row, padding 0."""
    tokens = mask.shape[1]
    eye = torch.eye(tokens, dtype=torch.float64)
    product = eye.expand(mask.shape[0], tokens, tokens)
    for a in maps:
        product = (0.5 * (a.double().mean(dim=1) + eye)) @ product
    return product[:, 0] * mask.double()


@pytest.fixture(scope="module", params=list(ENCODERS))
def encoder_case(request):
    model_type = request.param
    model = build_encoder(model_type)
    wrapped = HuggingFaceEncoder(copy.deepcopy(model))
    batch = encoder_batch(model)
    with torch.no_grad():
        eager = copy_with(model, "eager")(**batch, output_attentions=True)
    return model_type, model, wrapped, batch, [a.detach() for a in eager.attentions]


def test_the_attention_and_its_masks_are_registered():
    assert ALL_ATTENTION_FUNCTIONS[ATTENTION_NAME] is attention_forward
    assert ATTENTION_NAME in ALL_MASK_ATTENTION_FUNCTIONS


def test_supported_encoders_are_switched(encoder_case):
    _, _, wrapped, _, _ = encoder_case
    assert wrapped.model.config._attn_implementation == ATTENTION_NAME
    assert wrapped.fused_attention and wrapped.fused_weighted_rows


def test_plain_forward_is_sdpa_bit_for_bit(encoder_case):
    _, model, wrapped, batch, _ = encoder_case
    with torch.no_grad():
        expected = copy_with(model, "sdpa")(**batch).logits
        got = wrapped(**batch)["logit"]
    torch.testing.assert_close(got, expected, **EXACT)


def test_captured_maps_are_the_eager_maps_bit_for_bit(encoder_case):
    _, model, wrapped, batch, eager_maps = encoder_case
    with torch.no_grad():
        eager_logits = copy_with(model, "eager")(**batch).logits
        with capture_attention(wrapped, batch) as run:
            maps = [a for a, _ in wrapped.get_attention_layers()["input_ids"]]
    assert len(maps) == len(eager_maps) == 3
    for got, expected in zip(maps, eager_maps, strict=True):
        torch.testing.assert_close(got, expected, **EXACT)
    torch.testing.assert_close(run.outputs["logit"], eager_logits, **EXACT)


def test_key_capture_keeps_queries_and_keys_that_give_the_eager_maps(encoder_case):
    model_type, model, wrapped, batch, eager_maps = encoder_case
    tol = tolerance(model_type)
    with torch.no_grad():
        sdpa_logits = copy_with(model, "sdpa")(**batch).logits
    generator = torch.Generator().manual_seed(1)
    rows = torch.rand(3, 9, generator=generator, dtype=model.dtype)
    with torch.inference_mode(), capture_attention(wrapped, batch, keys_only=True) as run:
        layers = wrapped.get_attention_keys()["input_ids"]
        kinds = [type(layer) for layer in layers]
        for layer, expected in zip(layers, eager_maps, strict=True):
            torch.testing.assert_close(layer.weights(), expected, **tol)
            torch.testing.assert_close(layer.weights(slice(2, 4)), expected[:, :, 2:4], **tol)
            if isinstance(layer, FusedLayerKeys):
                want = torch.einsum("bi,bhij->bhj", rows, expected)
                torch.testing.assert_close(layer.weighted_rows(rows), want, **tol)
    # the fused kernel's output is SDPA's, within rounding
    torch.testing.assert_close(run.outputs["logit"], sdpa_logits, **tol)
    if model_type == "modernbert":  # the windowed layer's mask is not key padding alone
        assert kinds == [FusedLayerKeys, CapturedLayerCall, FusedLayerKeys]
    else:
        assert kinds == [FusedLayerKeys] * 3


def test_rollout_by_the_fused_kernel_equals_the_reference(encoder_case):
    model_type, _, wrapped, batch, eager_maps = encoder_case
    rollout = AttentionRollout(wrapped)
    assert rollout.recomputes_maps(batch)  # the default: no map formed
    with torch.inference_mode():
        fused = rollout.attribute(**batch)["input_ids"]
        kept = AttentionRollout(wrapped, low_memory=False).attribute(**batch)["input_ids"]
    expected = ref_rollout(eager_maps, batch["attention_mask"])
    torch.testing.assert_close(fused.double(), expected, **tolerance(model_type))
    torch.testing.assert_close(kept.double(), expected, **tolerance(model_type))
    padding = batch["attention_mask"] == 0
    assert bool((fused[padding] == 0).all())  # padding exactly 0
    assert bool((fused >= 0).all())


def test_float32_rollout_by_the_fused_kernel_stays_within_float32_rounding():
    model = build_encoder("bert", torch.float32)
    wrapped = HuggingFaceEncoder(copy.deepcopy(model))
    batch = encoder_batch(model)
    with torch.no_grad():
        maps = copy_with(model, "eager")(**batch, output_attentions=True).attentions
    with torch.inference_mode():
        scores = AttentionRollout(wrapped).attribute(**batch)["input_ids"]
    expected = ref_rollout(list(maps), batch["attention_mask"])
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


def test_training_steps_run_sdpa_with_its_dropout():
    model = build_encoder("bert")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    wrapped = HuggingFaceEncoder(copy.deepcopy(model)).train()
    sdpa = copy_with(model, "sdpa").train()
    batch = encoder_batch(model)
    torch.manual_seed(5)
    got = wrapped(**batch)["logit"]
    torch.manual_seed(5)
    expected = sdpa(**batch).logits
    torch.testing.assert_close(got, expected, **EXACT)
    got.sum().backward()  # a training step's backward runs through SDPA's
    assert all(p.grad is not None for p in wrapped.parameters() if p.requires_grad)


def test_maps_in_training_mode_are_eagers_after_dropout():
    model = build_encoder("bert")
    model.config.attention_probs_dropout_prob = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    switched = HuggingFaceEncoder(copy.deepcopy(model)).model.train()
    eager = copy_with(model, "eager").train()
    batch = encoder_batch(model)
    torch.manual_seed(7)
    with listening("maps"):
        got = switched(**batch, output_attentions=True).attentions
    torch.manual_seed(7)
    expected = eager(**batch, output_attentions=True).attentions
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **EXACT)
    assert all(bool((a[0] == 0).any()) for a in got)  # dropped (sample 0 pads nothing)


def test_output_attentions_of_the_unwrapped_model_are_still_eager_maps():
    model = build_encoder("bert")
    switched = HuggingFaceEncoder(copy.deepcopy(model)).model
    batch = encoder_batch(model)
    with torch.no_grad():
        got = switched(**batch, output_attentions=True).attentions
        expected = copy_with(model, "eager")(**batch, output_attentions=True).attentions
    assert len(got) == 3
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **EXACT)


def test_another_threads_forward_runs_sdpa_while_a_capture_listens():
    model = build_encoder("bert")
    wrapped = HuggingFaceEncoder(copy.deepcopy(model))
    batch = encoder_batch(model)
    with torch.no_grad():
        expected = copy_with(model, "sdpa")(**batch).logits
    seen: dict[str, Any] = {}

    def elsewhere() -> None:
        seen["listening"] = hf_attention.current()
        with torch.no_grad():
            seen["logit"] = wrapped.model(**batch).logits

    with listening("maps"):
        other = threading.Thread(target=elsewhere)
        other.start()
        other.join()
        assert hf_attention.current() is not None
    assert seen["listening"] is None
    torch.testing.assert_close(seen["logit"], expected, **EXACT)
    assert hf_attention.current() is None  # restored on exit


# ------------------------------------------------------------------ decoders
@pytest.mark.parametrize("family", list(dec.FAMILIES))
def test_decoders_plain_forward_is_sdpa_and_maps_are_eager(family):
    model = dec.build(family)
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    assert wrapped.fused_attention and not wrapped.fused_weighted_rows  # maps, not keys
    batch = dec.token_batch("left")
    mask = batch["attention_mask"]
    extra = {"position_ids": dec.positions(mask), "use_cache": False}
    with torch.no_grad():
        expected = copy_with(model, "sdpa")(**batch, **extra).logits
        got = wrapped(**batch)["logit"]
        _, eager_maps = dec.ref_forward(dec.eager_copy(model), batch)
        with capture_attention(wrapped, batch):
            maps = [a for a, _ in wrapped.get_attention_layers()["input_ids"]]
    torch.testing.assert_close(got, expected, **EXACT)
    for a, b in zip(maps, eager_maps, strict=True):
        torch.testing.assert_close(a, b, **EXACT)


def test_decoder_layers_recomputed_from_their_calls_give_the_eager_maps():
    model = dec.build("llama")  # grouped-query attention
    wrapped = HuggingFaceModel(copy.deepcopy(model))
    batch = dec.token_batch("left")
    with torch.no_grad():
        _, eager_maps = dec.ref_forward(dec.eager_copy(model), batch)
    with torch.inference_mode(), capture_attention(wrapped, batch, keys_only=True):
        layers = wrapped.get_attention_keys()["input_ids"]
        assert [type(layer) for layer in layers] == [CapturedLayerCall] * 2  # causal masks
        for layer, expected in zip(layers, eager_maps, strict=True):
            torch.testing.assert_close(layer.weights(), expected, **EXACT)
    with torch.inference_mode():
        recomputed = AttentionRollout(wrapped, low_memory=True).attribute(**batch)
        kept = AttentionRollout(wrapped).attribute(**batch)
    torch.testing.assert_close(recomputed["input_ids"], kept["input_ids"], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ the attention function
def _bert_attention() -> tuple[Any, torch.nn.Module]:
    model = build_encoder("bert")
    HuggingFaceEncoder(model)
    return model, next(iter(attention_modules(model)))


def _qkv(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(  # type: ignore[return-value]
        torch.randn(2, 2, 5, 8, generator=generator, dtype=torch.float64) for _ in range(3)
    )


def test_boolean_4d_masks_give_what_eager_gives_for_their_additive_form():
    _, module = _bert_attention()
    q, k, v = _qkv()
    allowed = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    allowed[1, :, :, 3:] = False  # sample 1: keys 3 and 4 padded
    allowed[0, :, 1, 4] = False  # sample 0: one query row masks one more key
    additive = torch.zeros(2, 1, 5, 5, dtype=torch.float64).masked_fill(
        ~allowed, torch.finfo(torch.float64).min
    )
    from transformers.models.bert.modeling_bert import eager_attention_forward

    expected_out, expected_weights = eager_attention_forward(module, q, k, v, additive, 0.3)
    for mask in (allowed, additive):
        with listening("maps"):
            out, weights = attention_forward(module, q, k, v, mask, scaling=0.3)
        torch.testing.assert_close(out, expected_out, **EXACT)
        torch.testing.assert_close(weights, expected_weights, **EXACT)
    assert float(weights[1, :, :, 3:].abs().max()) == 0.0


def test_key_capture_takes_the_fused_kernel_only_for_key_padding():
    _, module = _bert_attention()
    q, k, v = _qkv(1)
    padding = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    padding[1, :, :, 3:] = False
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    from transformers.models.bert.modeling_bert import eager_attention_forward

    with listening("keys", [module]) as state:
        out, weights = attention_forward(module, q, k, v, padding, scaling=0.3)
    assert weights is None and list(state.fused) == [module]
    kept = state.fused[module]
    additive = torch.zeros(2, 1, 5, 5, dtype=torch.float64).masked_fill(~padding, -1e300)
    expected_out, expected_weights = eager_attention_forward(module, q, k, v, additive, 0.3)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kept.weights(), expected_weights, rtol=1e-12, atol=1e-12)
    assert kept.scaling == 0.3 and kept.mask.tolist()[1] == [True] * 3 + [False] * 2

    for mask, kwargs in ((causal, {}), (padding, {"dropout": 0.1})):
        with listening("keys", [module]) as state:
            _, weights = attention_forward(module, q, k, v, mask, scaling=0.3, **kwargs)
        assert weights is not None and not state.fused  # the eager attention ran
    with listening("keys", []) as state:  # a module nobody listens to
        _, weights = attention_forward(module, q, k, v, padding, scaling=0.3)
    assert weights is not None and not state.fused


def test_key_padding_reads_only_masks_that_pad_keys():
    q = torch.zeros(2, 1, 4, 8)
    low = torch.finfo(torch.float32).min
    assert key_padding(None, q, q).tolist() == [[True] * 4] * 2
    pad = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    boolean = pad[:, None, None, :].expand(2, 1, 4, 4)
    additive = torch.zeros(2, 1, 4, 4).masked_fill(~boolean, low)
    assert key_padding(boolean, q, q).tolist() == pad.tolist()
    assert key_padding(additive, q, q).tolist() == pad.tolist()
    causal = torch.ones(4, 4, dtype=torch.bool).tril()[None, None].expand(2, 1, 4, 4)
    assert key_padding(causal, q, q) is None
    assert key_padding(additive * 0.5, q, q) is None  # another bias than 0 / minimum


def test_kept_tensors_are_packed_into_chunks_and_equal_their_source():
    kept = KeptTensors()
    big = [torch.randn(16, 512, 4, 32).transpose(1, 2) for _ in range(3)]  # 4 MiB each
    copies = [kept.keep(t) for t in big]
    for copied, source in zip(copies, big, strict=True):
        assert torch.equal(copied, source) and copied.is_contiguous()
    storages = {c.untyped_storage().data_ptr() for c in copies}
    assert len(storages) == 1  # one chunk of at least 33 MiB holds all three
    assert copies[0].untyped_storage().nbytes() >= KeptTensors.CHUNK_BYTES
    # small tensors (a log-sum-exp, a key mask) go to a chunk too: none pins the heap
    small, mask = torch.randn(2, 3, dtype=torch.float64), torch.tensor([[True, False, True]])
    copies = [kept.keep(small), kept.keep(mask)]
    assert torch.equal(copies[0], small) and torch.equal(copies[1], mask)
    assert copies[1].dtype == torch.bool
    assert all(c.untyped_storage().nbytes() >= KeptTensors.CHUNK_BYTES for c in copies)
    assert all(c.data_ptr() % KeptTensors.ALIGN == 0 for c in copies)


def test_models_whose_eager_attention_differs_are_not_switched():
    from transformers import (
        BigBirdConfig,
        BigBirdForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
    )

    gpt2 = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, reorder_and_upcast_attn=True)
    )
    assert not supports_fused_attention(gpt2, attention_modules(gpt2))
    big_bird = BigBirdForSequenceClassification(
        BigBirdConfig(**BERT_LIKE, attention_type="original_full")
    )
    assert not supports_fused_attention(big_bird, attention_modules(big_bird))  # no SDPA
    model = build_encoder("bert")
    assert supports_fused_attention(model, attention_modules(model))
    assert not supports_fused_attention(model, [])  # no attention module found

    class OwnAttention(type(next(iter(attention_modules(model))))):  # type: ignore[misc]
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return super().forward(*args, **kwargs)

    layer = model.bert.encoder.layer[0].attention
    layer.self.__class__ = OwnAttention
    assert not supports_fused_attention(model, attention_modules(model) | {layer.self: 1})
