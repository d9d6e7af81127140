"""Fixtures of the robustness tests (builders live in ``_robustness_kit`` and ``_cli_kit``)."""

from __future__ import annotations

import pytest
from _cli_kit import TINY_TRAIN, invoke


@pytest.fixture(scope="session")
def cli_cohort(tmp_path_factory):
    """``ehrlens synthetic`` (60 patients) and ``ehrlens train`` on it, as in the issue's
    reproductions: ``root/data`` and ``root/model``. Tests copy what they change."""
    root = tmp_path_factory.mktemp("cli_cohort")
    invoke("synthetic", root / "data", "--patients", 60, "--seed", 0)
    invoke(
        "train", "--data", root / "data" / "samples.jsonl", "--schema",
        root / "data" / "schema.json", "--out", root / "model", "--seed", 0, *TINY_TRAIN,
    )  # fmt: skip
    return root
