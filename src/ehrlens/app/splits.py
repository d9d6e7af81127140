"""The training split, carried by patient id from the model's card.

:func:`~ehrlens.app.workflow.train_model` records which patients went to ``train``, ``val``
and ``test`` (:func:`~ehrlens.app.workflow.split_record`, under
``card["data"]["split"]["patient_ids"]``).
:func:`select_recorded_split` then picks a part of *any* data file by those ids: a file with a
patient added, removed or edited still gives exactly the held-out patients, and a patient the
model never saw is ``"new"``, never ``"test"`` by accident. Cards written before ids were
recorded fall back to redrawing the split from its seed, which is only the training split
when the data file is the training file: otherwise it is an error that explains the leakage.

Example:
    >>> from ehrlens.core.files import file_sha256
    >>> model, card = load_model_dir("model/")
    >>> test = select_recorded_split(dataset, "test", card, file_sha256("patients.jsonl"))
    >>> test.patient_ids == card["data"]["split"]["patient_ids"]["test"]
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data.dataset import SampleDataset
from .workflow import PARTS, select_split

#: What ``--split`` accepts: every patient, one part of the training split, or the patients
#: in none of its parts.
SPLIT_CHOICES = ("all", *PARTS, "new")


def recorded_patients(card: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The card's ``{part: patient ids}``, or None for a card that does not record them.

    Raises:
        ValueError: the record is there but is not one list of ids per part.
    """
    record = card.get("data", {}).get("split", {}).get("patient_ids")
    if record is None:
        return None
    if not isinstance(record, Mapping) or any(
        not isinstance(record.get(name), list) for name in PARTS
    ):
        raise ValueError(
            f"the card's data.split.patient_ids must hold a list of ids for each of {PARTS}"
        )
    return {name: [str(p) for p in record[name]] for name in PARTS}


def select_recorded_split(
    dataset: SampleDataset,
    split: str,
    card: Mapping[str, Any],
    data_sha256: str | None = None,
) -> SampleDataset:
    """The patients of ``dataset`` in one part of the model's training split.

    Args:
        dataset: the patients at hand (any file: selection is by patient id).
        split: ``"all"``, ``"train"``, ``"val"``, ``"test"``, or ``"new"`` (in no part: never
            seen in training, validation or testing; on samples that carry a ``subject_id``,
            as MEDS samples do, a subject of any recorded sample is not new, whatever its
            prediction times).
        card: the model directory's card.
        data_sha256: SHA-256 of the data file, needed only for cards without patient ids:
            their split can be redrawn from its seed only on the training file itself.

    Returns:
        ``dataset`` itself for ``"all"``, else the subset, in ``dataset``'s order.

    Raises:
        ValueError: no patient of ``dataset`` is in that part; or the card records no ids and
            ``data_sha256`` is not the training file's (the redrawn "test" part would hold
            training patients).

    Example:
        >>> select_recorded_split(dataset, "new", card)   # patients the model never saw
        Traceback (most recent call last):
        ...
        ValueError: no patient in the data is new: every one was in the training split
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    if split == "all":
        return dataset
    recorded = recorded_patients(card)
    if recorded is None:
        return _redrawn_split(dataset, split, card, data_sha256)
    if split == "new":
        seen = {p for ids in recorded.values() for p in ids}
        keep = [i for i, p in enumerate(dataset.patient_ids) if str(p) not in seen]
        subjects = sample_subjects(dataset)
        if subjects is not None:  # MEDS: new means a subject the model never saw, at any time
            seen_subjects = {p.split("@", 1)[0] for p in seen}
            keep = [i for i in keep if subjects[i] not in seen_subjects]
    else:
        wanted = set(recorded[split])
        keep = [i for i, p in enumerate(dataset.patient_ids) if str(p) in wanted]
    if not keep:
        if split == "new":
            raise ValueError("no patient in the data is new: every one was in the training split")
        raise ValueError(
            f"none of the {len(recorded[split])} {split!r} patients recorded in the model's card "
            "is in the data"
        )
    return dataset.subset(keep)


def split_selection(
    card: Mapping[str, Any], split: str
) -> tuple[list[str] | None, list[str], str] | None:
    """``(patients to keep or None, patients to exclude, what they are)`` of one part of the
    model's split, by the ids the card records: what a sample source selects
    (:class:`~ehrlens.data.sources.SampleSource`). ``None`` when the card records no ids (an
    older card: see :func:`select_recorded_split`).

    Example:
        >>> keep, exclude, what = split_selection(card, "test")
        >>> len(keep), exclude, what
        (20, [], "the 20 'test' patients recorded in the model's card")
        >>> keep == recorded_patients(card)["test"]
        True
        >>> split_selection(card, "new")[2]
        'the patients new to the model (in no part of its training split)'
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    if split == "all":
        return None, [], "the patients"
    recorded = recorded_patients(card)
    if recorded is None:
        return None
    if split == "new":
        seen = [p for ids in recorded.values() for p in ids]
        return None, seen, "the patients new to the model (in no part of its training split)"
    return (
        recorded[split],
        [],
        f"the {len(recorded[split])} {split!r} patients recorded in the model's card",
    )


def sample_subjects(dataset: SampleDataset) -> list[str] | None:
    """Each sample's ``subject_id`` as text when every sample has one (MEDS: one sample per
    subject and prediction time, ``patient_id`` ``"<subject_id>@<time>"``), else None.

    Example:
        >>> sample_subjects(dataset) is None               # JSON Lines samples: no subjects
        True
    """
    subjects = [item.get("identity", {}).get("subject_id") for item in dataset.items]
    if not subjects or any(s is None for s in subjects):
        return None
    return [str(s) for s in subjects]


def _redrawn_split(
    dataset: SampleDataset, split: str, card: Mapping[str, Any], data_sha256: str | None
) -> SampleDataset:
    """The split of a card that records only a seed: redrawn, on the training file only."""
    data = card.get("data", {})
    if split == "new":
        raise ValueError(
            "the model's card does not list its split's patients (written by an older "
            "ehrlens), so new patients cannot be told apart; retrain to record them"
        )
    trained_on = data.get("sha256")
    seed = data.get("split", {}).get("seed")
    if trained_on is None or seed is None or data_sha256 != trained_on:
        what = (
            "the card records no data SHA-256 or split seed"
            if trained_on is None or seed is None
            else f"the data (SHA-256 {str(data_sha256)[:12]}) is not the training file "
            f"(SHA-256 {trained_on[:12]} in the card)"
        )
        raise ValueError(
            f"--split {split}: {what}, and the card does not list the split's patients "
            f"(written by an older ehrlens). Redrawing the split on other data would put "
            f"training patients into {split!r} and overstate how well the model does on "
            "patients it has not seen. Use --split all, or retrain to record the split's "
            "patient ids."
        )
    return select_split(dataset, split, int(seed))
