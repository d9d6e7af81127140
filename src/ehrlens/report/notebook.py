"""Explanations as a result object: a table with :meth:`Explanation.to_frame`, an inline view
in a notebook (``_repr_html_``, :meth:`Explanation.show`; a text table elsewhere), files with
:meth:`Explanation.save` / :meth:`Explanation.load`, and cohort-level code importance with
:meth:`Explanation.aggregate`.

One type for a batch and for a run: the object wraps what interpreters return
(``{feature: Tensor}`` per method) with the batch and schema that say what each score belongs
to, or the rows of an explain run (:meth:`Explanation.from_rows`, :meth:`Explanation.load` of
its folder), which carry each patient's prediction; interpreters keep returning plain dicts. The
notebook view draws one patient as the report does (shared colour scale per method, legend,
descriptions under codes), with every CSS rule scoped under the view's own element id, so
nothing else in the notebook is restyled.

Example:
    >>> explanation = Explanation.compute(model, batch, ["rollout", "chefer"])
    >>> explanation                   # in a notebook: the first patient, inline
    Explanation(8 patients, ...)
    >>> explanation.show("P000123")   # another patient (outside a notebook: prints a note)
    <BLANKLINE>
    ...
    >>> frame = explanation.to_frame()        # one row per (patient, method, input unit)
    >>> explanation.save("explanation.html")
    PosixPath('explanation.html')
    >>> run = Explanation.load("attr/", model_dir="model/")   # an explain run's folder
    >>> importance = run.aggregate()   # cohort-level code importance, with intervals
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.files import atomic_write, check_overwrite
from ..data.dataset import FittedSchema
from ..explain.predictions import PredictionRow, batch_prediction_rows
from ..explain.rows import method_levels
from ..explain.run import MethodSpec, build_methods
from ..explain.table import columns_to_arrow, method_columns
from ..models.directory import CARD, model_fingerprint
from .classes import stored_predictions
from .cohort import code_importance
from .colours import ColourScale, method_scales
from .header import class_names, explained_class
from .html import read_descriptions, render_report
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
        levels: ``{method: {feature: "code" | "visit"}}`` for the ``level`` column.
        prediction_rows: one prediction per patient for the table's prediction columns
            (:data:`~ehrlens.explain.predictions.PredictionRow`).
        items: the batch's dataset items, for the identity columns (``subject_id``,
            ``prediction_time``, ``visit_id``, ``event_time``) where the data has them.
        rows: the attribution rows of a run (pandas) instead of scores
            (:meth:`from_rows`, :meth:`load`).

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)       # {feature: Tensor}
        >>> explanation = Explanation.from_scores(model, batch, {"rollout": scores})
        >>> explanation.to_frame()["method"].unique().tolist()
        ['rollout']
    """

    scores: Mapping[str, Mapping[str, Tensor]]
    batch: Mapping[str, Any]
    schema: FittedSchema
    model_id: str = ""
    predictions: Mapping[str, Prediction] | None = None
    descriptions: Mapping[str, str] | None = None
    card: Mapping[str, Any] | None = None
    target: int | None = None
    levels: Mapping[str, Mapping[str, Any]] | None = None
    prediction_rows: Sequence[PredictionRow] | None = None
    items: Sequence[Mapping[str, Any]] | None = None
    rows: Any = field(default=None, repr=False, compare=False)
    _frame: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rows is not None:
            missing = [c for c in ("patient_id", "method", "code", "score") if c not in self.rows]
            if missing:
                raise ValueError(f"rows lack the attribution column(s) {missing}")
            if len(self.rows) == 0:
                raise ValueError("an Explanation needs at least one row")
            return
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
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> Explanation:
        """Explain ``batch`` with each method (by name, ``{name: options}`` or
        ``{name: interpreter}``), with the model's predictions.

        Gradient-free methods run under ``torch.inference_mode()``, as in cohort runs.

        Example:
            >>> Explanation.compute(model, batch, {"rollout": {"head_fusion": "max"}})
            Explanation(8 patients, scores {'rollout': ...})
        """
        scores = {}
        interpreters = build_methods(model, methods)
        for name, interpreter in interpreters.items():
            if type(interpreter).gradient_free:
                with torch.inference_mode():
                    scores[name] = interpreter.attribute(target_class_idx, **batch)
            else:
                scores[name] = interpreter.attribute(target_class_idx, **batch)
        return cls(
            scores, batch, model.schema, model_fingerprint(model),
            batch_predictions(model, batch, target_class_idx), descriptions, card,
            target_class_idx, method_levels(interpreters, batch, model.schema),
            batch_prediction_rows(model, batch, target_class_idx), items,
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
            Explanation(8 patients, scores {'chefer': ...})
        """
        return cls(
            dict(scores), batch, model.schema, model_fingerprint(model),
            batch_predictions(model, batch, target_class_idx), descriptions, card,
            target_class_idx, None, batch_prediction_rows(model, batch, target_class_idx),
        )  # fmt: skip

    @classmethod
    def from_rows(
        cls,
        rows: Any,
        *,
        descriptions: Mapping[str, str] | None = None,
        card: Mapping[str, Any] | None = None,
        target_class_idx: int | None = None,
    ) -> Explanation:
        """The explanation of a run from its attribution rows (pandas, e.g.
        ``explain_cohort(...).to_frame()``); the predictions shown are those stored with the
        rows, so the model does not run.

        Example:
            >>> Explanation.from_rows(explain_cohort(model, dataset, ["rollout"]).to_frame())
        """
        predictions = stored_predictions(
            rows, None, class_names(card), (card or {}).get("task", {}).get("mode")
        )
        ids = list(dict.fromkeys(str(p) for p in rows["patient_id"]))
        model_ids = list(dict.fromkeys(rows["model_id"])) if "model_id" in rows else [""]
        return cls(
            {}, {"patient_id": ids}, None, str(model_ids[0]), predictions,  # type: ignore[arg-type]
            descriptions, card, target_class_idx, rows=rows.reset_index(drop=True),
        )  # fmt: skip

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model_dir: str | os.PathLike | None = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> Explanation:
        """An explanation from disk: an ``explain`` run's folder (its shards verified, the
        explained class read from its manifest) or a table written by :meth:`save`
        (``.parquet`` / ``.csv``). ``model_dir`` adds the model card (class names) and, unless
        ``descriptions`` are given, the code descriptions it knows: ``codes.csv`` in the
        model directory, else ``metadata/codes.parquet`` of the MEDS data it was trained on.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: a folder that is not a finished explain run, or another file type.

        Example:
            >>> Explanation.load("attr/", model_dir="model/").show(0)
        """
        import pandas as pd

        from ..explain.shards import read_attributions, read_run_manifest

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such folder or file")
        card = _read_card(model_dir) if model_dir is not None else None
        if descriptions is None and model_dir is not None:
            descriptions = _model_descriptions(Path(model_dir), card or {})
        target = None
        if path.is_dir():
            rows = read_attributions(path)
            target = read_run_manifest(path).get("settings", {}).get("target_class_idx")
        elif path.suffix.lower() == ".parquet":
            rows = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            rows = pd.read_csv(path, dtype={"patient_id": str, "code": str})
        else:
            raise ValueError(
                f"{path}: load reads an explain folder, .parquet or .csv, not {path.suffix!r}"
            )
        return cls.from_rows(rows, descriptions=descriptions, card=card, target_class_idx=target)

    @property
    def methods(self) -> list[str]:
        """Method names, in order."""
        if self.rows is not None:
            return [str(m) for m in dict.fromkeys(self.rows["method"])]
        return list(self.scores)

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids of the batch, in order."""
        return [str(p) for p in self.batch["patient_id"]]

    def aggregate(self, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Any:
        """Cohort-level code importance per method: each code's score summed within each
        patient, averaged over the explained patients, with a bootstrap interval over patients
        (:func:`~ehrlens.report.cohort.code_importance`).

        Example:
            >>> explanation.aggregate().query("method == 'rollout'").head(5)
        """
        return code_importance(self.to_frame(), n_boot=n_boot, confidence=confidence, seed=seed)

    def to_frame(self) -> Any:
        """The long-format table (pandas): one row per patient, method and input unit, the
        columns of :data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`; padding has no row.

        Example:
            >>> explanation = Explanation.compute(model, batch, ["rollout", "chefer"])
            >>> sorted(explanation.to_frame().groupby("method")["score"].sum().index)
            ['chefer', 'rollout']
        """
        if self.rows is not None:
            return self.rows.copy()
        if self._frame is None:
            columns = method_columns(
                self.scores, self.batch, self.schema, self.model_id, self.items,
                levels=self.levels, predictions=self.prediction_rows,
            )  # fmt: skip
            # the same conversion as a run's shards, so both give the same dtypes
            self._frame = columns_to_arrow(columns).to_pandas()
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

    def show(self, patient: int | str = 0, top_k: int = 10) -> None:
        """Display one patient: inline in a notebook; elsewhere (a script, a terminal) print
        :meth:`to_text`.

        Example:
            >>> explanation = Explanation.compute(model, batch, ["rollout"])
            >>> explanation.show(2)   # outside a notebook: prints where it can be seen
            <BLANKLINE>
            ...
        """
        if _in_ipython():
            from IPython.display import HTML, display

            display(HTML(self.to_html(patient)))
        else:
            print(self.to_text(patient, top_k))

    def to_text(self, patient: int | str = 0, top_k: int = 10) -> str:
        """One patient as plain text: its prediction, then per method its ``top_k`` units by
        score (feature, visit, code with its description, score).

        Example:
            >>> print(explanation.to_text("P000123", top_k=5))
        """
        pid = self._patient_id(patient)
        frame = self.to_frame()
        rows = frame[frame["patient_id"] == pid]
        lines = [f"patient {pid}"]
        prediction = None if self.predictions is None else self.predictions.get(pid)
        if prediction is not None:
            what = explained_class(self.card, self.target) if self.card else "the class explained"
            lines.append(f"probability of {what}: {prediction.probability:.3f}")
        if "predicted_class" in rows and rows["predicted_class"].notna().any():
            first = rows.iloc[0]
            lines.append(
                f"predicted {first['predicted_class']} ({first['predicted_probability']:.3f}); "
                f"explained {first['explained_class']} ({first['explained_probability']:.3f})"
            )
        for method in self.methods:
            top = rows[rows["method"] == method].nlargest(top_k, "score")
            table = top[["feature", "visit", "code", "score"]].copy()
            table["visit"] = [None if v != v else int(v) for v in table["visit"]]
            if self.descriptions:
                table["description"] = [self.descriptions.get(str(c), "") for c in table["code"]]
            lines += ["", f"{method}: top {len(table)} of {len(rows[rows['method'] == method])}"]
            lines.append(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        return "\n".join(lines)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the explanation by the file's suffix: ``.html`` the full report of every
        patient, ``.csv`` or ``.parquet`` the table. Atomic; an existing file is replaced only
        with ``overwrite=True``.

        Raises:
            ValueError: another suffix.
            FileExistsError: the file exists and ``overwrite`` is False.

        Example:
            >>> explanation = Explanation.compute(model, batch, ["rollout"])
            >>> explanation.save("explanation.parquet")
            PosixPath('explanation.parquet')
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".html", ".csv", ".parquet"):
            raise ValueError(f"{path}: save writes .html, .csv or .parquet, not {suffix!r}")
        check_overwrite([path], overwrite, f"{path} exists; pass overwrite=True to replace it")
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
        if self.rows is not None:
            return (
                f"Explanation({len(self.patient_ids)} patients, {len(self.rows)} rows, methods "
                f"{self.methods})"
            )
        shapes = {m: {k: tuple(t.shape) for k, t in s.items()} for m, s in self.scores.items()}
        return f"Explanation({len(self.patient_ids)} patients, scores {shapes})"


def _in_ipython() -> bool:
    """Whether an IPython shell (a notebook) is running this code."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _read_card(model_dir: str | os.PathLike) -> dict[str, Any]:
    import json

    path = Path(model_dir) / CARD
    if not path.exists():
        raise FileNotFoundError(f"{model_dir}: no {CARD}; is it a model directory?")
    return json.loads(path.read_text())


def _model_descriptions(model_dir: Path, card: Mapping[str, Any]) -> dict[str, str] | None:
    """Code descriptions a model directory knows: its ``codes.csv``, else those of the MEDS
    data in its card (``metadata/codes.parquet``); None when neither is there."""
    if (model_dir / "codes.csv").exists():
        return read_descriptions(model_dir / "codes.csv")
    meds = card.get("meds")
    root = meds.get("root") if isinstance(meds, Mapping) else None
    if root and Path(root).is_dir():
        from ..data.meds import code_descriptions

        return code_descriptions(root) or None
    return None
