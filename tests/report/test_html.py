"""The self-contained HTML report (ehrlens.report.html), read back with html.parser."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
import torch

from _html_tree import Node, assert_self_contained, chip_code, parse, patient_sections
from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import ATTRIBUTION_COLUMNS, explain_cohort
from ehrlens.models import Transformer
from ehrlens.report import (
    Prediction,
    patient_predictions,
    read_descriptions,
    render_report,
    write_report,
)
from ehrlens.report.top import SUMMED_NOTE


def method_name(method_div: Node) -> str:
    """A method column's name: its first heading."""
    assert method_div.children[0].tag == "h3"
    return method_div.children[0].text()


def timeline_chips(section: Node) -> list[tuple]:
    """``(method, feature, visit or None, code, data-score, title)`` of every shaded code."""
    chips = []
    for method_div in section.find_all("div", "method"):
        method = method_name(method_div)
        assert method_div.attrs["data-method"] == method
        for feature_div in method_div.child("div", "timeline").find_all("div", "feature"):
            feature = feature_div.child("div", "fname").text()
            for visit_div in feature_div.find_all("div", "visit"):
                visit = (
                    int(visit_div.attrs["data-visit"]) if "data-visit" in visit_div.attrs else None
                )
                for chip in visit_div.find_all("span", "code"):
                    assert chip_code(chip) == chip.attrs["data-code"]
                    chips.append(
                        (
                            method,
                            feature,
                            visit,
                            chip.attrs["data-code"],
                            chip.attrs.get("data-score"),  # none on a visit-level code
                            chip.attrs["title"],
                        )
                    )
    return chips


def expected_chips(frame: pd.DataFrame, pid: str, descriptions=None) -> list[tuple]:
    out = []
    for row in frame[frame["patient_id"] == pid].itertuples():
        visit = None if pd.isna(row.visit) else int(row.visit)
        name = row.code
        if descriptions and row.code in descriptions:
            name = f"{row.code} — {descriptions[row.code]}"
        value = getattr(row, "value", None)
        if value is not None and not pd.isna(value):  # a measurement shows its value
            name = f"{name} = {value:g}"
        if getattr(row, "level", None) == "visit":  # the score sits on the visit, once
            out.append(
                (row.method, row.feature, visit, row.code, None, f"{name}: scored with its visit")
            )
            continue
        out.append(
            (
                row.method,
                row.feature,
                visit,
                row.code,
                f"{row.score:.6g}",
                f"{name}: score {row.score:.6g}",
            )
        )
    return out


# ----------------------------------------------------------------------------- hand-built
def _frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS[: len(rows[0])])  # level optional
    frame["visit"] = frame["visit"].astype("float64")  # as Parquet gives it back: NaN for null
    return frame


P1 = [
    ("p1", "dx", 0, 0, "A", 0.5, "rollout", "m"),
    ("p1", "dx", 0, 1, "B", 0.25, "rollout", "m"),
    ("p1", "dx", 1, 0, "A", 0.125, "rollout", "m"),
    ("p1", "demo", None, 0, "0", -0.5, "rollout", "m"),
    ("p1", "demo", None, 1, "1", 0.0, "rollout", "m"),
    ("p1", "dx", 0, 0, "A", 1.0, "chefer", "m"),
    ("p1", "dx", 0, 1, "B", 2.0, "chefer", "m"),
    ("p1", "dx", 1, 0, "A", 0.0, "chefer", "m"),
    ("p1", "demo", None, 0, "0", 0.1, "chefer", "m"),
    ("p1", "demo", None, 1, "1", 0.2, "chefer", "m"),
]
P2 = [
    ("P&<2>", "dx", 0, 0, "x<y>", 0.75, "rollout", "m"),
    ("P&<2>", "dx", 0, 1, "B", 0.0625, "rollout", "m"),
    ("P&<2>", "demo", None, 0, "0", 0.0, "rollout", "m"),
    ("P&<2>", "demo", None, 1, "1", 0.25, "rollout", "m"),
    ("P&<2>", "dx", 0, 0, "x<y>", 0.5, "chefer", "m"),
    ("P&<2>", "dx", 0, 1, "B", 0.5, "chefer", "m"),
    ("P&<2>", "demo", None, 0, "0", 0.0, "chefer", "m"),
    ("P&<2>", "demo", None, 1, "1", 0.0, "chefer", "m"),
]
FRAME = _frame(P1 + P2)
DESCRIPTIONS = {"A": "Hypertension", "x<y>": "odd 'quoted' & <tagged>"}


