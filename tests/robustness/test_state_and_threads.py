"""State and concurrency: a failure inside ``attribute`` leaves no hook, the caller's modes and
a free lock; explanations of one model from several threads are serialised (a per-model
lock) and each equals the result it has alone; a plain forward from another thread can
neither overwrite nor leak into a capture in progress.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest
import torch
from _robustness_kit import METHODS, MODEL_METHODS, MODELS, make_dataset, make_model, no_hooks

from ehrlens.core.modes import eval_mode, model_lock
from ehrlens.interpret.api import capabilities, capture_attention
from ehrlens.models import Transformer
from ehrlens.models.capture import AttentionSlot


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def _block(model, key: str = "visits", layer: int = 1):
    if isinstance(model, Transformer):
        return model.encoders[key].blocks[layer]
    return model.blocks[key][layer]


def _modes(model) -> list[bool]:
    return [m.training for m in model.modules()]


def _set_mixed_modes(model, training: bool) -> list[bool]:
    """The caller's modes: the whole model in ``training``, one block the other way."""
    model.train(training)
    _block(model, "codes", 0).train(not training)
    return _modes(model)


def _lock_is_free(model) -> bool:
    """True when another thread can take the model's lock right now."""
    result = []

    def probe():
        lock = model_lock(model)
        got = lock.acquire(blocking=False)
        if got:
            lock.release()
        result.append(got)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def _assert_clean(model, modes: list[bool]) -> None:
    assert no_hooks(model), "a hook was left registered"
    assert not model.__dict__.get("_attention_captures"), "captures were left behind"
    assert _modes(model) == modes, "the caller's train/eval modes were not restored"
    assert _lock_is_free(model), "the model's lock was not released"


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_a_failure_inside_forward_leaves_no_trace(dataset, monkeypatch, name, method, training):
    model = make_model(name, dataset)
    batch = dataset.collate(dataset.items[:3])
    expected = METHODS[method](model.eval()).attribute(**batch)
    modes = _set_mixed_modes(model, training)

    def fail(*args, **kwargs):
        raise Boom("injected failure inside forward")

    monkeypatch.setattr(_block(model), "forward", fail)
    with pytest.raises(Boom):
        METHODS[method](model).attribute(**batch)
    _assert_clean(model, modes)
    monkeypatch.undo()
    _same(METHODS[method](model).attribute(**batch), expected)  # and it works afterwards
    assert _modes(model) == modes


#: Where Chefer's backward reaches the capture, per path: with gradient fusion (ehrlens's
#: models) the hook on each attention output hands every block of recomputed weights and
#: their gradient to ``record_gradient_block``; without it (the per-head path, whole maps kept
#: in the graph) the tensor hook on each map calls ``_on_gradient``.
BACKWARD_PATHS = {
    "fused": "record_gradient_block",
    "per_head": "_on_gradient",
}


@pytest.mark.parametrize("path", list(BACKWARD_PATHS))
@pytest.mark.parametrize("name", MODELS)
def test_a_failure_inside_the_backward_leaves_no_trace(dataset, monkeypatch, name, path):
    model = make_model(name, dataset)
    batch = dataset.collate(dataset.items[:3])
    if path == "per_head":
        per_head = dataclasses.replace(capabilities(model), gradient_fusion=False)
        monkeypatch.setattr(type(model), "interpret_capabilities", per_head)
    assert capabilities(model).gradient_fusion == (path == "fused")
    expected = METHODS["chefer"](model.eval()).attribute(**batch)
    modes = _set_mixed_modes(model, True)
    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise Boom("injected failure inside backward")

    with monkeypatch.context() as patch:
        patch.setattr(AttentionSlot, BACKWARD_PATHS[path], fail)
        with pytest.raises(Boom):
            METHODS["chefer"](model).attribute(**batch)
    assert calls, f"the {path} backward never reached AttentionSlot.{BACKWARD_PATHS[path]}"
    _assert_clean(model, modes)
    _same(METHODS["chefer"](model).attribute(**batch), expected)  # and it works afterwards
    assert _modes(model) == modes

    def fail_in_head(*args):
        raise Boom("injected failure inside backward")

    handle = model.head.register_full_backward_hook(fail_in_head)
    try:
        for method in ("input_x_gradient", "integrated_gradients"):
            with pytest.raises(Boom):
                METHODS[method](model).attribute(**batch)
            _assert_clean(model, modes)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", MODELS)
