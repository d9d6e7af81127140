"""The notebook view (ehrlens.report.notebook.Explanation): table, inline HTML, files."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
import torch

from _html_tree import assert_self_contained, chip_code, css_selectors, parse, patient_sections
from ehrlens.core.files import OutputConflictError
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import ATTRIBUTION_COLUMNS, explain_cohort, model_fingerprint
from ehrlens.interpret import AttentionRollout, CheferRelevance
from ehrlens.models import Transformer
from ehrlens.report import Explanation, render_report
from ehrlens.report.predictions import batch_predictions


@pytest.fixture(scope="module")
def setup():
    cohort = generate_cohort(12, layout="nested", seed=4)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    explanation = Explanation.compute(
        model, batch, ["rollout", "chefer"], descriptions={"I10": "Hypertension"}
    )
    return cohort, dataset, model, batch, explanation


def test_scores_are_the_interpreters_own(setup):
    _, _, model, batch, explanation = setup
    with torch.inference_mode():
        rollout = AttentionRollout(model).attribute(**batch)
    chefer = CheferRelevance(model).attribute(**batch)
    assert explanation.methods == ["rollout", "chefer"]
    for key in rollout:
        torch.testing.assert_close(explanation.scores["rollout"][key], rollout[key])
        torch.testing.assert_close(explanation.scores["chefer"][key], chefer[key])
    assert explanation.predictions == batch_predictions(model, batch)
    assert explanation.model_id == model_fingerprint(model)


def test_to_frame_is_the_cohort_table(setup):
    _, dataset, model, _, explanation = setup
    frame = explanation.to_frame()
    assert list(frame.columns) == list(ATTRIBUTION_COLUMNS)
    cohort = explain_cohort(model, dataset, ["rollout", "chefer"], batch_size=64).to_frame()
    key = ["patient_id", "method", "feature", "visit", "position"]
    left = frame.sort_values(key).reset_index(drop=True)
    right = cohort.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left[["patient_id", "feature", "code", "method"]],
                                  right[["patient_id", "feature", "code", "method"]])  # fmt: skip
    assert left["score"].tolist() == pytest.approx(right["score"].tolist(), abs=1e-6)
    assert (left["visit"].fillna(-1).tolist()) == right["visit"].fillna(-1).astype(float).tolist()
    frame.loc[0, "score"] = 99.0  # a copy: the explanation is not changed
    assert explanation.to_frame().loc[0, "score"] != 99.0


def test_inline_view_shows_one_patient_with_scoped_styles(setup):
    _, _, _, batch, explanation = setup
    text = explanation._repr_html_()
    tree = parse(text)
    assert_self_contained(tree)
    (view,) = [n for n in tree.root.children if n.tag == "div"]
    assert "ehrlens-view" in view.classes
    scope = "#" + view.attrs["id"]
    selectors = css_selectors("".join(tree.styles))
    assert selectors and all(s.startswith(scope) for s in selectors)
    for name in ("body", "html", "header", "main", "table", "h2"):
        assert not any(s.split()[0] == name for s in selectors)
    sections = patient_sections(tree)
    first = str(batch["patient_id"][0])
    assert list(sections) == [first]
    # every unit of the patient, once per method, with the frame's score
    frame = explanation.to_frame()
    rows = frame[frame["patient_id"] == first]
    chips = sections[first].find_all("span", "code")
    assert Counter(c.attrs["data-code"] for c in chips) == Counter(rows["code"])
    # a code's own score on its chip; a visit-level score once, on its visit
    own = rows[rows["level"] != "visit"]
    assert Counter(
        (c.attrs["data-code"], c.attrs["data-score"]) for c in chips if "data-score" in c.attrs
    ) == Counter((c, f"{s:.6g}") for c, s in zip(own["code"], own["score"], strict=True))
    visits = rows[rows["level"] == "visit"].drop_duplicates(["method", "feature", "visit"])
    assert Counter(
        d.attrs["data-score"] for d in sections[first].find_all("div", "vscore")
    ) == Counter(f"{s:.6g}" for s in visits["score"])
    assert [s.attrs["data-method"] for s in view.find_all("div", "scale")] == ["rollout", "chefer"]
    assert not [n for n in tree.root.iter() if n.tag == "script"]  # nothing to run
    # two views in one notebook never share a scope
    assert parse(explanation.to_html(0)).root.children[0].attrs["id"] != view.attrs["id"]


def test_view_uses_the_scales_of_the_whole_batch(setup):
    """A patient's colours in the notebook are those of the report of the same patients."""
    _, _, _, batch, explanation = setup
    pid = str(batch["patient_id"][3])
    inline = patient_sections(parse(explanation.to_html(3)))[pid]
    report = patient_sections(
        parse(render_report(explanation.to_frame(), explanation.predictions))
    )[pid]

    def styles(section):
        chips = [(chip_code(c), c.attrs.get("style")) for c in section.find_all("span", "code")]
        visits = [d.attrs["style"] for d in section.find_all("div", "vscore")]
        return chips, visits

    assert styles(inline) == styles(report)
    assert list(patient_sections(parse(explanation.to_html(pid)))) == [pid]  # by id, too