@pytest.fixture(scope="module")
def hand_report():
    predictions = {"p1": Prediction(0.87654, 1), "P&<2>": Prediction(0.1, None)}
    text = render_report(
        FRAME,
        predictions,
        descriptions=DESCRIPTIONS,
        top_k=3,
        title="T <1>",
        subtitle="model X",
    )
    return text, parse(text)


def test_report_is_one_self_contained_document(hand_report):
    text, tree = hand_report
    assert text.startswith("<!DOCTYPE html>")
    assert_self_contained(tree)
    assert tree.root.find_all("title")[0].text() == "T <1>"
    assert "2 patients · methods: rollout, chefer" in tree.root.find_all("header")[0].text()
    index = tree.root.find_all("section", "index")[0]
    assert [a.attrs["href"] for a in index.find_all("a")] == ["#p-p1", "#p-P&<2>"]


def test_every_code_of_every_patient_has_its_score_on_hover(hand_report):
    _, tree = hand_report
    sections = patient_sections(tree)
    assert list(sections) == ["p1", "P&<2>"]
    for pid, section in sections.items():
        assert section.child("h2").text() == f"Patient {pid}"
        assert Counter(timeline_chips(section)) == Counter(expected_chips(FRAME, pid, DESCRIPTIONS))
    # methods side by side: one column per method, in table order
    methods = sections["p1"].child("div", "methods").children
    assert [method_name(m) for m in methods] == ["rollout", "chefer"]


def test_prediction_label_and_shading(hand_report):
    _, tree = hand_report
    sections = patient_sections(tree)
    pills = [p.text() for p in sections["p1"].find_all("span", "pill")]
    # a bare probability is not called "predicted": it is the explained class's
    assert pills == ["probability 0.877", "label 1"]
    assert [p.text() for p in sections["P&<2>"].find_all("span", "pill")] == [
        "probability 0.100",
        "label unknown",
    ]
    rollout = sections["p1"].find_all("div", "method")[0]
    styles = {
        (c.attrs["data-code"], c.attrs["data-score"]): c.attrs["style"]
        for c in rollout.find_all("span", "code")
    }
    # one scale per method over all reported patients: rollout's largest |score| is 0.75
    # (x<y> of P&<2>), so A 0.5 has strength 2/3: 255 - (255 - c) * 2/3 per channel of red
    # (200, 30, 45) -> (218, 105, 115); B 0.25 strength 1/3 -> (237, 180, 185); the blue
    # (40, 90, 200) at 2/3 -> (112, 145, 218); text turns white above strength 0.6
    assert styles[("A", "0.5")] == "background:#da6973;color:#ffffff"
    assert styles[("B", "0.25")] == "background:#edb4b9;color:#1d2330"
    assert styles[("1", "0")] == "background:#ffffff;color:#1d2330"
    assert styles[("0", "-0.5")] == "background:#7091da;color:#ffffff"
    # visits of a nested feature are labelled; flat features have none
    dx = [f for f in rollout.find_all("div", "feature") if f.child("div", "fname").text() == "dx"]
    assert [v.text() for v in dx[0].find_all("div", "vlabel")] == ["v0", "v1"]


