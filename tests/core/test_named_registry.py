"""The one registry mechanism (core/registry.py) that methods, processors and models use."""

from __future__ import annotations

import pytest

from ehrlens.core.registry import Registry, UnknownNameError


class Alpha:
    name = "alpha"


class Beta:
    name = "beta"


class OtherAlpha:
    name = "alpha"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_register_as_a_call_and_as_a_decorator_returns_the_object():
    shapes: Registry[type] = Registry("shape")
    assert shapes.register(Alpha) is Alpha

    @shapes.register
    class Gamma:
        name = "gamma"

    assert shapes["gamma"] is Gamma and shapes["alpha"] is Alpha
    assert dict(shapes) == {"alpha": Alpha, "gamma": Gamma}


def test_iteration_is_in_registration_order():
    shapes: Registry[type] = Registry("shape")
    shapes.register(Beta)
    shapes.register(Alpha)
    assert list(shapes) == ["beta", "alpha"]
    assert list(shapes.values()) == [Beta, Alpha]
    assert len(shapes) == 2 and "beta" in shapes and "gamma" not in shapes
    assert repr(shapes) == "Registry('shape': beta, alpha)"


def test_registering_the_same_object_again_changes_nothing():
    shapes: Registry[type] = Registry("shape")
    shapes.register(Alpha)
    shapes.register(Beta)
    assert shapes.register(Alpha) is Alpha
    assert list(shapes) == ["alpha", "beta"]


def test_a_name_taken_by_another_object_is_refused_naming_both():
    shapes: Registry[type] = Registry("shape")
    shapes.register(Alpha)
    with pytest.raises(ValueError) as caught:
        shapes.register(OtherAlpha)
    assert str(caught.value) == (
        f"shape 'alpha' is already registered to {_qualified(Alpha)}; choose another name "
        f"for {_qualified(OtherAlpha)}, or unregister 'alpha' first"
    )
    assert shapes["alpha"] is Alpha
    assert shapes.register(OtherAlpha, replace=True) is OtherAlpha
    assert shapes["alpha"] is OtherAlpha and list(shapes) == ["alpha"]


def test_unknown_names_are_a_key_and_value_error_listing_the_known_names():
    shapes: Registry[type] = Registry("shape")
    with pytest.raises(UnknownNameError) as caught:
        shapes["alpha"]
    assert str(caught.value) == "unknown shape 'alpha'; choose from no shape is registered"
    shapes.register(Alpha)
    shapes.register(Beta)
    for error in (KeyError, ValueError):
        with pytest.raises(error) as caught:
            shapes["gamma"]
        assert str(caught.value) == "unknown shape 'gamma'; choose from alpha, beta"
    with pytest.raises(ValueError, match=r"^unknown shape 'gamma'; choose from alpha, beta$"):
        shapes.unregister("gamma")
    assert shapes.get("gamma") is None  # Mapping.get: a default, no error


def test_unregister_removes_and_returns_the_object():
    shapes: Registry[type] = Registry("shape")
    shapes.register(Alpha)
    shapes.register(Beta)
    assert shapes.unregister("alpha") is Alpha
    assert list(shapes) == ["beta"]
    assert shapes.register(OtherAlpha) is OtherAlpha  # the name is free again
    assert list(shapes) == ["beta", "alpha"]


def test_key_and_check_are_the_kind_s_own():
    def no_beta(cls: type) -> None:
        if cls is Beta:
            raise TypeError("no beta")

    upper: Registry[type] = Registry("shape", key=lambda cls: cls.__name__.upper(), check=no_beta)
    upper.register(Alpha)
    assert list(upper) == ["ALPHA"] and upper.name_of(Beta) == "BETA"
    with pytest.raises(TypeError, match=r"^no beta$"):
        upper.register(Beta)
    assert list(upper) == ["ALPHA"]


def test_an_object_without_a_string_name_is_refused():
    shapes: Registry[object] = Registry("shape")
    with pytest.raises(TypeError, match=r"has no string attribute 'name'"):
        shapes.register(object())
    empty: Registry[type] = Registry("shape", key=lambda cls: "")
    with pytest.raises(TypeError, match=r"^shape .*Alpha has no name \(got ''\)$"):
        empty.register(Alpha)
    assert len(shapes) == len(empty) == 0


def test_snapshot_and_restore_bring_back_the_entries_in_order():
    shapes: Registry[type] = Registry("shape")
    shapes.register(Alpha)
    before = shapes.snapshot()
    shapes.register(Beta)
    shapes.unregister("alpha")
    shapes.restore(before)
    assert dict(shapes) == {"alpha": Alpha}
    before["beta"] = Beta  # the snapshot is a copy
    assert list(shapes) == ["alpha"]


def test_the_registry_is_read_only_as_a_mapping():
    shapes: Registry[type] = Registry("shape")
    with pytest.raises(TypeError):
        shapes["alpha"] = Alpha  # type: ignore[index]
