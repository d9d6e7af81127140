"""One patient's section: prediction, a timeline per method with every code shaded on the
method's shared colour scale, and the top codes. Used by the HTML report and the notebook view.

Each piece is one function (section -> method column -> feature row -> visit cell -> code
chip), so a different kind of score (e.g. one score per visit) changes only the piece that
draws it.

Example:
    >>> scales = method_scales(frame, ["rollout"])
    >>> text = patient_section("P000123", frame[frame["patient_id"] == "P000123"], scales)
    >>> "P000123" in text
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .colours import ColourScale
from .top import SUMMED_NOTE, top_codes_of

#: Columns of the attribution table that may date a visit, first match wins.
TIME_COLUMNS = ("event_time", "time")


@dataclass(frozen=True)
class Prediction:
    """What the model said about one patient.

    ``probability`` is that of the *explained* class (the class the scores are about; for
    regression the predicted value), ``class_index`` its index when known, ``label`` the
    patient's label when known. ``predicted_class`` / ``predicted_probability`` are the class
    the model predicts (its most probable one) and that class's probability;
    ``explained_class`` names the explained class; ``mode`` is the label's output schema
    (``"regression"``: ``probability`` is a value). The two pairs differ whenever the
    explained class is not the predicted one (``--target``, or a binary model's positive
    class for a patient it predicts negative), and every surface labels each for what it is.

    Example:
        >>> Prediction(0.39, class_index=1, predicted_class="low", predicted_probability=0.61,
        ...            explained_class="high").explained_probability
        0.39
    """

    probability: float
    label: Any = None
    class_index: int | None = None
    predicted_class: str | None = None
    predicted_probability: float | None = None
    explained_class: str | None = None
    mode: str | None = None

    @property
    def explained_probability(self) -> float:
        """The probability of the explained class (the same as ``probability``)."""
        return self.probability


def esc(value: Any) -> str:
    """Text escaped for HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def describe(code: str, descriptions: Mapping[str, str] | None) -> str:
    """``"code — description"`` when the code has a description, else the code."""
    if descriptions and descriptions.get(code):
        return f"{code} — {descriptions[code]}"
    return str(code)


def label_text(label: Any, class_names: Sequence[str] | None = None) -> str:
    """A label for display: integral floats as ints, class names when known."""
    if label is None:
        return "unknown"
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        name = class_names[label]
        return str(label) if name == str(label) else f"{name} ({label})"
    return str(label)


def prediction_pills(
    prediction: Prediction | None, class_names: Sequence[str] | None = None
) -> str:
    """The prediction, the explained class and the label as pills (empty without a
    prediction): ``predicted low, probability 0.608``, ``explained high, probability 0.392``,
    ``label low``. A prediction that does not say which class it predicts shows only the
    probability of the explained class, never calling it predicted."""
    if prediction is None:
        return ""
    if prediction.mode == "regression":
        value = f"predicted value {prediction.probability:.4g}"
        label = f"label {label_text(prediction.label)}"
        return f"<span class='pill' data-pill='predicted'>{esc(value)}</span>" + (
            f"<span class='pill' data-pill='label'>{esc(label)}</span>"
        )
    pills = []
    explained = prediction.explained_class
    if explained is None and prediction.class_index is not None:
        index = prediction.class_index
        in_names = class_names is not None and 0 <= index < len(class_names)
        explained = str(class_names[index]) if class_names and in_names else str(index)
    if prediction.predicted_class is not None:
        predicted = f"predicted {prediction.predicted_class}"
        if prediction.predicted_probability is not None:
            predicted += f", probability {prediction.predicted_probability:.3f}"
        pills.append(("predicted", predicted))
    if explained is not None:
        pills.append(
            ("explained", f"explained {explained}, probability {prediction.probability:.3f}")
        )
    elif prediction.predicted_class is None:
        pills.append(("explained", f"probability {prediction.probability:.3f}"))
    pills.append(("label", f"label {label_text(prediction.label, class_names)}"))
    return "".join(
        f"<span class='pill' data-pill='{kind}'>{esc(text)}</span>" for kind, text in pills
    )


def visit_labels(rows: Any) -> dict[int, str]:
    """``{visit: label}`` for one patient's rows: the visit's earliest time when the table has
    a time column (``event_time`` of the attribution table; dates as ``YYYY-MM-DD``, numbers
    as ``t=3.5``), else ``v0``, ``v1``...

    Example:
        >>> rows = pd.DataFrame({"visit": [0, 0, 1], "event_time": pd.to_datetime(
        ...     ["2023-01-04", "2023-01-05", "2023-02-11"])})
        >>> visit_labels(rows)
        {0: '2023-01-04', 1: '2023-02-11'}
        >>> visit_labels(rows.drop(columns="event_time"))
        {0: 'v0', 1: 'v1'}
    """
    visits = sorted({int(v) for v in rows["visit"].dropna()})
    labels = {v: f"v{v}" for v in visits}
    column = next((c for c in TIME_COLUMNS if c in rows.columns), None)
    if column is None:
        return labels
    timed = rows[rows["visit"].notna() & rows[column].notna()]
    for visit, times in timed.groupby("visit", sort=True)[column]:
        labels[int(visit)] = _time_text(times.min())
    return labels