def test_visits_line_up_across_features():
    """Every visited feature shows one column per visit of the patient, empty where it has no
    code, so column i is the same visit in every row."""
    frame = _frame(
        [
            ("p", "dx", 0, 0, "A", 0.5, "rollout", "m"),
            ("p", "dx", 2, 0, "B", 0.25, "rollout", "m"),
            ("p", "px", 1, 0, "P1", 0.125, "rollout", "m"),
            ("p", "px", 2, 0, "P2", 0.125, "rollout", "m"),
            ("p", "px", 2, 1, "P3", 0.0625, "rollout", "m"),
            ("p", "age", None, 0, "0", 0.1, "rollout", "m"),
        ]
    )
    section = patient_sections(parse(render_report(frame)))["p"]
    rows = {f.child("div", "fname").text(): f for f in section.find_all("div", "feature")}
    for feature, expected in {"dx": [["A"], [], ["B"]], "px": [[], ["P1"], ["P2", "P3"]]}.items():
        cells = rows[feature].find_all("div", "visit")
        assert [c.find_all("div", "vlabel")[0].text() for c in cells] == ["v0", "v1", "v2"]
        assert [[chip_code(chip) for chip in c.find_all("span", "code")] for c in cells] == expected
    flat = rows["age"].find_all("div", "visit")
    assert len(flat) == 1 and not flat[0].find_all("div", "vlabel")


def test_top_k_codes_per_patient_and_method(hand_report):
    _, tree = hand_report
    section = patient_sections(tree)["p1"]
    tables = [m.find_all("table")[0] for m in section.find_all("div", "method")]
    assert [m.find_all("h3")[1].text() for m in section.find_all("div", "method")] == [
        "top 3 codes",
        "top 3 codes",
    ]

    def rows(table):
        return [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]

    # summed per (feature, code), saying so: rollout A 0.5 + 0.125 (×2), B 0.25, demo/1 0.0
    assert rows(tables[0]) == [
        ["dx", "A — Hypertension ×2", "0.6250"],
        ["dx", "B", "0.2500"],
        ["demo", "1", "0.0000"],
    ]
    assert rows(tables[1]) == [
        ["dx", "B", "2.0000"],
        ["dx", "A — Hypertension ×2", "1.0000"],
        ["demo", "1", "0.2000"],
    ]
    notes = [m.find_all("p", "note") for m in section.find_all("div", "method")]
    assert [n[0].text() for n in notes] == [SUMMED_NOTE, SUMMED_NOTE]


def test_cohort_section_ranks_codes_by_mean_score_per_patient(hand_report):
    _, tree = hand_report
    (cohort,) = [s for s in tree.root.find_all("section") if s.attrs.get("id") == "cohort"]
    assert cohort.child("h2").text() == "Cohort: most influential codes"
    tables = {m.child("h3").text(): m.child("table") for m in cohort.find_all("div", "method")}
    assert list(tables) == ["rollout", "chefer"]

    def rows(table):
        return [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]

    # rollout: A (0.625 + 0) / 2, x<y> 0.75 / 2, B (0.25 + 0.0625) / 2, demo/1 (0 + 0.25) / 2
    assert rows(tables["rollout"]) == [
        ["dx", "x<y> — odd 'quoted' & <tagged>", "0.3750", "1"],
        ["dx", "A — Hypertension", "0.3125", "1"],
        ["dx", "B", "0.1562", "2"],
    ]
    # chefer: B (2 + 0.5) / 2, A 1 / 2, x<y> 0.5 / 2, demo/1 0.2 / 2
    assert rows(tables["chefer"]) == [
        ["dx", "B", "1.2500", "2"],
        ["dx", "A — Hypertension", "0.5000", "1"],
        ["dx", "x<y> — odd 'quoted' & <tagged>", "0.2500", "1"],
    ]
    first = tables["rollout"].find_all("td")[1]
    assert first.attrs["title"] == "x<y> — odd 'quoted' & <tagged>"


def test_patients_argument_selects_and_orders_sections():
    text = render_report(FRAME, patients=["P&<2>"])
    sections = patient_sections(parse(text))
    assert list(sections) == ["P&<2>"]
    assert sections["P&<2>"].find_all("span", "pill") == []  # no predictions given
    with pytest.raises(ValueError, match=r"patients \['nobody'\] have no attributions"):
        render_report(FRAME, patients=["p1", "nobody"])
    with pytest.raises(ValueError, match="the table is empty"):
        render_report(FRAME.iloc[:0])


