"""Explanations as a result object: a table with :meth:`Explanation.to_frame`, an inline view
in a notebook (``_repr_html_``, :meth:`Explanation.show`) and files with
:meth:`Explanation.save`.

The object wraps what interpreters return (``{feature: Tensor}`` per method) with the batch
and schema that say what each score belongs to; interpreters keep returning plain dicts. The
notebook view draws one patient as the report does (shared colour scale per method, legend,
descriptions under codes), with every CSS rule scoped under the view's own element id, so
nothing else in the notebook is restyled.

Example:
    >>> explanation = Explanation.compute(model, batch, ["rollout", "chefer"])
    >>> explanation                   # in a notebook: the first patient, inline
    >>> explanation.show("P000123")   # another patient
    >>> explanation.to_frame()        # one row per (patient, method, input unit)
    >>> explanation.save("explanation.html")
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.files import atomic_write, check_overwrite
from ..data.dataset import FittedSchema
from ..explain.run import MethodSpec, build_methods
from ..explain.table import method_columns
from ..models.directory import model_fingerprint
from .colours import ColourScale, method_scales
from .header import class_names, explained_class
from .html import render_report
from .patient import Prediction, esc, patient_section
from .predictions import batch_predictions
from .style import stylesheet

_VIEW_IDS = itertools.count(1)


@dataclass
class Explanation:
    """One batch of patients explained by one or several methods.

    Attributes:
        scores: ``{method: {feature: Tensor}}``, each tensor shaped like ``batch[feature]``
            (``[batch, seq]``, ``[batch, visits, codes]``, ...), as interpreters return them.
        batch: the explained batch (``patient_id`` and each feature's values).
        schema: the model's fitted schema, which decodes codes (``model.schema``).
        model_id: written in the table's ``model_id`` column.
        predictions: ``{patient_id: Prediction}`` shown with each patient, or None.
        descriptions: ``{code: description}`` printed under codes, or None.
        card: the model card, for class names, or None.
        target: the class index explained (``None``: the interpreters' default).

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)       # {feature: Tensor}
        >>> explanation = Explanation.from_scores(model, batch, {"rollout": scores})
        >>> explanation.to_frame().head()
    """

    scores: Mapping[str, Mapping[str, Tensor]]
    batch: Mapping[str, Any]
    schema: FittedSchema
    model_id: str = ""
    predictions: Mapping[str, Prediction] | None = None
    descriptions: Mapping[str, str] | None = None
    card: Mapping[str, Any] | None = None
    target: int | None = None
    _frame: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.scores:
            raise ValueError("an Explanation needs the scores of at least one method")
        for method, per_feature in self.scores.items():
            if not isinstance(per_feature, Mapping):
                raise TypeError(
                    f"scores[{method!r}] must be {{feature: Tensor}} as an interpreter returns "
                    f"it, got {type(per_feature).__name__}"
                )
            for key, tensor in per_feature.items():
                if key not in self.batch:
                    raise ValueError(f"scores[{method!r}] has feature {key!r}, not in the batch")
                expected = tuple(self.batch[key].shape)
                if tuple(tensor.shape) != expected:
                    raise ValueError(
                        f"scores[{method!r}][{key!r}] is shaped {tuple(tensor.shape)}, expected "
                        f"the shape of batch[{key!r}], {expected}"
                    )

    @classmethod
    def compute(
        cls,
        model: Any,
        batch: Mapping[str, Any],
        methods: MethodSpec = ("rollout",),
        *,
        target_class_idx: int | None = None,
        descriptions: Mapping[str, str] | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> Explanation:
        """Explain ``batch`` with each method (by name, ``{name: options}`` or
        ``{name: interpreter}``), with the model's predictions.

        Gradient-free methods run under ``torch.inference_mode()``, as in cohort runs.

        Example:
            >>> Explanation.compute(model, batch, {"rollout": {"head_fusion": "max"}})
        """
        scores = {}
        for name, interpreter in build_methods(model, methods).items():
            if type(interpreter).gradient_free:
                with torch.inference_mode():
                    scores[name] = interpreter.attribute(target_class_idx, **batch)
            else:
                scores[name] = interpreter.attribute(target_class_idx, **batch)
        return cls(
            scores, batch, model.schema, model_fingerprint(model),
            batch_predictions(model, batch, target_class_idx), descriptions, card,
            target_class_idx,
        )  # fmt: skip

    @classmethod
    def from_scores(
        cls,
        model: Any,
        batch: Mapping[str, Any],
        scores: Mapping[str, Mapping[str, Tensor]],
        *,
        target_class_idx: int | None = None,
        descriptions: Mapping[str, str] | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> Explanation:
        """Wrap scores already computed (``{method: interpreter output}``), adding the model's
        predictions and fingerprint.

        Example:
            >>> Explanation.from_scores(model, batch, {"chefer": CheferRelevance(model)(**batch)})
        """
        return cls(
            dict(scores), batch, model.schema, model_fingerprint(model),
            batch_predictions(model, batch, target_class_idx), descriptions, card,
            target_class_idx,
        )  # fmt: skip

    @property
    def methods(self) -> list[str]:
        """Method names, in order."""
        return list(self.scores)

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids of the batch, in order."""
        return [str(p) for p in self.batch["patient_id"]]

    def to_frame(self) -> Any:
        """The long-format table (pandas): one row per patient, method and input unit, the
        columns of :data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`; padding has no row.

        Example:
            >>> explanation.to_frame().groupby("method")["score"].sum()
        """
        if self._frame is None:
            import pandas as pd

            columns = method_columns(self.scores, self.batch, self.schema, self.model_id)
            frame = pd.DataFrame(columns)
            frame["visit"] = frame["visit"].astype("float64")  # null visits as NaN
            self._frame = frame
        return self._frame.copy()

    def _patient_id(self, patient: int | str) -> str:
        ids = self.patient_ids
        if isinstance(patient, str):
            if patient not in ids:
                raise KeyError(f"patient {patient!r} is not in this explanation ({ids[:5]}...)")
            return patient
        if not -len(ids) <= patient < len(ids):
            raise IndexError(f"patient index {patient} is out of range for {len(ids)} patients")
        return ids[patient]

    def to_html(self, patient: int | str = 0) -> str:
        """One patient as an HTML fragment with its own scoped styles (no page-wide rule):
        a legend per method, then the patient's timelines and top codes.

        Args:
            patient: position in the batch, or a patient id.
        """
        pid = self._patient_id(patient)
        frame = self.to_frame()
        rows = frame[frame["patient_id"] == pid]
        scales: dict[str, ColourScale] = method_scales(frame, self.methods)
        view = f"ehrlens-view-{next(_VIEW_IDS)}"
        prediction = None if self.predictions is None else self.predictions.get(pid)
        legend = "".join(scale.legend_html() for scale in scales.values())
        position = self.patient_ids.index(pid) + 1
        what = explained_class(self.card, self.target) if self.card else None
        note = f"patient {position} of {len(self.patient_ids)}; methods {', '.join(self.methods)}"
        if what:
            note += f"; explains {what}"
        section = patient_section(
            pid, rows, scales, prediction, descriptions=self.descriptions,
            class_names=class_names(self.card), top_k=10,
        )  # fmt: skip
        return (
            f"<div id='{view}' class='ehrlens-view'><style>{stylesheet('#' + view)}</style>"
            f"<div class='content'><p class='note'>{esc(note)}. One colour scale per method "
            f"over the {len(self.patient_ids)} patients; <code>.show(i)</code> for another "
            f"patient, <code>.to_frame()</code> for the table.</p>"
            f"<div class='legend'>{legend}</div>{section}</div></div>"
        )

    def _repr_html_(self) -> str:
        """The notebook view: the first patient."""
        return self.to_html(0)

    def show(self, patient: int | str = 0) -> None:
        """Display one patient inline in a notebook (needs IPython, extra ``notebook``).

        Example:
            >>> explanation.show(2)
        """
        try:
            from IPython.display import HTML, display
        except ImportError as error:
            raise ImportError(
                "show() displays in a notebook and needs IPython: pip install "
                "'ehrlens[notebook]'; elsewhere use save('explanation.html')"
            ) from error
        display(HTML(self.to_html(patient)))

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the explanation by the file's suffix: ``.html`` the full report of every
        patient, ``.csv`` or ``.parquet`` the table. Atomic; an existing file is replaced only
        with ``overwrite=True``.

        Raises:
            ValueError: another suffix.
            FileExistsError: the file exists and ``overwrite`` is False.

        Example:
            >>> explanation.save("explanation.parquet")
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".html", ".csv", ".parquet"):
            raise ValueError(f"{path}: save writes .html, .csv or .parquet, not {suffix!r}")
        check_overwrite([path], overwrite)
        if suffix == ".html":
            text = render_report(
                self.to_frame(), self.predictions, descriptions=self.descriptions,
                card=self.card, target=self.target,
            )  # fmt: skip
            with atomic_write(path) as f:
                f.write(text)
        elif suffix == ".csv":
            with atomic_write(path) as f:
                self.to_frame().to_csv(f, index=False)
        else:
            with atomic_write(path, "wb") as f:
                self.to_frame().to_parquet(f, index=False)
        return path

    def __repr__(self) -> str:
        shapes = {m: {k: tuple(t.shape) for k, t in s.items()} for m, s in self.scores.items()}
        return f"Explanation({len(self.patient_ids)} patients, scores {shapes})"
