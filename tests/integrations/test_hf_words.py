"""token_scores_to_words: word pieces summed into words, spans that slice the original text."""

from __future__ import annotations

import copy

import pytest
import torch

from ehrlens.integrations.huggingface import HuggingFaceEncoder, WordScore, token_scores_to_words
from ehrlens.interpret import AttentionRollout

TEXT = "Electroencephalography was normal."


def test_word_pieces_are_summed_and_spans_slice_the_text(tokenizer):
    encoding = tokenizer([TEXT], return_tensors="pt")
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])
    # hand-checked tokenisation: one word in five pieces, then three one-piece words
    assert pieces == [
        "[CLS]",
        "electro",
        "##ence",
        "##pha",
        "##log",
        "##raphy",
        "was",
        "normal",
        ".",
        "[SEP]",
    ]
    scores = torch.tensor([[100.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]])
    words = token_scores_to_words(scores, encoding, TEXT)
    assert words == [
        WordScore("Electroencephalography", 0, 22, 31.0),
        WordScore("was", 23, 26, 32.0),
        WordScore("normal", 27, 33, 64.0),
        WordScore(".", 33, 34, 128.0),
    ]
    for word in words:  # the original text, case kept
        assert TEXT[word.start : word.end] == word.word


def test_one_sample_of_a_padded_batch(tokenizer):
    texts = ["Fever.", "Tachycardia, no fever"]
    encoding = tokenizer(texts, padding=True, return_tensors="pt")
    scores = torch.arange(encoding["input_ids"].numel(), dtype=torch.float32).reshape(2, -1)
    first = token_scores_to_words(scores, encoding, texts[0], index=0)
    assert [(w.word, w.score) for w in first] == [("Fever", 1.0), (".", 2.0)]
    second = token_scores_to_words(scores[1], encoding, texts[1], index=1)
    width = scores.shape[1]
    # [CLS] ta ##chy ##card ##ia , no fever [SEP]
    assert [(w.word, w.start, w.end) for w in second] == [
        ("Tachycardia", 0, 11),
        (",", 11, 12),
        ("no", 13, 15),
        ("fever", 16, 21),
    ]
    assert second[0].score == sum(width + i for i in range(1, 5))
    assert second[3].score == width + 7


def test_text_pairs_keep_their_sequence(tokenizer):
    encoding = tokenizer(["BP high"], ["Hypertension"], return_tensors="pt")
    scores = torch.tensor([0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0])
    words = token_scores_to_words(scores, encoding, ("BP high", "Hypertension"))
    assert words == [
        WordScore("BP", 0, 2, 1.0, 0),
        WordScore("high", 3, 7, 2.0, 0),
        WordScore("Hypertension", 0, 12, 7.0, 1),
    ]
    with pytest.raises(ValueError, match=r"pair of texts; pass text=\(text, text_pair\)"):
        token_scores_to_words(scores, encoding, "BP high")


def test_misuse_is_refused(tokenizer):
    encoding = tokenizer([TEXT], return_tensors="pt")
    with pytest.raises(ValueError, match="fast tokenizer"):
        token_scores_to_words(torch.zeros(10), dict(encoding), TEXT)
    message = "scores have 4 tokens but sample 0 of the encoding has 10"
    with pytest.raises(ValueError, match=message):
        token_scores_to_words(torch.zeros(4), encoding, TEXT)


def test_explanation_to_words_end_to_end(classifier, tokenizer):
    encoder = HuggingFaceEncoder(copy.deepcopy(classifier))
    encoding = tokenizer([TEXT], return_tensors="pt", return_offsets_mapping=True)
    with torch.inference_mode():
        scores = AttentionRollout(encoder).attribute(**encoding)["input_ids"]
    words = token_scores_to_words(scores, encoding, TEXT)
    assert [w.word for w in words] == ["Electroencephalography", "was", "normal", "."]
    assert words[0].score == pytest.approx(float(scores[0, 1:6].double().sum()), rel=1e-12)
    assert all(w.score > 0 for w in words)
