"""Texts longer than the encoder's window, on the random (contextual) tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from nuner_core.tagging import ZeroShotTagger, segment_words
from nuner_core.tagging.decode import decode_entities
from nuner_core.text.windows import owners, plan_windows

# Words MiniLM's tokenizer keeps whole: one word, one token, so token and word indices coincide.
WORDS = (
    "the cat sat on a mat and the dog ran to the park with his old red ball while birds sang in tall green "
    "trees near the blue lake under a warm sun all day long then night came and stars rose over quiet hills"
).split()
LABELS = ["animal", "place", "colour"]


def _text(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def tok_check(random_tagger):
    ids = random_tagger.tokenizer(WORDS, add_special_tokens=False)["input_ids"]
    assert all(len(x) == 1 for x in ids), "every test word must be a single token"


def test_a_text_twice_the_window_tags_the_same_as_its_halves(random_dir, tok_check):
    tagger = ZeroShotTagger.from_pretrained(random_dir, max_length=18, stride=0)  # 16 content tokens per window
    first, second = _text(16), _text(16, offset=16)
    whole = f"{first} {second}"  # 32 tokens: with no shared context the windows are exactly the halves
    (p_whole,) = tagger.score_spans([whole], [segment_words(whole)], LABELS)
    assert tagger.stats.long_texts == 1 and tagger.stats.windows == 2
    p_first, p_second = tagger.score_spans([first, second], [segment_words(first), segment_words(second)], LABELS)
    np.testing.assert_allclose(p_whole, np.concatenate([p_first, p_second]), atol=1e-5)

    # and the same entities: the halves' word decisions, decoded over the whole text
    threshold = float(np.median(p_whole.max(axis=1)))  # about half the words labelled
    entities = tagger.predict([whole], LABELS, threshold=threshold, decoding="words")[0]  # word decisions (spans may join across the halves)
    both = np.concatenate([p_first, p_second])
    expected = decode_entities(whole, segment_words(whole), both.argmax(1), both.max(1), LABELS, threshold)
    assert len(entities) >= 3
    assert [(e.start, e.end, e.label) for e in entities] == [(e.start, e.end, e.label) for e in expected]
    for got, want in zip(entities, expected):
        assert got.score == pytest.approx(want.score, abs=1e-5)


def test_each_word_is_scored_from_the_window_with_most_context(random_dir, tok_check):
    tagger = ZeroShotTagger.from_pretrained(random_dir, max_length=18)  # window 16, default stride 8
    n = 40
    text = _text(n)
    spans = segment_words(text)
    (p_long,) = tagger.score_spans([text], [spans], LABELS)
    windows = plan_windows([1] * n, 16, 8)
    assert windows == [(0, 16), (8, 24), (16, 32), (24, 40)]
    owner = owners([1] * n, windows)
    # every window alone, as its own text: the word probabilities it would give
    alone = []
    for s, e in windows:
        sub = text[spans[s, 0] : spans[e - 1, 1]]
        alone.append(tagger.score_spans([sub], [segment_words(sub)], LABELS)[0])
    for w in range(n):
        s, _ = windows[owner[w]]
        np.testing.assert_allclose(p_long[w], alone[owner[w]][w - s], atol=1e-5, err_msg=f"word {w}")
    # the choice matters: word 12 (owned by window 1, 4 tokens from its left edge) reads differently near window 0's edge
    assert owner[12] == 1
    assert np.abs(alone[0][12] - alone[1][12 - 8]).max() > 1e-3


def test_nothing_is_truncated(random_tagger, tok_check):
    n = 10 * random_tagger.window + 7
    text = _text(n)
    before = random_tagger.stats.words_without_token
    (probs,) = random_tagger.score_spans([text], [segment_words(text)], LABELS)
    assert probs.shape == (n, len(LABELS))
    assert (probs > 0).all()  # every word scored, the last ones included
    assert random_tagger.stats.words_without_token == before
    entities = random_tagger.predict([text], LABELS, threshold=0.0)[0]  # threshold 0: every word in some entity
    assert entities[0].start == 0 and entities[-1].end == len(text)
