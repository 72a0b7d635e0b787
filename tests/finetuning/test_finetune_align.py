"""Label alignment: first sub-token of each word labelled, the rest -100; long sentences in overlapping windows."""

from __future__ import annotations

import random

import pytest

from nuner_core.text.windows import owners, plan_windows
from nuner_core.token_classifier.model import IGNORE, EncodeCounts, encode_windows
from nuner_core.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir, pre_split_words=True)


def test_first_sub_token_of_each_word_carries_its_label(tokenizer):
    words = ["Tokenization", "of", "Hyderabadi", "biryani", "\u200b", "works"]
    tags = [1, 0, 2, 3, 0, 4]
    counts = EncodeCounts()
    (window,) = encode_windows(tokenizer, [words], max_length=64, stride=8, tag_ids=[tags], counts=counts)
    pieces = tokenizer.convert_ids_to_tokens(window.input_ids)
    assert pieces[:3] == ["[CLS]", "token", "##ization"] and pieces[-1] == "[SEP]"
    labelled = [(pieces[p], window.labels[p]) for p in range(len(pieces)) if window.labels[p] != IGNORE]
    firsts = [tokenizer.tokenize(w)[0] for w in words if tokenizer.tokenize(w)]
    assert labelled == list(zip(firsts, [1, 0, 2, 3, 4]))  # the zero-width word has no sub-token: not labelled
    assert sum(1 for t in tokenizer.tokenize("Hyderabadi biryani")) > 2  # multi-sub-token words are really tested
    assert window.words == [0, 1, 2, 3, 5]
    assert counts.words_without_subtokens == 1 and counts.windows == 1 and counts.split_sentences == 0


@pytest.mark.parametrize("seed", range(6))
def test_windows_cover_every_word_once_within_budget(seed):
    rng = random.Random(seed)
    counts = [rng.choice([1, 1, 1, 2, 3, 0]) for _ in range(rng.randint(1, 80))]
    budget, stride = rng.choice([(6, 2), (10, 3), (30, 8)])
    windows = plan_windows(counts, budget, stride)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    for (a, b), (c, d) in zip(windows, windows[1:]):
        assert a < c <= b < d  # overlapping or adjacent, always moving on
        assert sum(counts[c:b]) <= stride  # shared context within the stride
    for a, b in windows:
        assert sum(counts[a:b]) <= budget or b - a == 1
    own = owners(counts, windows)
    assert all(windows[w][0] <= i < windows[w][1] for i, w in enumerate(own))


def test_a_word_is_read_where_it_has_most_context():
    counts = [1] * 10
    windows = plan_windows(counts, budget=6, stride=2)
    assert windows == [(0, 6), (4, 10)]
    assert owners(counts, windows) == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # 4 is central in neither: ties go to the first
    assert plan_windows([9, 1, 1], budget=4, stride=1) == [(0, 1), (1, 3)]  # a word longer than a window gets its own


def test_a_long_sentence_is_labelled_once_per_word_across_windows(tokenizer):
    words = [f"word{i}" if i % 7 else "Hyderabadi" for i in range(60)]
    tags = [i % 5 for i in range(60)]
    counts = EncodeCounts()
    windows = encode_windows(tokenizer, [words], max_length=24, stride=6, tag_ids=[tags], counts=counts)
    assert counts.split_sentences == 1 and counts.windows == len(windows) > 3
    seen = []
    for w in windows:
        assert len(w.input_ids) <= 24
        labelled = [p for p, label in enumerate(w.labels) if label != IGNORE]
        assert labelled == w.positions
        seen += [(word, w.labels[p]) for word, p in zip(w.words, w.positions)]
    assert sorted(seen) == list(enumerate(tags))
