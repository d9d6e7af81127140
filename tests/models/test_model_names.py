"""One table of model names: each model class declares its short name; the table, the
workflows and the command line read it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ehrlens.cli.app import main
from ehrlens.models import (
    BaseModel,
    CodeTransformer,
    StageAttentionNet,
    Transformer,
    model_class,
    model_classes,
)
from ehrlens.models.base import MODEL_REGISTRY


@pytest.fixture
def restore_models():
    before, names = dict(BaseModel._registry), MODEL_REGISTRY.snapshot()
    yield
    BaseModel._registry.clear()
    BaseModel._registry.update(before)
    MODEL_REGISTRY.restore(names)


def test_the_table_lists_the_models_by_their_declared_short_names():
    assert model_classes() == {
        "transformer": Transformer,
        "stagenet": StageAttentionNet,
        "code_transformer": CodeTransformer,
    }
    assert list(model_classes()) == ["transformer", "stagenet", "code_transformer"]
    assert model_class("stagenet") is StageAttentionNet
    assert model_class("code_transformer") is CodeTransformer
    with pytest.raises(
        ValueError, match=r"unknown model 'gru'; choose from transformer, stagenet, code_trans"
    ):
        model_class("gru")


def test_a_subclass_is_listed_only_under_its_own_short_name(restore_models):
    class Tweaked(Transformer):
        pass

    assert Tweaked.short_name == "transformer"  # inherited, yet not listed under it
    assert model_classes()["transformer"] is Transformer
    assert Tweaked not in model_classes().values()

    class Wide(Transformer):
        short_name = "wide"

    assert model_classes()["wide"] is Wide and model_class("wide") is Wide


def test_a_taken_short_name_is_refused(restore_models):
    with pytest.raises(TypeError, match=r"short_name 'stagenet' of .*Copy is already used by "):

        class Copy(Transformer):
            short_name = "stagenet"

    assert model_classes()["stagenet"] is StageAttentionNet


def test_train_offers_the_models_of_the_table():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    assert "--model [transformer|stagenet|code_transformer]" in result.stdout
