"""ehrlens.core.locks: one writer per output, across processes, with stale locks taken over."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ehrlens.core.files import OutputConflictError
from ehrlens.core.locks import OutputLockedError, lock_path, output_lock, output_locks

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else "")}


HOLD = """
import sys, time
from pathlib import Path
from ehrlens.core.locks import output_lock
with output_lock(sys.argv[1], command="holder of the test"):
    Path(sys.argv[2]).write_text("locked")
    time.sleep(600)
"""


def _start_holder(target: Path, ready: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), str(ready)], env=_env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the holder did not take the lock within 60 s"
        time.sleep(0.01)
    return process


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)
    process.wait(timeout=30)
    process.stderr.close()


def test_the_lock_file_sits_beside_the_target_and_spellings_share_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    expected = tmp_path.resolve() / ".real.ehrlens-lock"
    for spelling in ("real", "./real/", str(tmp_path / "real"), "link", "x/../real"):
        assert lock_path(spelling) == expected, spelling
    assert lock_path("report.html") == tmp_path.resolve() / ".report.html.ehrlens-lock"
    with pytest.raises(ValueError, match="root of a file system"):
        lock_path("/")


def test_a_held_lock_names_its_holder_and_is_removed_on_release(tmp_path):
    target = tmp_path / "attr"
    with output_lock(target, command="ehrlens explain --out attr") as path:
        assert path == lock_path(target) and not target.exists()
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid()
        assert record["host"] == socket.gethostname()
        assert record["command"] == "ehrlens explain --out attr"
        # a second open of the same lock, even in this process, is refused
        with pytest.raises(OutputLockedError) as error:
            with output_lock(tmp_path / "attr/"):
                pass
    assert not path.exists()
    assert isinstance(error.value, OutputConflictError)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'attr'} is being written by another ehrlens run")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert "ehrlens explain --out attr" in message and "nothing was changed" in message
    with output_lock(target):  # free again
        pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "out"):
            raise RuntimeError("boom")
    assert not lock_path(tmp_path / "out").exists()
    with output_lock(tmp_path / "out"):
        pass


def test_another_process_holding_the_lock_refuses_us(tmp_path):
    target = tmp_path / "model"
    holder = _start_holder(target, tmp_path / "ready")
    try:
        with pytest.raises(OutputLockedError) as error:
            with output_lock(target):
                pass
        assert error.value.holder["pid"] == holder.pid
        assert error.value.holder["command"] == "holder of the test"
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(error.value)
    finally:
        _stop(holder)
    with output_lock(target):  # the holder ended: the lock is free
        pass


def test_a_killed_holders_stale_lock_is_taken_over(tmp_path):
    target = tmp_path / "attr"
    holder = _start_holder(target, tmp_path / "ready")
    _stop(holder, signal.SIGKILL)
    stale = lock_path(target)
    assert json.loads(stale.read_text())["pid"] == holder.pid  # left behind by the dead run
    with output_lock(target) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not stale.exists()


def _contend(target: str, log: str, rounds: int) -> None:
    """Try to take the lock ``rounds`` times; inside it, log enter/leave with a pause."""
    held = 0
    while held < rounds:
        try:
            with output_lock(target):
                with open(log, "a") as f:
                    f.write(f"enter {os.getpid()}\n")
                time.sleep(0.02)
                with open(log, "a") as f:
                    f.write(f"leave {os.getpid()}\n")
                held += 1
        except OutputLockedError:
            time.sleep(0.001)


def test_contending_processes_never_hold_the_lock_together(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_contend, args=(str(tmp_path / "out"), str(log), 5))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    lines = log.read_text().split("\n")[:-1]
    assert len(lines) == 2 * 4 * 5
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # strictly alternating
        assert enter.startswith("enter ") and leave == "leave " + enter.split()[1]
    assert not lock_path(tmp_path / "out").exists()


def test_output_locks_skips_unset_outputs_and_locks_each_once(tmp_path):
    with output_locks(tmp_path / "a.json", None, tmp_path / "./a.json", tmp_path / "b.png"):
        assert lock_path(tmp_path / "a.json").exists() and lock_path(tmp_path / "b.png").exists()
        with pytest.raises(OutputLockedError):
            with output_lock(tmp_path / "b.png"):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
