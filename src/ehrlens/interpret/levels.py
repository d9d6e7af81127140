"""Whether a method's scores on a feature are per code or per visit.

An attention method scores attention positions. Where a position holds several input units
(``Transformer`` pools each visit of a ``"nested_sequence"`` into one token; a time step holds
several values), every unit of it gets the position's score: a *visit-level* score, repeated
on each code, which says nothing about which of the visit's codes mattered. Where every unit
is its own position (flat sequences, vectors, or a code-level model such as
``CodeTransformer`` on visits), and for methods that score each unit on its own (gradients to
each unit's embedding, :class:`~ehrlens.interpret.VisitScoreSplit`), scores are *code-level*.

Example:
    >>> from ehrlens.interpret import AttentionRollout, IntegratedGradients
    >>> score_level(AttentionRollout(transformer), "diagnoses")        # nested visits
    'visit'
    >>> score_level(AttentionRollout(code_transformer), "diagnoses")
    'code'
    >>> score_levels(IntegratedGradients(transformer))
    {'diagnoses': 'code', 'procedures': 'code', 'drugs': 'code'}
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from .methods.base import BaseInterpreter

Level = Literal["code", "visit"]
CODE: Level = "code"
VISIT: Level = "visit"
LEVELS: tuple[Level, ...] = (CODE, VISIT)


def score_level(interpreter: BaseInterpreter, key: str, values: Tensor | None = None) -> Level:
    """``"code"`` when ``interpreter``'s scores of feature ``key`` are one per input unit,
    ``"visit"`` when they are one per visit (or step), repeated on each of its units.

    ``values`` (``batch[key]``) is read only for a feature without a fitted processor (its
    rank says whether a position holds several units).
    """
    if type(interpreter).per_unit:
        return CODE
    description = interpreter.description
    if key in description.unit_positions:
        return CODE
    processor = description.processors.get(key)
    if processor is not None:
        rank = processor.input_rank
    else:
        rank = values.dim() if values is not None else 2
    return VISIT if rank >= 3 else CODE


def score_levels(interpreter: BaseInterpreter) -> dict[str, Level]:
    """:func:`score_level` of every feature the model names (``describe(model).feature_keys``).

    Example:
        >>> score_levels(AttentionRollout(model))     # Transformer on nested visits
        {'diagnoses': 'visit', 'procedures': 'visit', 'drugs': 'visit'}
    """
    keys = interpreter.description.feature_keys or ()
    return {key: score_level(interpreter, key) for key in keys}
