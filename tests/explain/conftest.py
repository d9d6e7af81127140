"""One Ray runtime for every Ray test of the session (starting one takes seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime on two CPUs; yields its address (for subprocesses and the CLI)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
