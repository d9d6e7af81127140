"""`python -m ehrlens.app.demo` (`make demo`) runs end to end and writes the HTML report (a
small cohort, to keep the suite fast; the default size is timed in benchmarks/RESULTS.md)."""

import subprocess
import sys
from html.parser import HTMLParser

import pytest

from ehrlens.app import demo
from ehrlens.models import StageAttentionNet, Transformer


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.slow
def test_the_entry_point_writes_the_report_and_prints_its_path(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "ehrlens.app.demo", "--patients", "300", "--epochs", "1",
         "--explain", "4", "--out", str(out), "-q"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    report = out / "report.html"
    lines = done.stdout.splitlines()
    assert lines[-1] == f"report: {report.resolve()}"
    for step in ("[1/4] Transformer: generate the cohort", "[2/4] Transformer: explain the 4",
                 "[3/4] Transformer: top codes", "[4/4] write the HTML report"):  # fmt: skip
        assert any(line.startswith(step) for line in lines), step
    assert any("test AUROC" in line and "best achievable" in line for line in lines)
    for method in demo.METHODS:
        assert sum(line.strip().startswith(f"{method} ") for line in lines) == 2, method
    parser = _Text()
    parser.feed(report.read_text())
    text = " ".join(parser.text)
    assert "ehrlens demo" in text and "Transformer test AUROC" in text
    assert text.count("Transformer/P") >= 4  # the four explained patients have sections


def test_an_existing_report_elsewhere_is_kept_without_overwrite(tmp_path, capsys):
    (tmp_path / "report.html").write_text("mine")
    with pytest.raises(SystemExit) as error:
        demo.main(["--out", str(tmp_path), "--patients", "50", "--epochs", "1"])
    assert error.value.code == 3
    assert "report.html exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "report.html").read_text() == "mine"


def test_bad_sizes_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as error:
        demo.main(["--epochs", "0"])
    assert error.value.code == 2
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err


def test_the_sizes():
    assert list(demo.QUICK.models) == ["Transformer"]
    assert demo.QUICK.models["Transformer"][1] is Transformer
    assert [m[1] for m in demo.FULL.models.values()] == [Transformer, StageAttentionNet]
    assert demo.FULL.patients > demo.QUICK.patients and demo.FULL.epochs > demo.QUICK.epochs


@pytest.mark.slow
def test_terminal_top_codes_are_the_reports_and_the_report_is_the_cli_one(tmp_path, capsys):
    from _html_tree import parse, patient_sections

    assert demo.main(["--patients", "300", "--epochs", "1", "--explain", "4", "--out",
                      str(tmp_path), "-q"]) == 0  # fmt: skip
    printed: dict[tuple[str, str], list[tuple[str, str]]] = {}
    patient = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  patient "):
            patient = line.split()[1].rstrip(":")
        elif patient and line.strip().split(" ")[0] in demo.METHODS and " top 5: " in line:
            method, shown = line.strip().split(" ", 1)[0], line.split(" top 5: ", 1)[1]
            entries = [e.rsplit(" ", 1) for e in shown.split(", ")]
            printed[(patient, method)] = [(code.rstrip("*"), score) for code, score in entries]
    assert len(printed) == 2 * len(demo.METHODS)
    tree = parse((tmp_path / "report.html").read_text(encoding="utf-8"))
    sections = patient_sections(tree)
    for (pid, method), entries in printed.items():
        column = next(
            m for m in sections[f"Transformer/{pid}"].find_all("div", "method")
            if m.attrs["data-method"] == method
        )  # fmt: skip
        rows = [[td.text() for td in tr.find_all("td")] for tr in column.find_all("tr")[1:]]
        in_report = []
        for _, code, score in rows[:5]:
            name, _, rest = code.partition(" — ")
            times = rest.rsplit(" ", 1)[-1] if rest.endswith(tuple("0123456789")) else ""
            in_report.append((f"{name} {times}".strip() if times.startswith("×") else name, score))
        assert entries == in_report, (pid, method)
    # the demo's report has the CLI report's header: card, explained class, faithfulness
    items = {d.attrs["data-item"] for d in tree.root.find_all("div", "card")[0].children}
    assert {"model", "data", "test", "explains"} <= items
    table = tree.root.find_all("table", "faithfulness")[0]
    assert [tr.attrs["data-method"] for tr in table.find_all("tr")[1:]] == list(demo.METHODS)
