"""The README's command-line walkthrough runs as written, in a fresh folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from ehrlens.cli.app import main

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> list[list[str]]:
    """The ``ehrlens`` commands of the README's first ```bash block after the CLI heading."""
    text = README.read_text()
    section = text[text.index("## From a file of patients") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "ehrlens", line
            commands.append(words[1:])
    return commands


def test_walkthrough_names_every_step():
    steps = [c[0] for c in walkthrough()]
    assert steps == ["synthetic", "train", "describe", "explain", "evaluate", "report"]


@pytest.mark.slow
def test_walkthrough_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for command in walkthrough():
        result = runner.invoke(main, command)
        assert result.exit_code == 0, (command, result.output)
    report = (tmp_path / "report.html").read_text()
    assert "Cohort: most influential codes" in report
    assert "<section id='faithfulness'>" in report  # evaluate's table, read by report
    assert (tmp_path / "faithfulness.png").stat().st_size > 1000
    assert len(list((tmp_path / "attributions").glob("part-*.parquet"))) >= 1