def test_write_report_writes_the_rendered_text_atomically(tmp_path):
    path = write_report(tmp_path / "out" / "r.html", FRAME, top_k=2)
    assert path == tmp_path / "out" / "r.html"
    assert path.read_text(encoding="utf-8") == render_report(FRAME, top_k=2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]


def test_read_descriptions(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text('code,description,extra\nA, Hypertension ,x\n"B,1","with, comma",\n')
    assert read_descriptions(path) == {"A": "Hypertension", "B,1": "with, comma"}
    path.write_bytes(b"\xef\xbb\xbfcode,description\nI10,Essential hypertension\n")
    assert read_descriptions(path) == {"I10": "Essential hypertension"}  # spreadsheet BOM
    path.write_text("name,text\nA,b\n")
    with pytest.raises(ValueError, match=r"expected a CSV header 'code,description', got \["):
        read_descriptions(path)
    path.write_text("code,description\nA,a\n ,b\n")
    with pytest.raises(ValueError, match="row 2 has no code"):
        read_descriptions(path)
    path.write_text("")
    with pytest.raises(ValueError, match="got None"):
        read_descriptions(path)


# ----------------------------------------------------------------------------- real output
@pytest.fixture(scope="module")
def explained():
    cohort = generate_cohort(16, layout="nested", seed=8, include_labs=True)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=1, dropout=0.0).eval()
    frame = explain_cohort(model, dataset, ["rollout", "chefer"], batch_size=8).to_frame()
    return cohort, dataset, model, frame


def test_patient_predictions_are_the_models_probabilities(explained):
    cohort, dataset, model, _ = explained
    predictions = patient_predictions(model, dataset, batch_size=5)
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    with torch.inference_mode():
        y_prob = model(**batch)["y_prob"][:, 0]
    assert list(predictions) == [s["patient_id"] for s in cohort.samples]
    for i, sample in enumerate(cohort.samples):
        prediction = predictions[sample["patient_id"]]
        assert prediction.probability == pytest.approx(float(y_prob[i]), abs=1e-6)
        assert prediction.label == sample["label"]
    unlabelled = create_sample_dataset(
        [{k: v for k, v in s.items() if k != "label"} for s in cohort.samples],
        schema=dataset.schema,
    )
    assert all(p.label is None for p in patient_predictions(model, unlabelled).values())


def test_report_of_explained_patients_shows_every_code_with_its_score(explained, tmp_path):
    cohort, dataset, model, frame = explained
    predictions = patient_predictions(model, dataset)
    descriptions = {"I10": "never seen here"}
    chosen = sorted(predictions, key=lambda p: -predictions[p].probability)[:5]
    path = write_report(
        tmp_path / "r.html", frame, predictions, descriptions=descriptions, patients=chosen
    )
    tree = parse(path.read_text(encoding="utf-8"))
    assert_self_contained(tree)
    sections = patient_sections(tree)
    assert list(sections) == chosen
    labels = {s["patient_id"]: s["label"] for s in cohort.samples}
    for pid, section in sections.items():
        pills = [p.text() for p in section.find_all("span", "pill")]
        shown = predictions[pid]
        positive = shown.probability  # binary, no target: the explained class is 1
        predicted = "1" if positive >= 0.5 else "0"
        assert shown.predicted_class == predicted
        assert shown.predicted_probability == pytest.approx(max(positive, 1 - positive))
        assert pills[:2] == [
            f"predicted {predicted}, probability {max(positive, 1 - positive):.3f}",
            f"explained 1, probability {positive:.3f}",
        ]
        assert len(pills) == 3
        assert pills[2] in (f"label {labels[pid]}", f"label {float(labels[pid])}")  # 0/1
        chips = timeline_chips(section)
        assert Counter(chips) == Counter(expected_chips(frame, pid, descriptions))
        n_rows = int((frame["patient_id"] == pid).sum())
        assert len(chips) == n_rows
        assert {c[0] for c in chips} == {"rollout", "chefer"}
        assert {c[1] for c in chips} == {"diagnoses", "procedures", "drugs", "labs"} & set(
            frame.loc[frame["patient_id"] == pid, "feature"]
        )
