"""`python -m ehrlens.app.demo` runs end to end (a small cohort, to keep the suite fast)."""

import pytest

from ehrlens.app import demo


@pytest.mark.slow
def test_demo_trains_both_models_and_explains(capsys):
    assert demo.main(["--patients", "300", "--epochs", "1", "--explain", "2"]) == 0
    out = capsys.readouterr().out
    assert "Transformer: test AUROC" in out
    assert "StageAttentionNet: test AUROC" in out
    for method in ("rollout", "flow", "chefer"):
        assert out.count(f"{method:8s} top 5:") == 4, method
