"""Screenshots of the HTML report for docs/, taken in headless Chromium, and a check that the
report's controls work in a real browser.

    python docs/screenshots.py [--chromium chromium] [--out docs/]

Runs the demo (``python -m ehrlens.app.demo``, the quick size, seed 0: a ``Transformer``
trained on 1,500 synthetic patients with planted codes, explained with rollout, flow and
Chefer, its faithfulness and planted-code recovery measured), so the pictures show exactly
the report ``make demo`` writes, and takes three screenshots of it:

- ``report.png``: the top of the page (model card, legend, controls, faithfulness, cohort);
- ``report_patient.png``: one patient's timelines (the page filtered to that patient, other
  sections hidden);
- ``report_controls.png``: the same page after its own controls were used (Chefer switched
  off, patients sorted by risk, lowest first, and filtered to label 1).

For the last one the page's controls are set by a small script appended to a copy of the page;
the DOM Chromium leaves behind is then checked: the right columns hidden, the right patients
shown in the right order.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ehrlens.app import demo

CONTROLS = """
<script>
(function () {
  var root = document.querySelector('.ehrlens-report');
  function set(selector, value) {
    var el = root.querySelector(selector);
    el.value = value;
    el.dispatchEvent(new Event('change'));
  }
  var box = root.querySelector("input[data-toggle-method='chefer']");
  box.checked = false;
  box.dispatchEvent(new Event('change'));
  set('#sort-by', 'risk-asc');
  set('#filter-label', '1');
})();
</script>
"""


ONE_PATIENT = """
<style>.ehrlens-report section:not(.patient){{display:none}}</style>
<script>
(function () {{
  var find = document.querySelector('#filter-text');
  find.value = '{pid}';
  find.dispatchEvent(new Event('input'));
}})();
</script>
"""


def chromium_command(chromium: str, profile: str) -> list[str]:
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
    ]  # fmt: skip


def screenshot(chromium: str, page: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        command = chromium_command(chromium, profile)
        command += [
            f"--window-size={width},{height}", "--virtual-time-budget=5000",
            f"--screenshot={png}", page.as_uri(),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)


def dump_dom(chromium: str, page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        command = [
            *chromium_command(chromium, profile), "--virtual-time-budget=5000", "--dump-dom",
            page.as_uri(),
        ]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        code = demo.main(["--out", str(Path(work) / "demo"), "--seed", str(args.seed), "-q"])
        if code != 0:
            return code
        text = (Path(work) / "demo" / demo.REPORT).read_text(encoding="utf-8")
        patients = page_patients(text)
        page = Path(work) / "report.html"
        page.write_text(text, encoding="utf-8")
        screenshot(args.chromium, page, args.out / "report.png", 1400, 1500)
        anchor = Path(work) / "patient.html"  # the header and the first patient only
        anchor.write_text(
            text.replace("</body>", ONE_PATIENT.format(pid=patients[0][0]) + "</body>"),
            encoding="utf-8",
        )
        screenshot(args.chromium, anchor, args.out / "report_patient.png", 1400, 1100)
        toggled = Path(work) / "controls.html"
        toggled.write_text(text.replace("</body>", CONTROLS + "</body>"), encoding="utf-8")
        screenshot(args.chromium, toggled, args.out / "report_controls.png", 1400, 1500)
        check_controls(dump_dom(args.chromium, toggled), patients)
    print(f"wrote {', '.join(str(args.out / n) for n in ('report.png', 'report_patient.png'))}")
    print(f"wrote {args.out / 'report_controls.png'}; controls checked in the browser's DOM")
    return 0


def page_patients(text: str) -> list[tuple[str, float, str]]:
    """``(patient id, risk, label)`` of each patient section, in page order."""
    found = re.findall(
        r"<section id='p-[^']+' class='patient' data-pid='([^']+)' data-risk='([^']+)' "
        r"data-label='([^']*)'>",
        text,
    )
    return [(pid, float(risk), label) for pid, risk, label in found]


def check_controls(dom: str, patients: list[tuple[str, float, str]]) -> None:
    """After the appended script: Chefer hidden everywhere, only label-1 patients shown, in
    ascending risk; the count says how many."""
    sections = re.findall(r"<section id=\"p-([^\"]+)\" class=\"patient( hidden)?\"", dom)
    assert sections, "no patient sections in the dumped DOM"
    shown = [pid for pid, hidden in sections if not hidden]
    expected = [pid for pid, _, label in sorted(patients, key=lambda p: p[1]) if label == "1"]
    assert shown == expected, (shown, expected)
    chefer = re.findall(r"<[^>]*data-method=\"chefer\"[^>]*>", dom)
    visible = [c for c in chefer if "hidden" not in c]
    assert chefer and not visible, visible[:3]
    rollout = re.findall(r"class=\"method( hidden)?\" data-method=\"rollout\"", dom)
    assert rollout and not any(rollout), "rollout columns must stay visible"
    count = re.search(r"<span id=\"shown-count\">(\d+)</span>", dom)
    assert count and int(count.group(1)) == len(expected), count


if __name__ == "__main__":
    raise SystemExit(main())