def test_show_displays_inline(setup, monkeypatch):
    _, _, _, _, explanation = setup
    shown = []
    import IPython.display

    import ehrlens.report.notebook as notebook

    monkeypatch.setattr(notebook, "_in_ipython", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    explanation.show(1)
    (html,) = shown
    assert isinstance(html, IPython.display.HTML)
    assert str(explanation.batch["patient_id"][1]) in patient_sections(parse(html.data))


def test_bad_patients_and_scores_are_named(setup):
    _, _, model, batch, explanation = setup
    with pytest.raises(KeyError, match="patient 'nobody' is not in this explanation"):
        explanation.to_html("nobody")
    with pytest.raises(IndexError, match="patient index 12 is out of range for 12 patients"):
        explanation.to_html(12)
    key = next(iter(explanation.scores["rollout"]))
    wrong = {key: torch.zeros(3, 2)}
    with pytest.raises(ValueError, match=rf"scores\['rollout'\]\['{key}'\] is shaped \(3, 2\)"):
        Explanation.from_scores(model, batch, {"rollout": wrong})
    with pytest.raises(ValueError, match="has feature 'nope', not in the batch"):
        Explanation.from_scores(model, batch, {"rollout": {"nope": torch.zeros(1)}})
    with pytest.raises(TypeError, match=r"scores\['rollout'\] must be \{feature: Tensor\}"):
        Explanation.from_scores(model, batch, {"rollout": torch.zeros(1)})
    with pytest.raises(ValueError, match="at least one method"):
        Explanation.from_scores(model, batch, {})


def test_save_writes_by_suffix_and_never_overwrites_silently(setup, tmp_path):
    _, _, _, _, explanation = setup
    frame = explanation.to_frame()
    csv_path = explanation.save(tmp_path / "e.csv")
    back = pd.read_csv(csv_path, dtype={"patient_id": str, "code": str})
    assert back["score"].tolist() == pytest.approx(frame["score"].tolist())
    parquet = explanation.save(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), frame)
    page = explanation.save(tmp_path / "e.html")
    sections = patient_sections(parse(page.read_text(encoding="utf-8")))
    assert list(sections) == explanation.patient_ids
    before = csv_path.read_bytes()
    with pytest.raises(OutputConflictError):
        explanation.save(csv_path)
    assert csv_path.read_bytes() == before
    explanation.save(csv_path, overwrite=True)
    with pytest.raises(ValueError, match=r"save writes \.html, \.csv or \.parquet, not '\.txt'"):
        explanation.save(tmp_path / "e.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "e.html", "e.parquet"]
