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

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.files import atomic_write
from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, get_dataloader, move_to_device


@dataclass(frozen=True)
class Prediction:
    """One patient's predicted probability of the explained class, and the label if known."""

    probability: float
    label: Any = None


def patient_predictions(
    model: Any, dataset: SampleDataset, batch_size: int = 256
) -> dict[str, Prediction]:
    """``{patient_id: Prediction}``: the positive-class probability (binary), the top class's
    probability (multiclass), the largest label probability (multilabel), or the value
    (regression); the label when the dataset has one.

    Example:
        >>> predictions = patient_predictions(model, test_dataset)
        >>> predictions["P000123"].probability, predictions["P000123"].label
    """
    out: dict[str, Prediction] = {}
    label_key = model.label_key if dataset.has_labels else None
    with eval_mode(model), torch.inference_mode():
        for batch in get_dataloader(dataset, batch_size):
            batch = move_to_device(batch, model.device)
            y_prob = model(**batch)["y_prob"].float().cpu()
            best = y_prob.max(dim=1).values if y_prob.shape[1] > 1 else y_prob[:, 0]
            labels = None if label_key is None else batch[label_key].cpu()
            for i, pid in enumerate(batch["patient_id"]):
                label = None
                if labels is not None:
                    value = labels[i].reshape(-1).tolist()
                    label = value[0] if len(value) == 1 else value
                out[str(pid)] = Prediction(float(best[i]), label)
    return out


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:18px 28px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 18px;
margin:0 0 18px}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:12px 0 6px;color:#34405a}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:3px 8px;text-align:left;
border-bottom:1px solid #eef0f3}th{color:#5a6478;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.methods{display:flex;gap:18px;flex-wrap:wrap}.method{flex:1 1 420px;min-width:360px}
.timeline{overflow-x:auto;padding-bottom:6px}
.feature{display:flex;align-items:flex-start;gap:6px;margin:6px 0}
.visits{display:flex;flex-wrap:wrap;gap:4px 2px;align-items:flex-start}
.fname{width:92px;flex:none;font-size:12px;color:#5a6478;padding-top:3px}
.visit{flex:none;border-left:2px solid #dde1e7;padding:0 3px;width:74px;box-sizing:border-box}
.visit.flat{width:auto;max-width:100%;display:flex;flex-wrap:wrap;gap:2px}
.vlabel{font-size:10px;color:#8a93a6}
.code{display:block;font:11.5px ui-monospace,Menlo,Consolas,monospace;padding:1px 4px;
margin:1px 0;border-radius:3px;white-space:nowrap;border:1px solid #e3e6eb;overflow:hidden;
text-overflow:ellipsis}
.visit.flat .code{display:inline-block}
.pill{display:inline-block;padding:2px 8px;border-radius:10px;background:#eef2f8;
font-size:12.5px;margin-right:6px}
.index a{margin-right:10px;font-size:12.5px}.legend{font-size:12px;color:#5a6478}
"""


def _shade(score: float, scale: float) -> str:
    """Background colour for a score: white at 0, deep red at the patient's largest score
    (blue for negative scores)."""
    if scale <= 0 or score == 0:
        return "#ffffff"
    strength = min(abs(score) / scale, 1.0)
    base = (200, 30, 45) if score > 0 else (40, 90, 200)
    r, g, b = (round(255 - (255 - c) * strength) for c in base)
    return f"#{r:02x}{g:02x}{b:02x}"


def _text_colour(score: float, scale: float) -> str:
    return "#ffffff" if scale > 0 and abs(score) / scale > 0.6 else "#1d2330"


def _describe(code: str, descriptions: Mapping[str, str] | None) -> str:
    if descriptions and code in descriptions:
        return f"{code} — {descriptions[code]}"
    return code


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_report(
    frame: Any,
    predictions: Mapping[str, Prediction] | None = None,
    *,
    descriptions: Mapping[str, str] | None = None,
    top_k: int = 10,
    title: str = "ehrlens explanations",
    subtitle: str = "",
    patients: Sequence[str] | None = None,
) -> str:
    """The report as one HTML string.

    Args:
        frame: long-format attributions (pandas DataFrame with the columns of
            :data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`), one or several methods.
        predictions: ``{patient_id: Prediction}`` shown in each patient's header.
        descriptions: ``{code: description}`` shown next to codes and on hover.
        top_k: codes listed per patient and method, and in the cohort table.
        title / subtitle: page heading.
        patients: which patients get a section, in order (default: all, in table order).

    Example:
        >>> text = render_report(frame, predictions, top_k=5, title="ICU mortality")
    """
    if len(frame) == 0:
        raise ValueError("no attributions to report (the table is empty)")
    methods = list(dict.fromkeys(frame["method"]))
    order = list(dict.fromkeys(frame["patient_id"])) if patients is None else list(patients)
    known = set(frame["patient_id"])
    missing = [p for p in order if p not in known]
    if missing:
        raise ValueError(f"patients {missing[:5]} have no attributions in the table")
    features = list(dict.fromkeys(frame["feature"]))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)} · {len(order)} patients · "
        f"methods: {_esc(', '.join(methods))}</p></header><main>",
        _cohort_section(frame, methods, descriptions, top_k),
        "<section class='index'><h2>Patients</h2>"
        + "".join(f"<a href='#p-{_esc(p)}'>{_esc(p)}</a>" for p in order)
        + "</section>",
    ]
    grouped = dict(tuple(frame.groupby("patient_id", sort=False)))
    for pid in order:
        prediction = None if predictions is None else predictions.get(pid)
        parts.append(
            _patient_section(pid, grouped[pid], prediction, methods, features, descriptions, top_k)
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


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
            f"<tr><td>{_esc(feature)}</td><td title='{_esc(_describe(code, descriptions))}'>"
            f"{_esc(_describe(code, descriptions))}</td><td class='num'>{row['mean']:.4f}</td>"
            f"<td class='num'>{int(row['count'])}</td></tr>"
            for (feature, code), row in ranked.iterrows()
        )
        blocks.append(
            f"<div class='method'><h3>{_esc(method)}</h3><table><tr><th>feature</th>"
            f"<th>code</th><th>mean score per patient</th><th>patients with it</th></tr>"
            f"{rows}</table></div>"
        )
    return (
        "<section id='cohort'><h2>Cohort: most influential codes</h2>"
        f"<p class='legend'>A code's score summed within each patient, averaged over all "
        f"{n_patients} patients (0 for patients without the code).</p>"
        f"<div class='methods'>{''.join(blocks)}</div></section>"
    )


def _patient_section(
    pid: str,
    rows: Any,
    prediction: Prediction | None,
    methods: list[str],
    features: list[str],
    descriptions: Mapping[str, str] | None,
    top_k: int,
) -> str:
    header = f"<h2>Patient {_esc(pid)}</h2>"
    if prediction is not None:
        label = prediction.label
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        label = "unknown" if label is None else label
        header += (
            f"<span class='pill'>predicted risk {prediction.probability:.3f}</span>"
            f"<span class='pill'>label {_esc(label)}</span>"
        )
    columns = []
    for method in methods:
        sub = rows[rows["method"] == method]
        if len(sub) == 0:
            continue
        scale = float(sub["score"].abs().max())
        visits = sorted({int(v) for v in sub["visit"].dropna()})  # the patient's visits
        timeline = "".join(
            _feature_row(feature, sub[sub["feature"] == feature], scale, descriptions, visits)
            for feature in features
            if (sub["feature"] == feature).any()
        )
        totals = sub.groupby(["feature", "code"], sort=False)["score"].sum()
        ranked = totals.sort_values(ascending=False, kind="stable").head(top_k)
        top = "".join(
            f"<tr><td>{_esc(feature)}</td><td>{_esc(_describe(code, descriptions))}</td>"
            f"<td class='num'>{score:.4f}</td></tr>"
            for (feature, code), score in ranked.items()
        )
        columns.append(
            f"<div class='method'><h3>{_esc(method)}</h3><div class='timeline'>{timeline}</div>"
            f"<h3>top {top_k} codes</h3><table><tr><th>feature</th><th>code</th>"
            f"<th>score</th></tr>{top}</table></div>"
        )
    return (
        f"<section id='p-{_esc(pid)}' class='patient'>{header}"
        f"<div class='methods'>{''.join(columns)}</div></section>"
    )


def _feature_row(
    feature: str,
    rows: Any,
    scale: float,
    descriptions: Mapping[str, str] | None,
    visits: Sequence[int],
) -> str:
    """One feature's line of the timeline. A visited feature gets one fixed-width column per
    visit of the patient (empty where it has no code then), so visits line up across features;
    a flat feature is one cell."""
    groups: list[tuple[int | None, Any]]
    if rows["visit"].isna().all():
        groups = [(None, rows)]
    else:
        by_visit = {int(v): r for v, r in rows.groupby("visit", sort=True)}
        groups = [(v, by_visit.get(v)) for v in visits]
    cells = []
    for visit, visit_rows in groups:
        chips = ""
        if visit_rows is not None:
            ordered = visit_rows.sort_values("position")
            chips = "".join(
                f"<span class='code' data-code='{_esc(code)}' data-score='{score:.6g}' "
                f"title='{_esc(_describe(code, descriptions))}: score {score:.6g}' "
                f"style='background:{_shade(score, scale)};color:{_text_colour(score, scale)}'>"
                f"{_esc(code)}</span>"
                for code, score in zip(ordered["code"], ordered["score"], strict=True)
            )
        if visit is None:
            cells.append(f"<div class='visit flat'>{chips}</div>")
        else:
            cells.append(f"<div class='visit'><div class='vlabel'>v{visit}</div>{chips}</div>")
    return (
        f"<div class='feature'><div class='fname'>{_esc(feature)}</div>"
        f"<div class='visits'>{''.join(cells)}</div></div>"
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
