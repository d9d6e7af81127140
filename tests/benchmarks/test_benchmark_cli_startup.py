"""The start-up benchmark runs in --quick mode and writes its rows (times are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cli_startup.py"


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_cli_startup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "startup.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["command"] for r in report["rows"]] == ["ehrlens --help", "ehrlens --version"]
    for row in report["rows"]:
        assert row["imports_torch"] is False
        assert row["seconds"] > 0
        assert row["vs_bare_python"] == row["seconds"] / report["meta"]["bare_python_seconds"]
    assert "ehrlens --help" in capsys.readouterr().out
