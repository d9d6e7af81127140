"""One Ray runtime for every Ray test of the session (starting one takes seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime on two CPUs; yields its address (for subprocesses and the CLI)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        from ehrlens.explain.ray_engine import LOCAL_WORKER_CONFIG

        # Workers at the test process's priority, not Ray's niceness 15: on a loaded machine
        # niced workers wait behind every busy process and each Ray test crawls.
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _system_config=dict(LOCAL_WORKER_CONFIG),
        )
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
