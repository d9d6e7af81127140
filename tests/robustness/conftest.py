"""Fixtures of the robustness tests (builders live in ``_robustness_kit``)."""
