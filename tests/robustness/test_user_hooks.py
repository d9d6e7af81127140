"""A user's own hook that raises is reported as it is.

Issue "Eighteen more ways the promises break", item 13: a forward hook of the user's that
raised inside a PyHealth-style model was reported as "could not register gradient hooks ...
leave its parameters trainable", although nothing was frozen and no gradient hook failed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ehrlens.integrations.pyhealth import register
from ehrlens.interpret import AttentionRollout, CheferRelevance


def _pyhealth_style():
    """The PyHealth-style model module of the integration tests, loaded by its path."""
    path = Path(__file__).resolve().parents[1] / "integrations" / "_pyhealth_style.py"
    spec = importlib.util.spec_from_file_location("_pyhealth_style_for_hooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STYLE = _pyhealth_style()


@register
class HookedModel(STYLE.PyHealthStyleTransformer):
    """The PyHealth-style model, opted in."""


class UsersError(RuntimeError):
    pass


def _raising_hook(module, args, output):
    raise UsersError("my audit hook refused this batch (hook id 7)")


@pytest.mark.parametrize("method", [AttentionRollout, CheferRelevance])
def test_item_13_a_users_raising_forward_hook_is_reported_as_it_is(method):
    torch.manual_seed(0)
    model = HookedModel().eval()
    handle = model.fc.register_forward_hook(_raising_hook)
    try:
        with pytest.raises(UsersError, match=r"my audit hook refused this batch") as error:
            with torch.no_grad():
                method(model).attribute(None, **STYLE.make_batch())
        assert "leave its parameters trainable" not in str(error.value)
    finally:
        handle.remove()


def test_item_13_a_frozen_model_still_gets_the_explanation_of_why():
    """The translation is kept for what it was meant for: hooks refused by autograd."""
    torch.manual_seed(0)
    model = HookedModel().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(RuntimeError, match="none of its parameters requires grad"):
        with torch.inference_mode():
            AttentionRollout(model).attribute(None, **STYLE.make_batch())