def _time_text(value: Any) -> str:
    if hasattr(value, "strftime"):  # datetime / pandas Timestamp
        has_clock = any(getattr(value, part, 0) for part in ("hour", "minute", "second"))
        return value.strftime("%Y-%m-%d %H:%M" if has_clock else "%Y-%m-%d")
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return f"t={float(value):g}"
    return str(value)


def value_parts(value: Any) -> tuple[str, str, str]:
    """``(attribute, text after the code, hover text)`` of a measured value: empty for a code
    without one (``None`` or NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "", "", ""
    shown = f"{float(value):g}"
    return (
        f" data-value='{esc(shown)}'",
        f"<span class='val'> = {esc(shown)}</span>",
        f" = {shown}",
    )


def own_style(own: ColourScale | None, score: float) -> str:
    """The ``data-own-style`` attribute: the style on the patient's own scale (empty
    without one)."""
    return "" if own is None else f" data-own-style='{own.style(score)}'"


def patient_scales(rows: Any, scales: Mapping[str, ColourScale]) -> dict[str, ColourScale]:
    """``{method: ColourScale}`` of one patient: each method's scale set to the patient's
    own largest ``|score|`` (signed as the shared scale), so a method whose scores are small
    for this patient still shows its pattern."""
    out = {}
    for method, shared in scales.items():
        scores = rows.loc[rows["method"] == method, "score"].abs()
        largest = float(scores.max()) if len(scores) else 0.0
        out[method] = ColourScale(method, scale=largest, signed=shared.signed)
    return out


def code_chip(
    code: str,
    score: float,
    scale: ColourScale,
    descriptions: Mapping[str, str] | None,
    value: Any = None,
    own: ColourScale | None = None,
) -> str:
    """One code shaded by its score, with its measured value when it has one
    (``LOINC//2160-0 = 1.25``); its description is printed under it; the exact score shows
    on hover. ``own``: the patient's own scale, the style the per-patient toggle shows."""
    description = (descriptions or {}).get(code)
    desc = f"<span class='desc'>{esc(description)}</span>" if description else ""
    attribute, text, hover = value_parts(value)
    return (
        f"<span class='code' data-code='{esc(code)}' data-score='{score:.6g}'{attribute}"
        f"{own_style(own, score)} "
        f"title='{esc(describe(code, descriptions) + hover)}: score {score:.6g}' "
        f"style='{scale.style(score)}'><span class='cname'>{esc(code)}</span>{text}{desc}</span>"
    )


def visit_level(rows: Any) -> bool:
    """Whether ``rows`` (one method's rows of one visit) hold a visit-level score: the
    ``level`` column says ``"visit"`` (the visit's score repeated on each of its codes)."""
    return (
        rows is not None
        and "level" in rows
        and len(rows) > 0
        and bool((rows["level"] == "visit").all())
    )


def plain_chip(code: str, descriptions: Mapping[str, str] | None, value: Any = None) -> str:
    """A code without a score of its own (its visit is scored), unshaded; with its measured
    value when it has one."""
    description = (descriptions or {}).get(code)
    desc = f"<span class='desc'>{esc(description)}</span>" if description else ""
    attribute, text, hover = value_parts(value)
    return (
        f"<span class='code' data-code='{esc(code)}'{attribute} "
        f"title='{esc(describe(code, descriptions) + hover)}: scored with its visit'>"
        f"<span class='cname'>{esc(code)}</span>{text}{desc}</span>"
    )


def visit_cell(
    visit: int | None,
    rows: Any,
    scale: ColourScale,
    descriptions: Mapping[str, str] | None,
    label: str | None = None,
    own: ColourScale | None = None,
) -> str:
    """One visit of one feature (or a flat feature's only cell): its codes in position order.

    A visit-level score (:func:`visit_level`) is shown once, on the visit, above its codes,
    which are left unshaded: the method did not score them apart."""
    chips = ""
    if visit is not None and visit_level(rows):
        ordered = rows.sort_values("position", kind="stable")
        score = float(ordered["score"].iloc[0])
        shown = label if label is not None else f"v{visit}"
        codes = "".join(
            plain_chip(code, descriptions, value)
            for code, value in zip(ordered["code"], _values(ordered), strict=True)
        )
        return (
            f"<div class='visit' data-visit='{visit}' data-level='visit'>"
            f"<div class='vlabel' title='visit {visit}'>{esc(shown)}</div>"
            f"<div class='vscore' data-score='{score:.6g}'{own_style(own, score)} "
            f"title='visit {visit}: score "
            f"{score:.6g}, one score for all its codes' style='{scale.style(score)}'>"
            f"visit {score:.3g}</div>{codes}</div>"
        )
    if rows is not None:
        ordered = rows.sort_values("position", kind="stable")
        chips = "".join(
            code_chip(code, float(score), scale, descriptions, value, own)
            for code, score, value in zip(
                ordered["code"], ordered["score"], _values(ordered), strict=True
            )
        )
    if visit is None:
        return f"<div class='visit flat'>{chips}</div>"
    shown = label if label is not None else f"v{visit}"
    return (
        f"<div class='visit' data-visit='{visit}'>"
        f"<div class='vlabel' title='visit {visit}'>{esc(shown)}</div>{chips}</div>"
    )


def _values(rows: Any) -> list[Any]:
    """The rows' measured values (``value`` column), ``None`` for each when absent."""
    return rows["value"].tolist() if "value" in rows else [None] * len(rows)


def feature_row(
    feature: str,
    rows: Any,
    scale: ColourScale,
    descriptions: Mapping[str, str] | None,
    labels: Mapping[int, str],
    own: ColourScale | None = None,
) -> str:
    """One feature's line of the timeline. A visited feature gets one fixed-width column per
    visit of the patient (empty where it has no code then), so visits line up across features;
    a flat feature is one cell."""
    flat = bool(rows["visit"].isna().all())
    if flat:
        cells = [visit_cell(None, rows, scale, descriptions, own=own)]
    else:
        by_visit = {int(v): r for v, r in rows.groupby("visit", sort=True)}
        cells = [
            visit_cell(v, by_visit.get(v), scale, descriptions, label, own)
            for v, label in labels.items()
        ]
    return (
        f"<div class='feature' data-feature='{esc(feature)}'><div class='fname'>{esc(feature)}"
        f"</div><div class='visits{' flat' if flat else ''}'>{''.join(cells)}</div></div>"
    )


def top_codes_table(rows: Any, descriptions: Mapping[str, str] | None, top_k: int) -> str:
    """The ``top_k`` entries of :func:`~ehrlens.report.top.top_codes_of`: a repeated code's
    scores summed, with ``×n`` (n occurrences); visit-level rows once per visit
    (``visit 2: I21.4, I10``), not once per code of the visit."""
    ranked = top_codes_of(rows, top_k)
    body = "".join(
        f"<tr data-count='{e.count}'><td>{esc(e.feature)}</td><td>"
        f"{esc(describe(e.code, descriptions))}{f' ×{e.count}' if e.count > 1 else ''}</td>"
        f"<td class='num'>{e.score:.4f}</td></tr>"
        for e in ranked
    )
    note = f"<p class='note'>{esc(SUMMED_NOTE)}</p>" if any(e.count > 1 for e in ranked) else ""
    return (
        f"<h3>top {top_k} codes</h3><table><tr><th>feature</th><th>code</th><th>score</th></tr>"
        f"{body}</table>{note}"
    )


def method_column(
    method: str,
    rows: Any,
    scale: ColourScale,
    features: Sequence[str],
    descriptions: Mapping[str, str] | None,
    labels: Mapping[int, str],
    top_k: int,
    own: ColourScale | None = None,
) -> str:
    """One method's timeline and top codes for one patient (``own``: the patient's own
    scale for the per-patient colour toggle)."""
    timeline = "".join(
        feature_row(feature, rows[rows["feature"] == feature], scale, descriptions, labels, own)
        for feature in features
        if (rows["feature"] == feature).any()
    )
    return (
        f"<div class='method' data-method='{esc(method)}'><h3>{esc(method)}</h3>"
        f"<div class='timeline'>{timeline}</div>{top_codes_table(rows, descriptions, top_k)}</div>"
    )


def patient_section(
    pid: str,
    rows: Any,
    scales: Mapping[str, ColourScale],
    prediction: Prediction | None = None,
    *,
    descriptions: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    top_k: int = 10,
) -> str:
    """One patient's ``<section>``: heading, prediction pills and one column per method of
    ``scales`` that has rows for the patient.

    Args:
        pid: the patient id.
        rows: the patient's attribution rows (every method).
        scales: ``{method: ColourScale}``, in display order (shared across patients).
        prediction: shown as pills; ``None`` shows none.
        descriptions: ``{code: description}`` printed under codes.
        class_names: label classes in output order, for the pills.
        top_k: codes in each method's top-codes table.
    """
    features = list(dict.fromkeys(rows["feature"]))
    labels = visit_labels(rows)
    own = patient_scales(rows, scales)
    columns = "".join(
        method_column(
            method,
            rows[rows["method"] == method],
            scale,
            features,
            descriptions,
            labels,
            top_k,
            own[method],
        )
        for method, scale in scales.items()
        if (rows["method"] == method).any()
    )
    risk = "" if prediction is None else f" data-risk='{prediction.probability:.6g}'"
    label = "" if prediction is None else f" data-label='{esc(label_text(prediction.label))}'"
    return (
        f"<section id='p-{esc(pid)}' class='patient' data-pid='{esc(pid)}'{risk}{label}>"
        f"<h2>Patient {esc(pid)}</h2>{prediction_pills(prediction, class_names)}"
        f"<div class='methods'>{columns}</div></section>"
    )
