"""A self-contained HTML report of cohort explanations: one file, no network at view time.

The page has a header (the model card: model, data, test AUROC, the class explained), the
legend (one colour scale per method, shared by every patient) with the controls (method
toggles, sorting and filtering of patients; plain inline JavaScript), the faithfulness table
when ``evaluate``'s rows are given, a cohort section (the codes that mattered most across
patients, per method) and one section per patient (:mod:`~ehrlens.report.patient`): the
prediction and label, a timeline of visits with every code shaded by its score and its
description printed under it, and the top codes, with methods side by side. Every CSS rule is
scoped under ``.ehrlens-report``.

Example:
    >>> frame = explain_cohort(model, dataset, ["rollout", "chefer"]).to_frame()
    >>> predictions = patient_predictions(model, dataset)
    >>> write_report("report.html", frame, predictions, descriptions={"I10": "Hypertension"},
    ...              card=card, evaluation=read_evaluation("faithfulness.json"))
    PosixPath('report.html')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.files import atomic_write
from .colours import ColourScale, method_scales
from .header import card_html, class_names, faithfulness_table
from .patient import Prediction, describe, esc, label_text, patient_section
from .predictions import patient_predictions
from .script import SCRIPT
from .style import stylesheet

__all__ = [
    "Prediction",
    "patient_predictions",
    "read_descriptions",
    "render_report",
    "write_report",
]

#: The class of the report's root element; every CSS rule is scoped under it.
ROOT = ".ehrlens-report"


def render_report(
    frame: Any,
    predictions: Mapping[str, Prediction] | None = None,
    *,
    descriptions: Mapping[str, str] | None = None,
    top_k: int = 10,
    title: str = "ehrlens explanations",
    subtitle: str = "",
    patients: Sequence[str] | None = None,
    card: Mapping[str, Any] | None = None,
    target: int | None = None,
    evaluation: Sequence[Mapping[str, Any]] | None = None,
    scale_quantile: float = 1.0,
) -> str:
    """The report as one HTML string (one file: inline CSS and JavaScript, nothing fetched).

    Args:
        frame: long-format attributions (pandas DataFrame with the columns of
            :data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`), one or several methods. An
            ``event_time`` column (when the input had event times) dates the visits.
        predictions: ``{patient_id: Prediction}`` shown in each patient's header.
        descriptions: ``{code: description}`` printed under codes and in the tables.
        top_k: codes listed per patient and method, and in the cohort table.
        title / subtitle: page heading.
        patients: which patients get a section, in order (default: all, in table order).
        card: the model's card (``load_model_dir``): model, data, test AUROC and class names.
        target: the class index the scores explain (``None``: the interpreters' default).
        evaluation: rows of ``ehrlens evaluate --out`` (:func:`read_evaluation`), shown as the
            faithfulness table.
        scale_quantile: quantile of ``|score|`` drawn at full colour, per method over the
            reported patients (1.0: the largest score).

    Raises:
        ValueError: an empty table, a patient without attributions, or non-finite scores.

    Example:
        >>> text = render_report(frame, predictions, top_k=5, title="ICU mortality", card=card)
        >>> text.startswith("<!DOCTYPE html>"), "ICU mortality" in text
        (True, True)
    """
    if len(frame) == 0:
        raise ValueError("no attributions to report (the table is empty)")
    methods = [str(m) for m in dict.fromkeys(frame["method"])]
    explained = list(dict.fromkeys(frame["patient_id"]))
    order = explained if patients is None else list(patients)
    known = set(explained)
    missing = [p for p in order if p not in known]
    if missing:
        raise ValueError(f"patients {missing[:5]} have no attributions in the table")
    shown = frame[frame["patient_id"].isin(set(order))]
    scales = method_scales(shown, methods, scale_quantile)
    names = class_names(card)
    count = (
        f"{len(order)} patients"
        if len(order) == len(explained)
        else f"{len(order)} of {len(explained)} explained patients shown"
    )
    heading = " · ".join(p for p in (subtitle, count, f"methods: {', '.join(methods)}") if p)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{stylesheet(ROOT)}</style></head>",
        "<body style='margin:0'><div class='ehrlens-report'>",
        f"<header class='top'><h1>{esc(title)}</h1><p>{esc(heading)}</p>"
        f"{card_html(card, target)}</header><main class='content'>",
        _view_section(scales, order, predictions, names),
    ]
    if evaluation:
        parts.append(
            "<section id='faithfulness'><h2>Faithfulness</h2><p class='note'>From "
            "<code>ehrlens evaluate</code>: the drop in the explained class's probability when "
            "a method's top codes are removed (comprehensiveness) or are all that is kept "
            "(sufficiency), mean and 95% bootstrap interval over patients.</p>"
            f"{faithfulness_table(evaluation)}</section>"
        )
    parts += [
        _cohort_section(frame, methods, descriptions, top_k),
        "<section class='index' id='index-links'><h2>Patients</h2>"
        + "".join(f"<a href='#p-{esc(p)}' data-pid='{esc(p)}'>{esc(p)}</a>" for p in order)
        + "</section><div id='patients'>",
    ]
    grouped = dict(tuple(shown.groupby("patient_id", sort=False)))
    for pid in order:
        prediction = None if predictions is None else predictions.get(pid)
        parts.append(
            patient_section(
                pid, grouped[pid], scales, prediction, descriptions=descriptions,
                class_names=names, top_k=top_k,
            )
        )  # fmt: skip
    parts.append(f"</div></main></div><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _view_section(
    scales: Mapping[str, ColourScale],
    order: Sequence[str],
    predictions: Mapping[str, Prediction] | None,
    names: Sequence[str] | None,
) -> str:
    """The legend (one colour scale per method) and the controls: method toggles, sorting and
    filtering of patients (they work in the browser, through the inline script)."""
    legend = "".join(scale.legend_html() for scale in scales.values())
    toggles = "".join(
        f"<label data-method='{esc(m)}-toggle'><input type='checkbox' checked "
        f"data-toggle-method='{esc(m)}'> {esc(m)}</label>"
        for m in scales
    )
    labels: list[str] = []
    if predictions:
        labels = sorted(
            {label_text(predictions[p].label) for p in order if p in predictions}, key=str
        )
    label_options = "<option value=''>any</option>" + "".join(
        f"<option value='{esc(v)}'>{esc(label_text_named(v, names))}</option>" for v in labels
    )
    return (
        "<section id='view'><h2>Colour scales</h2><p class='note'>One scale per method, the "
        "same for every patient: white is 0, red positive, blue negative; a signed method's "
        "scale is centred on 0. Colours compare within a method, not across methods. Hover a "
        "code for its exact score. <b>colour per patient</b> scales each patient to its own "
        "largest score instead, so a method's pattern shows even where its scores are small "
        "(colours then no longer compare across patients, and the legend's numbers do not "
        "apply).</p>"
        f"<div class='legend'>{legend}</div>"
        "<div class='controls' id='controls'><span><b>methods</b></span>"
        f"{toggles}<label><input type='checkbox' id='scale-per-patient'> colour per patient"
        "</label><label>sort <select id='sort-by'><option value='report'>report order"
        "</option><option value='risk-desc'>risk, highest first</option>"
        "<option value='risk-asc'>risk, lowest first</option><option value='id'>patient id"
        "</option></select></label><label>find <input type='search' id='filter-text' "
        "placeholder='patient id, code or description'></label><label>label <select "
        f"id='filter-label'>{label_options}</select></label><label>risk ≥ <input "
        "type='number' id='filter-risk' min='0' max='1' step='0.05' style='width:64px'>"
        f"</label><span><span id='shown-count'>{len(order)}</span> of {len(order)} "
        "patients shown</span></div></section>"
    )


def label_text_named(value: str, names: Sequence[str] | None) -> str:
    """A label option's text: the class name too when the card has names."""
    if names is not None and value.isdigit() and int(value) < len(names):
        return label_text(int(value), names)
    return value


def _cohort_section(
    frame: Any, methods: list[str], descriptions: Mapping[str, str] | None, top_k: int
) -> str:
    n_patients = frame["patient_id"].nunique()
    blocks = []
    for method in methods:
        sub = frame[frame["method"] == method]
        if "level" in sub:  # a visit's score repeated on its codes is not a code's score
            visit_level = sub["level"] == "visit"
            if visit_level.all():
                blocks.append(
                    f"<div class='method' data-method='{esc(method)}'><h3>{esc(method)}</h3>"
                    "<p class='note'>Scored per visit (one score for all codes of a visit): "
                    "no ranking of codes.</p></div>"
                )
                continue
            sub = sub[~visit_level]
        per_patient = sub.groupby(["feature", "code", "patient_id"], sort=False)["score"].sum()
        totals = per_patient.groupby(level=[0, 1], sort=False).agg(["sum", "count"])
        totals["mean"] = totals["sum"] / n_patients
        ranked = totals.sort_values(["mean", "count"], ascending=[False, False]).head(top_k)
        rows = "".join(
            f"<tr><td>{esc(feature)}</td><td title='{esc(describe(code, descriptions))}'>"
            f"{esc(describe(code, descriptions))}</td><td class='num'>{row['mean']:.4f}</td>"
            f"<td class='num'>{int(row['count'])}</td></tr>"
            for (feature, code), row in ranked.iterrows()
        )
        blocks.append(
            f"<div class='method' data-method='{esc(method)}'><h3>{esc(method)}</h3><table>"
            f"<tr><th>feature</th><th>code</th><th>mean score per patient</th>"
            f"<th>patients with it</th></tr>{rows}</table></div>"
        )
    return (
        "<section id='cohort'><h2>Cohort: most influential codes</h2>"
        f"<p class='note'>A code's score summed within each patient, averaged over all "
        f"{n_patients} explained patients (0 for patients without the code).</p>"
        f"<div class='methods'>{''.join(blocks)}</div></section>"
    )


def write_report(path: str | os.PathLike, frame: Any, *args: Any, **kwargs: Any) -> Path:
    """Render with :func:`render_report` and write the file atomically; returns the path.

    Example:
        >>> codes = read_descriptions("codes.csv")
        >>> write_report("report.html", frame, predictions, descriptions=codes)
        PosixPath('report.html')
    """
    text = render_report(frame, *args, **kwargs)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(text)
    return path


def read_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """``{code: description}`` from a CSV with a header ``code,description``.

    Raises:
        ValueError: the header lacks ``code`` or ``description``, or a row has no code.

    Example:
        >>> codes = read_descriptions("codes.csv")   # {"I10": "Hypertension", ...}
        >>> isinstance(codes, dict) and all(isinstance(v, str) for v in codes.values())
        True
    """
    import csv

    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:  # spreadsheet exports add a BOM
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"code", "description"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: expected a CSV header 'code,description', got {reader.fieldnames}"
            )
        out = {}
        for number, row in enumerate(reader, start=1):
            code = (row.get("code") or "").strip()
            if not code:
                raise ValueError(f"{path}: row {number} has no code")
            out[code] = (row.get("description") or "").strip()
    return out
