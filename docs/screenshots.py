"""Screenshots of the HTML report for docs/, taken in headless Chromium, and a check that the
report's controls work in a real browser.

    python docs/screenshots.py [--chromium chromium] [--out docs/]

Builds a synthetic cohort with timed visits, trains a small model, explains its test split
with rollout, Chefer relevance and integrated gradients (signed), evaluates faithfulness,
writes the report and takes three screenshots:

- ``report.png``: the top of the page (model card, legend, controls, faithfulness, cohort);
- ``report_patient.png``: one patient's timelines (the page filtered to that patient, other
  sections hidden);
- ``report_controls.png``: the same page after its own controls were used (Chefer switched
  off, patients sorted by risk, lowest first, and filtered to label 1).

For the last one the page's controls are set by a small script appended to a copy of the page;
the DOM Chromium leaves behind is then checked: the right columns hidden, the right patients
shown in the right order. The synthetic visit times are days since the first visit, so visits
are labelled ``t=<days>``; event tables with dates give dates.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from ehrlens.app.workflow import train_model
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader
from ehrlens.explain import explain_cohort
from ehrlens.interpret import make_interpreter
from ehrlens.metrics import Evaluator
from ehrlens.models.directory import model_fingerprint
from ehrlens.report import patient_predictions, render_report

METHODS = ("rollout", "chefer", "integrated_gradients")

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


def build(n_patients: int, epochs: int, lr: float, model_name: str, seed: int):
    start = time.perf_counter()
    cohort = generate_cohort(n_patients, layout="stagenet", seed=seed)
    schema = {"input_schema": cohort.input_schema, "output_schema": cohort.output_schema}
    torch.manual_seed(seed)
    hparams: dict = {"embedding_dim": 32, "heads": 2}
    if model_name == "stagenet":
        hparams.update(chunk_size=16, levels=2)
    else:
        hparams["num_layers"] = 2
    model, card = train_model(
        cohort.samples,
        schema,
        model=model_name,
        hparams=hparams,
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
    print(f"trained: test AUROC {card['test_metrics']['roc_auc']:.3f} "
          f"({time.perf_counter() - start:.0f}s)")  # fmt: skip
    card.update(model_class=type(model).__name__, model_id=model_fingerprint(model))
    card["data"]["path"] = "synthetic cohort (stagenet layout)"
    card["output_schema"] = cohort.output_schema
    test_ids = set(card["data"]["split"]["patient_ids"]["test"])
    samples = [s for s in cohort.samples if s["patient_id"] in test_ids]
    dataset = create_sample_dataset(samples, schema=model.schema)
    frame = explain_cohort(model, dataset, list(METHODS), batch_size=32).to_frame()
    times = {  # the data's visit times: days since the patient's first visit
        (s["patient_id"], visit): float(t)
        for s in samples
        for visit, t in enumerate(s["diagnoses"][0])
    }
    frame["event_time"] = [
        times.get((p, int(v))) if v == v else None
        for p, v in zip(frame["patient_id"], frame["visit"], strict=True)
    ]
    print(f"explained {len(samples)} test patients ({time.perf_counter() - start:.0f}s)")
    evaluator = Evaluator(model, n_bootstrap=200, seed=seed, ground_truth=cohort.ground_truth)
    evaluation = [
        evaluator.evaluate(get_dataloader(dataset, 32), make_interpreter(m, model), m).to_dict()
        for m in METHODS
    ]
    print(f"evaluated faithfulness ({time.perf_counter() - start:.0f}s)")
    return cohort, model, card, dataset, frame, evaluation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--model", default="transformer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=None,
        help="keep what the page is made of in this pickle and reuse it when it exists "
        "(restyled screenshots without training again)",
    )  # fmt: skip
    args = parser.parse_args()

    if args.cache is not None and args.cache.exists():
        with args.cache.open("rb") as f:
            cohort, card, frame, evaluation, predictions = pickle.load(f)
    else:
        cohort, model, card, dataset, frame, evaluation = build(
            args.patients, args.epochs, args.lr, args.model, args.seed
        )
        predictions = patient_predictions(model, dataset)
        if args.cache is not None:
            with args.cache.open("wb") as f:
                pickle.dump((cohort, card, frame, evaluation, predictions), f)
    chosen = sorted(predictions, key=lambda p: -predictions[p].probability)[:12]
    descriptions = {}
    for (_, code), weight in cohort.signal_weights.items():
        descriptions[code] = f"planted risk factor ({weight:+.2f})"
    for (_, signal), (_, distractor) in cohort.distractors.items():
        descriptions[distractor] = f"distractor of {signal}"
    text = render_report(
        frame, predictions, descriptions=descriptions, top_k=5, patients=chosen, card=card,
        evaluation=evaluation, title="ehrlens report: synthetic cohort",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        page = Path(work) / "report.html"
        page.write_text(text, encoding="utf-8")
        screenshot(args.chromium, page, args.out / "report.png", 1400, 1500)
        anchor = Path(work) / "patient.html"  # the header and the first patient only
        anchor.write_text(
            text.replace("</body>", ONE_PATIENT.format(pid=chosen[0]) + "</body>"),
            encoding="utf-8",
        )
        screenshot(args.chromium, anchor, args.out / "report_patient.png", 1400, 1100)
        toggled = Path(work) / "controls.html"
        toggled.write_text(text.replace("</body>", CONTROLS + "</body>"), encoding="utf-8")
        screenshot(args.chromium, toggled, args.out / "report_controls.png", 1400, 1500)
        check_controls(dump_dom(args.chromium, toggled), chosen, predictions)
    print(f"wrote {', '.join(str(args.out / n) for n in ('report.png', 'report_patient.png'))}")
    print(f"wrote {args.out / 'report_controls.png'}; controls checked in the browser's DOM")
    return 0


def check_controls(dom: str, chosen: list[str], predictions) -> None:
    """After the appended script: Chefer hidden everywhere, only label-1 patients shown, in
    ascending risk; the count says how many."""
    sections = re.findall(r"<section id=\"p-([^\"]+)\" class=\"patient( hidden)?\"", dom)
    assert sections, "no patient sections in the dumped DOM"
    shown = [pid for pid, hidden in sections if not hidden]
    expected = sorted(
        (p for p in chosen if predictions[p].label in (1, 1.0)),
        key=lambda p: predictions[p].probability,
    )
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
