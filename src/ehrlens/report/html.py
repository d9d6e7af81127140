"""A self-contained HTML report of cohort explanations: one file, no network at view time.

The report has a cohort section (the codes that mattered most across patients, per method) and
one section per patient: the prediction and label, a timeline of visits with every code shaded
by its score (the exact score shows on hover), and the top codes, with methods side by side.

Example:
    >>> frame = explain_cohort(model, dataset, ["rollout", "chefer"]).to_frame()
    >>> predictions = patient_predictions(model, dataset)
    >>> write_report("report.html", frame, predictions, descriptions={"I10": "Hypertension"})
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.files import atomic_write
from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, get_dataloader, move_to_device
from .colours import ColourScale, method_scales
from .header import card_html, class_names, faithfulness_table
from .patient import Prediction, describe, esc, label_text, patient_section
from .script import SCRIPT
from .style import stylesheet

#: The class of the report's root element; every CSS rule is scoped under it.
ROOT = ".ehrlens-report"


def patient_predictions(
    model: Any, dataset: SampleDataset, batch_size: int = 256, target: int | None = None
) -> dict[str, Prediction]:
    """``{patient_id: Prediction}``: the positive-class probability (binary), the top class's
    probability and index (multiclass), the largest label probability (multilabel), or the
    value (regression); the label when the dataset has one.

    ``target`` (multiclass or multilabel): report the probability of that class instead.

    Example:
        >>> predictions = patient_predictions(model, test_dataset)
        >>> predictions["P000123"].probability, predictions["P000123"].label
    """
    out: dict[str, Prediction] = {}
    label_key = model.label_key if dataset.has_labels else None
    with eval_mode(model), torch.inference_mode():
        for batch in get_dataloader(dataset, batch_size):
            batch = move_to_device(batch, model.device)
            y_prob = model(**batch)["y_prob"].float().cpu()  # [batch, outputs]
            classes: list[int | None] = [None] * y_prob.shape[0]
            if y_prob.shape[1] == 1:
                shown = y_prob[:, 0]
            elif target is not None:
                if not 0 <= target < y_prob.shape[1]:
                    raise ValueError(
                        f"target class {target} is out of range for {y_prob.shape[1]} classes"
                    )
                shown = y_prob[:, target]
                classes = [target] * y_prob.shape[0]
            else:
                shown, best = y_prob.max(dim=1)
                if model.mode == "multiclass":
                    classes = [int(c) for c in best]
            labels = None if label_key is None else batch[label_key].cpu()
            for i, pid in enumerate(batch["patient_id"]):
                label = None
                if labels is not None:
                    value = labels[i].reshape(-1).tolist()
                    label = value[0] if len(value) == 1 else value
                out[str(pid)] = Prediction(float(shown[i]), label, classes[i])
    return out


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
            :data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`), one or several methods. A ``time``
            column (when the input had event times) dates the visits.
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
        "code for its exact score.</p>"
        f"<div class='legend'>{legend}</div>"
        "<div class='controls' id='controls'><span><b>methods</b></span>"
        f"{toggles}<label>sort <select id='sort-by'><option value='report'>report order"
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
        return f"{names[int(value)]} ({value})"
    return value


def _cohort_section(
    frame: Any, methods: list[str], descriptions: Mapping[str, str] | None, top_k: int
) -> str:
    n_patients = frame["patient_id"].nunique()
    blocks = []
    for method in methods:
        sub = frame[frame["method"] == method]
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
        >>> write_report("report.html", frame, predictions, descriptions=codes)
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
