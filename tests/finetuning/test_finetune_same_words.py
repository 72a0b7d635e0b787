"""``nuner tag`` and ``nuner predict`` see the same words: one segmentation (``nuner_core.text.words``)."""

from __future__ import annotations

import numpy as np

from nuner_core.finetuning import predict
from nuner_core.tagging import predicting
from nuner_core.tagging import tagger as zero_shot
from nuner_core.text.words import SEGMENTATION

TEXT = "The state-of-the-art model from the U.S. don't cost 3.5 dollars; write to ann.lee@example.org today."


def _words_of_nuner_tag(monkeypatch) -> list[str]:
    seen: list[np.ndarray] = []
    original = predicting.segment_words  # where both backends split a text into words

    def spy(text: str) -> np.ndarray:
        seen.append(original(text))
        return seen[-1]

    monkeypatch.setattr(predicting, "segment_words", spy)
    tagger = object.__new__(zero_shot.ZeroShotTagger)  # the words only: no model needed
    monkeypatch.setattr(zero_shot.ZeroShotTagger, "_run", lambda self, texts, spans, labels, columns, reduce, progress=None: [
        (np.zeros(len(s), dtype=np.int64), np.zeros(len(s), dtype=np.float32)) for s in spans])  # every word: no entity
    monkeypatch.setattr(zero_shot.ZeroShotTagger, "threshold", 0.5)
    tagger.predict([TEXT], ["thing"])
    (spans,) = seen
    return [TEXT[s:e] for s, e in spans.tolist()]


def _words_of_nuner_predict(monkeypatch) -> list[str]:
    seen: list[list[str]] = []

    def fake_encode_windows(tokenizer, sentences, max_length, stride):
        seen.extend([list(s) for s in sentences])
        return []

    def fake_predict_words(model, windows, lengths, pad_id, batch_size):
        return type("P", (), {"label_ids": [[-1] * n for n in lengths], "scores": [[0.0] * n for n in lengths]})()

    import nuner_core.token_classifier.model as token_classifier

    monkeypatch.setattr(token_classifier, "encode_windows", fake_encode_windows)
    monkeypatch.setattr(token_classifier, "predict_words", fake_predict_words)
    tagger = object.__new__(predict.Tagger)  # the words only: no model needed
    tagger.tokenizer, tagger.model, tagger.labels, tagger.pad_id, tagger.batch_size = None, None, ["O"], 0, 1
    tagger.settings = predict.TaggerSettings(SEGMENTATION, 64, 8)
    assert tagger.tag([TEXT]) == [[]]
    (words,) = seen
    return words


def test_nuner_tag_and_nuner_predict_see_the_same_words(monkeypatch):
    tag_words = _words_of_nuner_tag(monkeypatch)
    predict_words = _words_of_nuner_predict(monkeypatch)
    assert tag_words == predict_words
    for piece in (["state", "-", "of", "-", "the", "-", "art"], ["U", ".", "S", "."], ["don", "'", "t"], ["3", ".", "5"],
                  ["ann", ".", "lee", "@", "example", ".", "org"]):  # fmt: skip
        assert any(tag_words[i : i + len(piece)] == piece for i in range(len(tag_words))), piece

