"""Map token scores back to the words and character spans of the original text.

Uses the alignment a fast (Rust ``tokenizers``) tokenizer keeps in its ``BatchEncoding``:
``word_ids`` (which word each token belongs to), ``sequence_ids`` (first or second text of a
pair) and ``word_to_chars`` (the word's span in the original text). Needs no import of
``transformers`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class WordScore:
    """One word of the original text and its score (the sum of its tokens' scores).

    Attributes:
        word: ``text[start:end]``, exactly as in the original text (case kept).
        start / end: character span of the word in its text.
        score: sum of the scores of the word's tokens (word pieces).
        sequence: 0 for the text, 1 for the second text of a pair.
    """

    word: str
    start: int
    end: int
    score: float
    sequence: int = 0


def token_scores_to_words(
    scores: Tensor,
    encoding: Any,
    text: str | Sequence[str],
    index: int = 0,
) -> list[WordScore]:
    """Sum token scores into words, with each word's character span in ``text``.

    Special tokens ([CLS], [SEP]) and padding belong to no word and are left out; a word
    split into several pieces (``"electro", "##card", ...``) gets the sum of their scores.
    Words come in text order.

    Args:
        scores: ``[tokens]`` for one sample, or ``[batch, tokens]`` (row ``index`` is used),
            aligned with ``encoding["input_ids"]`` (e.g. ``attribute(...)["input_ids"]``).
        encoding: the ``BatchEncoding`` a *fast* tokenizer returned for the batch.
        text: the sample's original text, or ``(text, text_pair)`` for a pair.
        index: which sample of the batch.

    Returns:
        ``[WordScore(word, start, end, score, sequence), ...]`` with
        ``text[start:end] == word``.

    Example:
        >>> from transformers import AutoModelForSequenceClassification
        >>> from ehrlens.integrations.huggingface import HuggingFaceEncoder
        >>> model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        >>> text = "Patient reports chest pain."
        >>> enc = tokenizer([text], return_tensors="pt")
        >>> scores = AttentionRollout(HuggingFaceEncoder(model)).attribute(**enc)["input_ids"]
        >>> token_scores_to_words(scores, enc, text)[0]
        WordScore(word='Patient', start=0, end=7, score=0.018..., sequence=0)
    """
    if not getattr(encoding, "is_fast", False):
        raise ValueError(
            "token_scores_to_words needs the BatchEncoding of a fast tokenizer (its word and "
            f"character alignment); got {type(encoding).__name__} without it: load the "
            "tokenizer with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    if not isinstance(scores, Tensor) or scores.dim() not in (1, 2):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor [tokens] or [batch, tokens], got {got}")
    row = scores[index] if scores.dim() == 2 else scores
    texts = (text,) if isinstance(text, str) else tuple(text)
    word_ids = encoding.word_ids(index)
    sequence_ids = encoding.sequence_ids(index)
    if len(word_ids) != row.shape[0]:
        raise ValueError(
            f"scores have {row.shape[0]} tokens but sample {index} of the encoding has "
            f"{len(word_ids)}: pass the scores of the same batch"
        )
    values = row.detach().double().cpu().tolist()
    totals: dict[tuple[int, int], float] = {}
    for word, sequence, value in zip(word_ids, sequence_ids, values, strict=True):
        if word is None:
            continue
        totals[(sequence, word)] = totals.get((sequence, word), 0.0) + value
    if any(sequence >= len(texts) for sequence, _ in totals):
        raise ValueError(
            f"the encoding of sample {index} is a pair of texts; pass text=(text, text_pair)"
        )
    words = []
    for (sequence, word), total in totals.items():
        span = encoding.word_to_chars(index, word, sequence_index=sequence)
        words.append(
            WordScore(texts[sequence][span.start : span.end], span.start, span.end, total, sequence)
        )
    return words