def test_a_failure_after_the_forward_leaves_no_trace(dataset, name):
    model = make_model(name, dataset)
    batch = dataset.collate(dataset.items[:3])
    modes = _set_mixed_modes(model, True)
    for method in MODEL_METHODS:
        with pytest.raises(ValueError, match="target_class_idx"):
            METHODS[method](model).attribute(5, **batch)
        _assert_clean(model, modes)


# ----------------------------------------------------------------------------- locks


def test_one_reentrant_lock_per_model(dataset):
    a, b = make_model("Transformer", dataset), make_model("Transformer", dataset)
    assert model_lock(a) is model_lock(a)
    assert model_lock(a) is not model_lock(b)
    with eval_mode(a), capture_attention(a, dataset.collate(dataset.items[:2])):
        assert not _lock_is_free(a)  # held for the whole capture ...
        assert _lock_is_free(b)  # ... of this model only
    assert _lock_is_free(a)


# ----------------------------------------------------------------------------- threads


def _run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target):
        def run():
            try:
                barrier.wait()
                target()
            except BaseException as error:  # re-raised in the main thread
                errors.append(error)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    if errors:
        raise errors[0]


def _slow_forward(monkeypatch, model, seconds: float = 0.002) -> None:
    """Slow every forward down, so that unserialised explanations would overlap."""
    block = _block(model, "codes", 0)
    original = block.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    monkeypatch.setattr(block, "forward", slow)


@pytest.mark.parametrize(
    "methods",
    [("rollout", "chefer"), ("flow", "rollout_low_memory"), ("raw", "integrated_gradients")],
    ids=lambda m: "+".join(m),
)
@pytest.mark.parametrize("name", MODELS)
def test_two_threads_explaining_one_model_get_their_sequential_results(
    dataset, monkeypatch, name, methods
):
    model = make_model(name, dataset).train()  # the caller's mode, restored after both
    batches = [dataset.collate(dataset.items[i : i + 3]) for i in range(3)]
    expected = {
        (m, i): METHODS[m](model).attribute(**batch)
        for m in methods
        for i, batch in enumerate(batches)
    }
    _slow_forward(monkeypatch, model)
    log: list[tuple[int, bool]] = []
    set_hooks = model.set_attention_hooks

    def logged(enabled, *args, **kwargs):
        log.append((threading.get_ident(), enabled))
        return set_hooks(enabled, *args, **kwargs)

    monkeypatch.setattr(model, "set_attention_hooks", logged)
    results: dict = {}

    def explain(method):
        interpreter = METHODS[method](model)  # one interpreter per thread

        def run():
            for _ in range(2):
                for i, batch in enumerate(batches):
                    results[(method, i)] = interpreter.attribute(**batch)

        return run

    _run_threads([explain(m) for m in methods])
    for key, value in expected.items():
        _same(results[key], value)
    # Captures took turns: every enable is followed by its own thread's disable.
    for (thread_on, on), (thread_off, off) in zip(log[::2], log[1::2], strict=True):
        assert on and not off and thread_on == thread_off
    assert model.training and all(m.training for m in model.modules())
    assert no_hooks(model)


@pytest.mark.parametrize("name", MODELS)
def test_a_plain_forward_in_another_thread_does_not_leak_into_a_capture(dataset, monkeypatch, name):
    model = make_model(name, dataset)
    batch = dataset.collate(dataset.items[:3])
    other = dataset.collate(dataset.items[2:])  # another size and other patients
    expected = {m: METHODS[m](model).attribute(**batch) for m in ("rollout", "chefer")}
    block = _block(model, "codes", 1)
    original = block.forward
    explaining = threading.get_ident()
    ran = []

    def with_a_concurrent_forward(*args, **kwargs):
        # In the middle of the explanation's forward, another thread runs the whole model.
        def plain():
            with torch.no_grad():
                ran.append(model(**other)["logit"].shape[0])

        if threading.get_ident() == explaining:
            thread = threading.Thread(target=plain)
            thread.start()
            thread.join(timeout=60)
        return original(*args, **kwargs)

    monkeypatch.setattr(block, "forward", with_a_concurrent_forward)
    for method, value in expected.items():
        _same(METHODS[method](model).attribute(**batch), value)
    assert ran == [len(dataset.items) - 2] * 2
