"""Interface rules: interface levels, registration, and what attribute() leaves behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ehrlens.interpret import (
    AttentionInterpretable,
    AttentionRollout,
    BaseInterpreter,
    CheferInterpretable,
    CheferRelevance,
    GradientInterpretable,
    capture_attention,
)
from ehrlens.models import StageAttentionNet, Transformer

TWO_TOKEN_MAPS = [
    torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]]]),
    torch.tensor([[[[0.25, 0.75], [1.0, 0.0]], [[0.75, 0.25], [0.5, 0.5]]]]),
]
# mean fusion, by hand (see test_interpret_handbuilt): readout row 0 = [11/16, 5/16]
TWO_TOKEN_ROLLOUT_ROW = torch.tensor([[11 / 16, 5 / 16]])


def test_chefer_interpretable_is_gradient_interpretable():
    assert CheferInterpretable is GradientInterpretable
    assert issubclass(GradientInterpretable, AttentionInterpretable)


def test_real_models_implement_both_levels():
    assert issubclass(Transformer, GradientInterpretable)
    assert issubclass(StageAttentionNet, GradientInterpretable)


def test_interpreters_share_the_base_and_call_attribute(small_case):
    for interpreter in (AttentionRollout(small_case.model), CheferRelevance(small_case.model)):
        assert isinstance(interpreter, BaseInterpreter)
        direct = interpreter.attribute(None, **small_case.batch)
        called = interpreter(**small_case.batch)
        for key in small_case.keys:
            torch.testing.assert_close(direct[key], called[key], atol=0, rtol=0)


def test_attention_only_model_works_with_rollout(fakes):
    model = fakes.AttentionOnly(TWO_TOKEN_MAPS)
    assert isinstance(model, AttentionInterpretable)
    assert not isinstance(model, GradientInterpretable)
    scores = AttentionRollout(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)
    assert model.forward_calls == 1
    assert model.enabled is False  # capture switched off afterwards
    with torch.inference_mode():
        inference = AttentionRollout(model).attribute(**model.inputs())
    torch.testing.assert_close(inference["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)


def test_attention_only_model_is_refused_by_chefer(fakes):
    model = fakes.AttentionOnly(TWO_TOKEN_MAPS)
    with pytest.raises(TypeError, match=r"(?i)gradient"):
        CheferRelevance(model)
    with pytest.raises(TypeError, match=r"(?i)gradient"):
        with capture_attention(model, model.inputs(), gradients=True):
            pass  # pragma: no cover


@pytest.mark.parametrize("interpreter", [AttentionRollout, CheferRelevance])
def test_object_without_the_methods_is_refused(interpreter):
    with pytest.raises(TypeError, match=r"AttentionInterpretable|GradientInterpretable"):
        interpreter(object())

    class Plain(nn.Module):
        def forward(self, **batch):  # pragma: no cover - never called
            return {"logit": torch.zeros(1, 1)}

    with pytest.raises(TypeError):
        interpreter(Plain())


def test_register_opts_a_third_party_class_in(fakes):
    class ThirdParty(fakes.Base):  # has the methods, no interface base class
        def get_readout_weights(self, **data):
            return None  # states no readout row: full-matrix path

    model = ThirdParty(TWO_TOKEN_MAPS)
    assert not isinstance(model, AttentionInterpretable)
    with pytest.raises(TypeError):
        AttentionRollout(model)
    AttentionInterpretable.register(ThirdParty)
    assert isinstance(model, AttentionInterpretable)
    assert not isinstance(model, GradientInterpretable)
    scores = AttentionRollout(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match=r"(?i)gradient"):
        CheferRelevance(model)


def test_registered_class_with_only_the_abstract_methods_is_explained(fakes):
    """``register`` is documented for "a third-party class that has the methods"; only
    ``set_attention_hooks``, ``get_attention_layers`` and ``get_relevance_tensor`` are
    abstract, ``get_readout_weights`` is optional ("None (the default)"). A registered
    class does not inherit that default, so interpreters must not require the method."""

    class ThirdPartyMinimal(fakes.Base):  # no get_readout_weights / select_input_positions
        pass

    AttentionInterpretable.register(ThirdPartyMinimal)
    model = ThirdPartyMinimal(TWO_TOKEN_MAPS)
    assert not hasattr(model, "get_readout_weights")
    scores = AttentionRollout(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)

    class ThirdPartyWithReadoutOnly(fakes.Base):  # readout row stated, no selection method
        def get_readout_weights(self, **data):
            w = torch.zeros(1, 2)
            w[:, 0] = 1.0
            return {self.key: w}

    AttentionInterpretable.register(ThirdPartyWithReadoutOnly)
    model = ThirdPartyWithReadoutOnly(TWO_TOKEN_MAPS)
    assert not hasattr(model, "select_input_positions")
    scores = AttentionRollout(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)

    class ThirdPartyMinimalWithGradients(fakes.Base):
        pass

    GradientInterpretable.register(ThirdPartyMinimalWithGradients)
    weights = [torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)]
    model = ThirdPartyMinimalWithGradients(TWO_TOKEN_MAPS, weights)
    scores = CheferRelevance(model).attribute(**model.inputs())
    torch.testing.assert_close(scores["codes"], torch.tensor([[2.75, 1.25]]), atol=1e-6, rtol=0)


def test_registered_plain_callable_that_is_not_a_module(fakes):
    """A registered third-party object need not be an nn.Module: it is only called."""
    inner = fakes.Base(TWO_TOKEN_MAPS)

    class PlainCallable:
        def __call__(self, **batch):
            return inner(**batch)

        def set_attention_hooks(self, enabled):
            inner.set_attention_hooks(enabled, capture_gradients=False)

        def get_attention_layers(self):
            return inner.get_attention_layers()

        def get_relevance_tensor(self, R, **data):
            return inner.get_relevance_tensor(R, **data)

    AttentionInterpretable.register(PlainCallable)
    scores = AttentionRollout(PlainCallable()).attribute(**inner.inputs())
    torch.testing.assert_close(scores["codes"], TWO_TOKEN_ROLLOUT_ROW, atol=1e-6, rtol=0)
    assert inner.enabled is False and inner.handles == []


def test_register_with_gradient_interpretable_enables_chefer(fakes):
    class ThirdPartyWithGradients(fakes.Base):
        def get_readout_weights(self, **data):
            return None

    GradientInterpretable.register(ThirdPartyWithGradients)
    weights = [torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)]
    model = ThirdPartyWithGradients(TWO_TOKEN_MAPS, weights)
    assert isinstance(model, AttentionInterpretable)
    scores = CheferRelevance(model).attribute(**model.inputs())
    # grad = 1: cam_l = mean-head map; cam1 = [[.75,.25],[.25,.75]], cam2 = [[.5,.5],[.75,.25]]
    # R = (I + cam2)(I + cam1) = [[1.5,.5],[.75,1.25]] @ [[1.75,.25],[.25,1.75]]
    # row 0 = [2.625 + .125, .375 + .875] = [2.75, 1.25]
    torch.testing.assert_close(scores["codes"], torch.tensor([[2.75, 1.25]]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- side effects


def assert_no_hooks(model):
    for modules in model.attention_modules().values():
        for module in modules:
            assert module.has_attention_hooks is False
    # set on the first capture; a model that never captured has none
    assert getattr(model, "_attention_captures", {}) == {}


def run(method, model, batch, target=None):
    if method == "rollout":
        return AttentionRollout(model, "mean", 0.25).attribute(target, **batch)
    return CheferRelevance(model).attribute(target, **batch)


@pytest.mark.parametrize("method", ["rollout", "chefer"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_train_eval_mode_is_unchanged(small_case, ref, close, method, training):
    model = small_case.model
    model.train(training)
    scores = run(method, model, small_case.batch)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    # explanations always come from the eval-mode forward (dropout off)
    if method == "rollout":
        expected = ref.rollout(small_case.fresh_model(), small_case.batch, "mean", 0.25)
    else:
        expected = ref.chefer(small_case.fresh_model(), small_case.batch)
    close(scores, expected)


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_mixed_train_eval_modes_of_submodules_are_restored(small_case, method):
    """A model in train mode with one frozen (eval) submodule, as in fine-tuning: attribute()
    must give every submodule back the mode it had, not the top-level flag."""
    model = small_case.model
    model.train()
    frozen = model.attention_modules()[small_case.keys[0]][0]
    frozen.eval()
    before = {name: m.training for name, m in model.named_modules()}
    run(method, model, small_case.batch)
    after = {name: m.training for name, m in model.named_modules()}
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == [], f"modules whose train/eval mode changed: {changed}"


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_parameter_grads_are_untouched(small_case, method):
    model = small_case.model
    params = list(model.parameters())
    preset = {}
    for i, p in enumerate(params):
        if i % 2 == 0:
            p.grad = torch.randn_like(p)
            preset[i] = p.grad.clone()
    run(method, model, small_case.batch)
    for i, p in enumerate(params):
        if i in preset:
            assert p.grad is not None
            assert torch.equal(p.grad, preset[i])
        else:
            assert p.grad is None
        assert p.requires_grad


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_no_hook_handle_is_left_registered(small_case, method):
    model = small_case.model
    run(method, model, small_case.batch)
    assert_no_hooks(model)
    # the model still works and captures nothing by itself
    model(**small_case.batch)
    assert_no_hooks(model)


def test_capture_attention_context_cleans_up(small_case):
    model = small_case.model.train()
    with capture_attention(model, small_case.batch, gradients=True) as captured:
        assert not model.training
        assert "logit" in captured.outputs
        layers = model.get_attention_layers()
        assert set(layers) == set(small_case.keys)
        assert all(a.requires_grad for v in layers.values() for a, _ in v)
        assert any(m.has_attention_hooks for v in model.attention_modules().values() for m in v)
    assert model.training
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="capture is off"):
        model.get_attention_layers()


def test_two_interpreters_in_sequence_equal_each_alone(small_case, close):
    model, batch = small_case.model, small_case.batch
    rollout, chefer = AttentionRollout(model, "max"), CheferRelevance(model)
    first_rollout = rollout.attribute(**batch)
    first_chefer = chefer.attribute(**batch)
    second_rollout = rollout.attribute(**batch)
    second_chefer = chefer.attribute(0, **batch)
    alone_rollout = AttentionRollout(small_case.fresh_model(), "max").attribute(**batch)
    alone_chefer = CheferRelevance(small_case.fresh_model()).attribute(**batch)
    alone_chefer_0 = CheferRelevance(small_case.fresh_model()).attribute(0, **batch)
    close(first_rollout, alone_rollout, atol=1e-6)
    close(second_rollout, alone_rollout, atol=1e-6)
    close(first_chefer, alone_chefer, atol=1e-6)
    close(second_chefer, alone_chefer_0, atol=1e-6)
    assert_no_hooks(model)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_chefer_under_inference_mode_raises(small_case, training):
    model = small_case.model.train(training)
    with torch.inference_mode(), pytest.raises(RuntimeError) as info:
        CheferRelevance(model).attribute(**small_case.batch)
    message = str(info.value)
    assert "inference_mode" in message or "inference mode" in message
    assert "rollout" in message.lower()
    assert_no_hooks(model)
    assert model.training is training


class Boom(Exception):
    pass


def _raise(*args, **kwargs):
    raise Boom("injected failure inside forward")


def _a_block(model, key):
    if isinstance(model, Transformer):
        return model.encoders[key].blocks[1]
    return model.blocks[key][1]


@pytest.mark.parametrize("method", ["rollout", "chefer"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_exception_in_forward_leaves_no_hooks_and_the_mode(
    small_case, monkeypatch, ref, close, method, training
):
    model = small_case.model.train(training)
    monkeypatch.setattr(_a_block(model, small_case.keys[-1]), "forward", _raise)
    with pytest.raises(Boom):
        run(method, model, small_case.batch)
    assert_no_hooks(model)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    monkeypatch.undo()
    # and the model explains normally afterwards
    expected = ref.rollout(model, small_case.batch, "mean", 0.25)
    close(run("rollout", model, small_case.batch), expected)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_exception_after_forward_leaves_no_hooks_and_the_mode(small_case, training):
    model = small_case.model.train(training)
    with pytest.raises(ValueError):
        CheferRelevance(model).attribute(5, **small_case.batch)  # binary: 0 or 1 only
    assert_no_hooks(model)
    assert model.training is training


def test_rollout_asks_for_forward_only_capture_and_chefer_for_gradients(fakes):
    model = fakes.Gradient(TWO_TOKEN_MAPS, [torch.ones(1, 2, 2, 2)] * 2)
    scores = AttentionRollout(model).attribute(**model.inputs())
    assert model.hook_calls[0] == (True, False)
    assert model.hook_calls[-1][0] is False
    assert model.forward_calls == 1
    assert not scores["codes"].requires_grad
    model.hook_calls.clear()
    scores = CheferRelevance(model).attribute(**model.inputs())
    assert model.hook_calls[0] == (True, True)
    assert model.hook_calls[-1][0] is False
    assert model.forward_calls == 2
    assert not scores["codes"].requires_grad


def test_fake_model_mode_restored_after_rollout_and_chefer(fakes):
    model = fakes.Gradient(TWO_TOKEN_MAPS, [torch.ones(1, 2, 2, 2)] * 2)
    for training in (True, False):
        model.train(training)
        AttentionRollout(model).attribute(**model.inputs())
        assert model.training is training and model.enabled is False
        CheferRelevance(model).attribute(**model.inputs())
        assert model.training is training and model.enabled is False
        assert model.handles == []
        assert model.scale.grad is None
