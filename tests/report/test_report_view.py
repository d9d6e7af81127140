"""The report's header, legend, controls and scales, read back from the HTML (no browser)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from _html_tree import assert_self_contained, chip_code, css_selectors, parse, patient_sections
from ehrlens.explain import ATTRIBUTION_COLUMNS
from ehrlens.report import Prediction, read_evaluation, render_report


def _frame(rows, extra=None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS[: len(rows[0])])  # level optional
    frame["visit"] = frame["visit"].astype("float64")
    for name, values in (extra or {}).items():
        frame[name] = values
    return frame


ROWS = [
    ("a", "dx", 0, 0, "I10", 0.5, "rollout", "m"),
    ("a", "dx", 1, 0, "E11", 0.25, "rollout", "m"),
    ("a", "dx", 0, 0, "I10", 0.2, "integrated_gradients", "m"),
    ("a", "dx", 1, 0, "E11", -0.4, "integrated_gradients", "m"),
    ("b", "dx", 0, 0, "I10", 1.0, "rollout", "m"),
    ("b", "dx", 0, 0, "I10", 0.1, "integrated_gradients", "m"),
    ("c", "dx", 0, 0, "E11", 2.0, "rollout", "m"),
    ("c", "dx", 0, 0, "E11", 0.8, "integrated_gradients", "m"),
]
FRAME = _frame(ROWS)
CARD = {
    "model_class": "Transformer",
    "model_id": "3f2a9c01d4e5",
    "output_schema": {"died": "binary"},
    "task": {"label": "died", "mode": "binary", "classes": ["alive", "died"]},
    "data": {"path": "/data/events.parquet", "n_patients": 1000, "n_test": 150},
    "test_metrics": {"roc_auc": 0.8123, "pr_auc": 0.4, "loss": 0.3},
}
EVALUATION = [
    {
        "method": "rollout",
        "n_patients": 3,
        "n_scored": 3,
        "seconds_per_1000": 1.0,
        "comprehensiveness": 0.21,
        "comprehensiveness_low": 0.1,
        "comprehensiveness_high": 0.3,
        "sufficiency": 0.05,
        "sufficiency_low": 0.01,
        "sufficiency_high": 0.09,
        "comprehensiveness@10": 0.1,
    },
    {
        "method": "integrated_gradients",
        "n_patients": 3,
        "n_scored": 2,
        "seconds_per_1000": 9.0,
        "comprehensiveness": 0.4,
        "comprehensiveness_low": 0.35,
        "comprehensiveness_high": 0.45,
        "sufficiency": -0.02,
        "sufficiency_low": -0.05,
        "sufficiency_high": 0.01,
    },
]
PREDICTIONS = {"a": Prediction(0.9, 1), "b": Prediction(0.2, 0), "c": Prediction(0.6, 1.0)}


@pytest.fixture(scope="module")
def page():
    text = render_report(
        FRAME,
        PREDICTIONS,
        descriptions={"I10": "Essential hypertension"},
        patients=["a", "b"],
        card=CARD,
        evaluation=EVALUATION,
        subtitle="ICU",
    )
    return parse(text)


def card_values(card):
    """``{item: value}`` of the header's card (the value follows the item's bold name)."""
    return {d.attrs["data-item"]: "".join(d.text_parts) for d in card.children}


def by_id(tree, ident):
    (node,) = [n for n in tree.root.iter() if n.attrs.get("id") == ident]
    return node


def test_header_count_agrees_with_the_cohort_note(page):
    header = page.root.find_all("header")[0]
    assert header.child("p").text() == (
        "ICU · 2 of 3 explained patients shown · methods: rollout, integrated_gradients"
    )
    note = by_id(page, "cohort").child("p").text()
    assert "averaged over all 3 explained patients" in note
    # all patients shown: the header says so without "of"
    whole = parse(render_report(FRAME)).root.find_all("header")[0].child("p").text()
    assert whole == "3 patients · methods: rollout, integrated_gradients"


def test_header_shows_the_model_card(page):
    card = page.root.find_all("header")[0].child("div", "card")
    assert [d.child("b").text() for d in card.children] == ["model", "data", "test", "explains"]
    assert card_values(card) == {
        "model": "Transformer 3f2a9c01d4e5",
        "data": "events.parquet, 1000 patients, split 150 test",
        "test": "AUROC 0.812, AUPRC 0.400",
        "explains": "died (class 1)",
    }


def test_card_without_class_names_falls_back_to_indices():
    card = {k: v for k, v in CARD.items() if k != "task"}
    tree = parse(render_report(FRAME, card=card, target=0))
    assert card_values(tree.root.find_all("div", "card")[0])["explains"] == "class 0"
    # 0/1 labels: the class names are the indices, said once
    digits = dict(CARD, task={"label": "died", "mode": "binary", "classes": ["0", "1"]})
    tree = parse(render_report(FRAME, PREDICTIONS, card=digits))
    assert card_values(tree.root.find_all("div", "card")[0])["explains"] == "class 1"
    assert [o.text() for o in by_id(tree, "filter-label").find_all("option")] == ["any", "0", "1"]
    no_card = parse(render_report(FRAME))
    assert no_card.root.find_all("div", "card") == []


def test_legend_has_one_shared_scale_per_method(page):
    scales = {s.attrs["data-method"]: s for s in page.root.find_all("div", "scale")}
    assert list(scales) == ["rollout", "integrated_gradients"]
    # over the reported patients a and b only: rollout max 1.0; IG max |-0.4|, signed
    assert scales["rollout"].attrs["data-scale"] == "1"
    assert scales["rollout"].attrs["data-signed"] == "false"
    assert [t.text() for t in scales["rollout"].find_all("span", "ticks")[0].children] == [
        "0",
        "0.5",
        "1",
    ]
    ig = scales["integrated_gradients"]
    assert ig.attrs["data-scale"] == "0.4" and ig.attrs["data-signed"] == "true"
    assert [t.text() for t in ig.find_all("span", "ticks")[0].children] == ["−0.4", "0", "+0.4"]
    bar = ig.find_all("span", "bar")[0].attrs["style"]
    assert bar == "background:linear-gradient(90deg,#285ac8,#ffffff,#c81e2d)"


def test_colours_are_comparable_across_patients(page):
    sections = patient_sections(page)

    def styles(pid, method):
        (column,) = [
            m for m in sections[pid].find_all("div", "method") if m.attrs["data-method"] == method
        ]
        return {c.attrs["data-score"]: c.attrs["style"] for c in column.find_all("span", "code")}

    # rollout scale 1.0 for both patients: b's 1.0 is full red, a's 0.5 is half
    assert styles("b", "rollout")["1"] == "background:#c81e2d;color:#ffffff"
    assert styles("a", "rollout")["0.5"] == "background:#e48e96;color:#1d2330"
    # IG scale 0.4, centred on 0: -0.4 full blue, 0.2 half red, 0.1 a quarter
    assert styles("a", "integrated_gradients")["-0.4"] == "background:#285ac8;color:#ffffff"
    assert styles("a", "integrated_gradients")["0.2"] == "background:#e48e96;color:#1d2330"
    # 255 - (255 - c) / 4 for (200, 30, 45): (241, 199, 202)
    assert styles("b", "integrated_gradients")["0.1"] == "background:#f1c7ca;color:#1d2330"


def test_descriptions_are_printed_not_only_on_hover(page):
    chips = patient_sections(page)["a"].find_all("span", "code")
    i10 = [c for c in chips if c.attrs["data-code"] == "I10"]
    assert i10 and all(c.child("span", "desc").text() == "Essential hypertension" for c in i10)
    e11 = [c for c in chips if c.attrs["data-code"] == "E11"]
    assert e11 and all(c.find_all("span", "desc") == [] and chip_code(c) == "E11" for c in e11)


def test_method_toggles_cover_everything_of_a_method(page):
    boxes = [n for n in page.root.iter() if n.tag == "input" and "data-toggle-method" in n.attrs]
    assert [b.attrs["data-toggle-method"] for b in boxes] == ["rollout", "integrated_gradients"]
    assert all("checked" in b.attrs and b.attrs["type"] == "checkbox" for b in boxes)
    tagged = [n for n in page.root.iter() if "data-method" in n.attrs]
    methods = {"rollout", "integrated_gradients"}
    # legend, faithfulness rows, cohort tables and patient columns all carry data-method
    kinds = {(n.tag, tuple(n.classes)) for n in tagged if n.attrs["data-method"] in methods}
    assert ("div", ("scale",)) in kinds and ("tr", ()) in kinds and ("div", ("method",)) in kinds
    for section in patient_sections(page).values():
        columns = section.find_all("div", "method")
        assert {c.attrs["data-method"] for c in columns} == methods


def test_sort_and_filter_controls_and_patient_attributes(page):
    sort = by_id(page, "sort-by")
    assert [o.attrs["value"] for o in sort.find_all("option")] == [
        "report",
        "risk-desc",
        "risk-asc",
        "id",
    ]
    assert by_id(page, "filter-text").attrs["type"] == "search"
    label = by_id(page, "filter-label")
    # labels of the shown patients a (1) and b (0), named from the card's classes
    assert [(o.attrs["value"], o.text()) for o in label.find_all("option")] == [
        ("", "any"),
        ("0", "alive (0)"),
        ("1", "died (1)"),
    ]
    assert by_id(page, "filter-risk").attrs["type"] == "number"
    assert by_id(page, "shown-count").text() == "2"
    sections = patient_sections(page)
    assert [(s.attrs["data-risk"], s.attrs["data-label"]) for s in sections.values()] == [
        ("0.9", "1"),
        ("0.2", "0"),
    ]
    assert [s.attrs["data-pid"] for s in sections.values()] == ["a", "b"]
    links = by_id(page, "index-links").find_all("a")
    assert [(a.attrs["href"], a.attrs["data-pid"]) for a in links] == [("#p-a", "a"), ("#p-b", "b")]


def test_script_is_inline_and_reads_the_controls(page):
    scripts = [n for n in page.root.iter() if n.tag == "script"]
    assert len(scripts) == 1 and "src" not in scripts[0].attrs
    code = scripts[0].text()
    for ident in ("sort-by", "filter-text", "filter-label", "filter-risk", "shown-count"):
        assert f"#{ident}" in code
    assert "data-toggle-method" in code and "data-method" in code
    assert_self_contained(page)


def test_faithfulness_table_says_which_direction_is_better(page):
    section = by_id(page, "faithfulness")
    table = section.find_all("table")[0]
    heads = [th.text() for th in table.find_all("th")]
    assert heads == [
        "method",
        "comprehensiveness higher is better",
        "sufficiency lower is better",
        "patients scored",
    ]
    rows = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]
    assert rows == [
        ["rollout", "0.210 [0.100, 0.300]", "0.050 [0.010, 0.090]", "3"],
        ["integrated_gradients", "0.400 [0.350, 0.450]", "-0.020 [-0.050, 0.010]", "2"],
    ]
    assert parse(render_report(FRAME)).root.find_all("table", "faithfulness") == []


def test_signal_recovery_columns_when_the_evaluation_has_them():
    rows = [dict(EVALUATION[0], **{"precision@5": 0.6, "signal_auroc": 0.9})]
    tree = parse(render_report(FRAME, evaluation=rows))
    table = tree.root.find_all("table", "faithfulness")[0]
    heads = [th.text() for th in table.find_all("th")]
    assert "precision@k of planted codes higher is better" in heads
    assert "AUROC of planted codes higher is better" in heads
    cells = [td.text() for td in table.find_all("tr")[1].find_all("td")]
    assert cells[3:5] == ["0.600", "0.900"]


def test_visit_dates_label_visits_when_the_table_has_times():
    times = pd.to_datetime(
        ["2023-01-04", "2023-02-11", "2023-01-04", "2023-02-11"]
        + ["2024-05-01 08:30"] * 2
        + ["2020-01-01"] * 2,
        format="ISO8601",
    )
    frame = _frame(ROWS, {"event_time": times})  # the attribution table's column
    sections = patient_sections(parse(render_report(frame)))
    labels = [v.text() for v in sections["a"].find_all("div", "vlabel")]
    assert labels == ["2023-01-04", "2023-02-11"] * 2  # one timeline per method
    assert [v.text() for v in sections["b"].find_all("div", "vlabel")] == ["2024-05-01 08:30"] * 2
    numeric = _frame(ROWS, {"time": [0.0, 3.5, 0.0, 3.5, 1.0, 1.0, 2.0, 2.0]})  # also "time"
    sections = patient_sections(parse(render_report(numeric)))
    assert [v.text() for v in sections["a"].find_all("div", "vlabel")][:2] == ["t=0", "t=3.5"]
    plain = patient_sections(parse(render_report(FRAME)))
    assert [v.text() for v in plain["a"].find_all("div", "vlabel")][:2] == ["v0", "v1"]


def test_stylesheet_is_scoped_and_the_index_wraps():
    tree = parse(render_report(FRAME))
    css = "".join(tree.styles)
    selectors = css_selectors(css)
    assert selectors and all(s.startswith(".ehrlens-report") for s in selectors), [
        s for s in selectors if not s.startswith(".ehrlens-report")
    ]
    rules = dict(
        (sel.strip(), body) for sel, body in (r.split("{", 1) for r in css.split("}") if "{" in r)
    )
    assert "flex-wrap:wrap" in rules[".ehrlens-report .index"]
    (root,) = [n for n in tree.root.iter() if "ehrlens-report" in n.classes]
    assert root.parent.tag == "body"


def test_non_finite_scores_are_refused():
    frame = FRAME.copy()
    frame.loc[1, "score"] = math.nan
    with pytest.raises(ValueError, match="method 'rollout': 1 score"):
        render_report(frame)


def test_read_evaluation_from_json_and_csv(tmp_path):
    path = tmp_path / "faithfulness.json"
    path.write_text(json.dumps({"results": EVALUATION}))
    assert read_evaluation(path) == EVALUATION
    csv_path = tmp_path / "faithfulness.csv"
    columns = list(EVALUATION[0])
    lines = [",".join(columns)] + [
        ",".join(str(row.get(c, "")) for c in columns) for row in EVALUATION
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    back = read_evaluation(csv_path)
    assert [r["method"] for r in back] == ["rollout", "integrated_gradients"]
    assert back[0]["comprehensiveness"] == 0.21 and back[1]["sufficiency_low"] == -0.05
    assert math.isnan(back[1]["comprehensiveness@10"])  # missing in that row
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"faithfulness\.json: not JSON"):
        read_evaluation(path)
    path.write_text(json.dumps({"results": []}))
    with pytest.raises(ValueError, match="expected evaluation rows"):
        read_evaluation(path)
    path.write_text(json.dumps({"results": [{"method": "x"}]}))
    with pytest.raises(ValueError, match="row 1 lacks 'method' or 'comprehensiveness'"):
        read_evaluation(path)
