"""The method registry is generated from the classes: declarations checked at definition,
one registration per method, constructor parameters read back with get_params."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import ehrlens.interpret.methods as methods_package
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.interpret import (
    METHODS,
    AttentionFlow,
    AttentionInterpretable,
    AttentionRollout,
    AttnLRP,
    BaseInterpreter,
    CheferRelevance,
    GradientInterpretable,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    RawAttention,
    VisitScoreSplit,
    make_interpreter,
    register_method,
    unregister_method,
)
from ehrlens.interpret.methods.base import METHOD_REGISTRY
from ehrlens.interpret.registry import BUILTIN_METHODS, class_path, load_class
from ehrlens.models import Transformer

#: The built-ins in the order they are listed (the order interpret/methods/__init__.py imports
#: their modules; each registers at its definition), with their mode by hand: forward-only
#: methods run under inference mode, gradient methods need autograd.
EXPECTED = {
    "rollout": (AttentionRollout, True),
    "flow": (AttentionFlow, True),
    "chefer": (CheferRelevance, False),
    "attnlrp": (AttnLRP, False),
    "input_x_gradient": (InputXGradient, False),
    "integrated_gradients": (IntegratedGradients, False),
    "random": (RandomBaseline, True),
    "raw_attention": (RawAttention, True),
    "visit_split": (VisitScoreSplit, False),
}


@pytest.fixture(scope="module")
def model_and_batch():
    cohort = generate_cohort(n_patients=12, layout="nested", seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()
    return model, next(iter(get_dataloader(dataset, batch_size=5)))


@pytest.fixture
def restore_registry():
    """Whatever a test registers or removes, the next test sees the built-ins only."""
    before = METHOD_REGISTRY.snapshot()
    yield
    METHOD_REGISTRY.restore(before)


def _declared(name="scratch", gradient_free=True, needs=(), summary="a scratch method"):
    return {"name": name, "gradient_free": gradient_free, "needs": needs, "summary": summary}


def _attribute(self, target_class_idx=None, **batch):
    return {}


def _method_class(cls_name="Scratch", base=BaseInterpreter, **attributes):
    namespace = {"attribute": _attribute, **attributes}
    return type(cls_name, (base,), namespace)


# ----------------------------------------------------------------------------- built-ins
def test_registry_holds_the_builtins_in_their_listed_order():
    assert list(METHODS) == list(EXPECTED)
    for name, (cls, gradient_free) in EXPECTED.items():
        info = METHODS[name]
        assert info.cls is cls and cls.name == name
        assert info.gradient_free is gradient_free is cls.gradient_free
        assert info.summary == cls.summary and info.needs == cls.needs
    assert [cls.name for cls in BUILTIN_METHODS] == list(EXPECTED)


def test_every_concrete_method_class_of_the_package_is_registered():
    concrete = {
        cls
        for _, cls in inspect.getmembers(methods_package, inspect.isclass)
        if issubclass(cls, BaseInterpreter) and not inspect.isabstract(cls)
    }
    assert concrete == {info.cls for info in METHODS.values()}


def test_needs_states_the_interface_checked_at_construction(fakes):
    maps = [torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])]
    attention_only = fakes.AttentionOnly(maps)
    assert CheferRelevance.needs == (GradientInterpretable,)
    assert AttentionRollout.needs == (AttentionInterpretable,)
    assert InputXGradient.needs == (nn.Module, "captum")
    with pytest.raises(TypeError, match="CheferRelevance needs a model implementing Gradient"):
        CheferRelevance(attention_only)
    AttentionRollout(attention_only)  # the attention level is enough

    class NeedsGradients(BaseInterpreter):
        name, gradient_free, summary = "needs_gradients", True, "declared need"
        needs = (GradientInterpretable, "someextra")

        def attribute(self, target_class_idx=None, **batch):
            return {}

    with pytest.raises(TypeError, match=r"NeedsGradients needs a model implementing Gradient"):
        NeedsGradients(attention_only)


# ----------------------------------------------------------------------------- declarations
@pytest.mark.parametrize("missing", ["name", "gradient_free", "needs", "summary"])
def test_a_method_class_missing_a_declaration_is_refused_when_defined(missing):
    attributes = _declared()
    del attributes[missing]
    with pytest.raises(TypeError, match=rf"Scratch does not declare {missing}\b"):
        _method_class(**attributes)


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("name", "Rollout", r"Scratch.name must be lower case"),
        ("name", "roll,out", r"Scratch.name must be lower case"),
        ("gradient_free", 1, r"Scratch.gradient_free must be True or False, got 1"),
        ("needs", AttentionInterpretable, r"Scratch.needs must be a tuple"),
        ("needs", (3,), r"Scratch.needs must be a tuple"),
        ("summary", "two\nlines", r"Scratch.summary must be one non-empty line"),
        ("summary", " ", r"Scratch.summary must be one non-empty line"),
    ],
)
def test_a_malformed_declaration_is_refused_when_defined(attribute, value, message):
    with pytest.raises(TypeError, match=message):
        _method_class(**{**_declared(), attribute: value})


def test_a_constructor_get_params_cannot_rebuild_is_refused_when_defined():
    def __init__(self, model, *options):  # pragma: no cover - never called
        super(type(self), self).__init__(model)

    with pytest.raises(TypeError, match=r"Scratch.__init__ takes \*options: name every"):
        _method_class(**_declared(), __init__=__init__)


def test_abstract_intermediate_classes_need_no_declaration():
    class Family(BaseInterpreter):  # still abstract: no attribute()
        shared = 1

    member = _method_class("Member", base=Family, **_declared(name="member"))
    assert member.name == "member" and member.shared == 1


# ----------------------------------------------------------------------------- registration
def test_register_is_a_class_decorator_and_unregister_removes(restore_registry, model_and_batch):
    model, _ = model_and_batch

    @register_method
    class Scratch(BaseInterpreter):
        name, gradient_free, needs, summary = "scratch", True, (), "a scratch method"

        def attribute(self, target_class_idx=None, **batch):
            return {}

    assert METHODS["scratch"].cls is Scratch
    assert list(METHODS)[-1] == "scratch"  # listed after the built-ins
    assert isinstance(make_interpreter("scratch", model), Scratch)
    assert register_method(Scratch) is Scratch  # the same class again: nothing changes
    assert list(METHODS).count("scratch") == 1
    assert unregister_method("scratch") is Scratch
    with pytest.raises(ValueError, match=r"unknown method 'scratch'; choose from rollout, flow"):
        make_interpreter("scratch", model)
    with pytest.raises(ValueError, match=r"unknown method 'scratch'"):
        unregister_method("scratch")


def test_a_taken_name_is_refused_naming_both_classes(restore_registry):
    impostor = _method_class("Impostor", **_declared(name="rollout"))
    with pytest.raises(
        ValueError,
        match=r"'rollout' is already registered to ehrlens.interpret.methods.rollout."
        r"AttentionRollout; choose another name for .*Impostor",
    ):
        register_method(impostor)
    assert METHODS["rollout"].cls is AttentionRollout


def test_a_subclass_must_declare_its_own_name_to_register(restore_registry):
    class MaxRollout(AttentionRollout):
        pass

    assert MaxRollout.name == "rollout"  # inherited declarations are valid for using it
    with pytest.raises(TypeError, match=r"MaxRollout inherits name 'rollout'"):
        register_method(MaxRollout)
    MaxRollout.name = "max_rollout"
    assert register_method(MaxRollout) is MaxRollout
    assert METHODS["max_rollout"].gradient_free is True  # inherited from AttentionRollout


def test_register_refuses_what_is_not_a_concrete_method(restore_registry):
    with pytest.raises(TypeError, match="takes a BaseInterpreter subclass"):
        register_method(object)
    with pytest.raises(TypeError, match="takes a BaseInterpreter subclass"):
        register_method(len)

    class Family(BaseInterpreter):
        pass

    with pytest.raises(TypeError, match="Family is abstract"):
        register_method(Family)


# ----------------------------------------------------------------------------- get_params
#: Non-default constructor arguments of each built-in (flow's n_jobs=1 keeps it in-process).
ARGUMENTS = {
    "rollout": {"head_fusion": "max", "discard_ratio": 0.25, "low_memory": True, "block_rows": 3},
    "flow": {"head_fusion": "min", "normalize": "per_feature", "max_seq_len": 64, "n_jobs": 1},
    "chefer": {},
    "raw_attention": {"layer": 0, "head_fusion": "max"},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4, "internal_batch_size": 10},
    "random": {"seed": 7},
    "visit_split": {"method": "chefer", "share": "uniform"},
}


@pytest.mark.parametrize("name", list(ARGUMENTS))
def test_get_params_returns_the_constructor_arguments(name, model_and_batch):
    model, batch = model_and_batch
    interpreter = make_interpreter(name, model, **ARGUMENTS[name])
    assert interpreter.get_params() == ARGUMENTS[name]
    assert METHODS[name].params == list(ARGUMENTS[name])
    rebuilt = type(interpreter)(model, **interpreter.get_params())
    first, second = interpreter.attribute(**batch), rebuilt.attribute(**batch)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=0, rtol=0)


def test_get_params_names_an_argument_not_stored_under_its_name(model_and_batch):
    model, _ = model_and_batch

    class Scaled(BaseInterpreter):
        name, gradient_free, needs, summary = "scaled", True, (), "scaled scores"

        def __init__(self, model, scale: float = 1.0) -> None:
            super().__init__(model)
            self._scale = scale

        def attribute(self, target_class_idx=None, **batch):
            return {}

    with pytest.raises(TypeError, match=r"argument 'scale' is not stored as self.scale"):
        Scaled(model, scale=2.0).get_params()


# ----------------------------------------------------------------------------- class paths
def test_class_path_names_an_importable_class_and_refuses_local_ones():
    assert class_path(AttentionRollout) == "ehrlens.interpret.methods.rollout:AttentionRollout"
    assert load_class("ehrlens.interpret.methods.rollout:AttentionRollout") is AttentionRollout
    local = _method_class("Local", **_declared(name="local"))
    local.__qualname__ = "test.<locals>.Local"
    with pytest.raises(TypeError, match=r"Local cannot be imported by name \(it is defined "):
        class_path(local)
    with pytest.raises(ImportError, match=r"cannot import ehrlens.interpret.methods:Nope"):
        load_class("ehrlens.interpret.methods:Nope")
    with pytest.raises(ImportError, match=r"cannot import no_such_module_x:Cls"):
        load_class("no_such_module_x:Cls")
