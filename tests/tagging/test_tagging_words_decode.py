"""Word segmentation, window planning and decoding: pure functions, table-driven."""

from __future__ import annotations

import numpy as np
import pytest

from nuner_core.tagging.decode import Entity, check_threshold, decode_entities, iob2, runs
from nuner_core.text.windows import owners, plan_windows
from nuner_core.text.words import join_words, segment_words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("  New   York \t\n", ["New", "York"]),
        ("Jean-Luc O'Brien's", ["Jean", "-", "Luc", "O", "'", "Brien", "'", "s"]),
        ("U.S. $5.99", ["U", ".", "S", ".", "$", "5", ".", "99"]),
        ("x_1 snake_case", ["x_1", "snake_case"]),
        ("Cafe\u0301 naïve", ["Cafe\u0301", "naïve"]),  # a combining accent stays in its word
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # Devanagari vowel signs and virama are marks
        ("東京に行く", ["東", "京", "に", "行", "く"]),  # ideographs one by one, as BERT does
        ("a\u200bb\ufeffc", ["a", "b", "c"]),  # zero-width space and BOM separate
        ("😀ok🎉", ["😀", "ok", "🎉"]),
        ("", []),
        (" \t\n\u00a0\u3000", []),
    ],
)
def test_segment_words(text, words):
    spans = segment_words(text)
    assert spans.shape == (len(words), 2)
    assert [text[s:e] for s, e in spans] == words


def test_segment_words_offsets_are_code_points():
    text = "😀 Zürich  ok"
    spans = segment_words(text)
    assert spans.tolist() == [[0, 1], [2, 8], [10, 12]]


def test_join_words():
    text, spans = join_words(["New", "York", "", "!"])
    assert text == "New York  !"
    assert spans.tolist() == [[0, 3], [4, 8], [9, 9], [10, 11]]
    assert join_words([])[0] == "" and join_words([])[1].shape == (0, 2)


@pytest.mark.parametrize(
    ("assigned", "expected"),
    [
        ([], []),
        ([-1, -1], []),
        ([0, 0, -1, 1, 1, 0], [(0, 2, 0), (3, 5, 1), (5, 6, 0)]),
        ([2], [(0, 1, 2)]),
        ([-1, 3, 3, 3], [(1, 4, 3)]),
    ],
)
def test_runs(assigned, expected):
    assert runs(np.array(assigned, dtype=np.int64)) == expected


def test_decode_merges_adjacent_same_label_words_with_mean_score():
    text = "Alice  met Bob in New   York"
    spans = segment_words(text)  # Alice met Bob in New York
    best = np.array([0, 1, 0, 1, 2, 2])
    prob = np.array([0.9, 0.01, 0.7, 0.3, 0.6, 0.8], dtype=np.float32)
    entities = decode_entities(text, spans, best, prob, ["person", "verb", "city"], threshold=0.5)
    assert entities == [
        Entity(0, 5, "Alice", "person", pytest.approx(0.9)),
        Entity(11, 14, "Bob", "person", pytest.approx(0.7)),
        Entity(18, 28, "New   York", "city", pytest.approx(0.7)),  # white space run kept inside, mean of 0.6 and 0.8
    ]


def test_decode_threshold_is_inclusive_and_breaks_runs():
    text = "a b c d"
    spans = segment_words(text)
    best = np.zeros(4, dtype=np.int64)
    prob = np.array([0.5, 0.5, 0.49999, 0.5], dtype=np.float32)
    entities = decode_entities(text, spans, best, prob, ["x"], threshold=0.5)
    assert [(e.start, e.end, e.text) for e in entities] == [(0, 3, "a b"), (6, 7, "d")]
    assert decode_entities(text, spans, best, prob, ["x"], threshold=0.0)[0].text == "a b c d"
    assert decode_entities(text, spans, best, prob, ["x"], threshold=1.0) == []
    assert decode_entities("", np.zeros((0, 2), dtype=np.int64), np.zeros(0, np.int64), np.zeros(0), ["x"], 0.5) == []


def test_different_labels_do_not_merge():
    text = "New York pizza"
    entities = decode_entities(text, segment_words(text), np.array([0, 0, 1]), np.array([0.9, 0.9, 0.9]), ["city", "food"], 0.5)
    assert [(e.text, e.label) for e in entities] == [("New York", "city"), ("pizza", "food")]


@pytest.mark.parametrize(("value", "ok"), [(0.0, True), (1.0, True), (0.05, True), (-0.01, False), (1.5, False)])
def test_check_threshold(value, ok):
    if ok:
        assert check_threshold(value) == value
    else:
        with pytest.raises(ValueError, match="threshold"):
            check_threshold(value)


def test_iob2_merges_runs():
    assert iob2(np.array([0, 0, -1, 1, 0, 0]), ["City", "Dish"]) == ["B-City", "I-City", "O", "B-Dish", "B-City", "I-City"]
    assert iob2(np.zeros(0, dtype=np.int64), ["City"]) == []


@pytest.mark.parametrize(
    ("n", "size", "stride", "expected"),
    [
        (0, 10, 5, [(0, 0)]),
        (5, 10, 5, [(0, 5)]),
        (10, 10, 5, [(0, 10)]),
        (20, 10, 5, [(0, 10), (5, 15), (10, 20)]),
        (21, 10, 0, [(0, 10), (10, 20), (20, 21)]),  # no shared context: the windows just follow each other
        (11, 10, 3, [(0, 10), (7, 11)]),
    ],
)
def test_plan_windows_of_single_token_words(n, size, stride, expected):
    windows = plan_windows([1] * n, size, stride)
    assert windows == expected
    covered = np.zeros(n, dtype=bool)
    for s, e in windows:
        assert e - s <= size
        covered[s:e] = True
    assert covered.all()


@pytest.mark.parametrize(("size", "stride"), [(10, 10), (10, -1), (0, 0)])
def test_plan_windows_rejects_bad_settings(size, stride):
    with pytest.raises(ValueError):
        plan_windows([1] * 30, size, stride)


def test_owners_take_the_most_context_and_the_text_edges_cut_nothing():
    windows = [(0, 10), (5, 15), (10, 20)]
    owner = owners([1] * 20, windows)
    # word 7: window 0 gives 2 words of context on its cut (right) side, window 1 also 2 -> the earlier;
    # word 8: window 0 gives 1, window 1 gives min(3, 6) = 3; word 13: window 1 gives 1, window 2 gives 3.
    assert [owner[i] for i in (0, 4, 7, 8, 12, 13, 19)] == [0, 0, 0, 1, 1, 2, 2]
    assert owners([1] * 5, [(0, 5)]) == [0] * 5
    # word 3 of [(0, 6), (2, 8)]: 2 words to window 0's cut end; in window 1, 1 to its cut start and the text's end beyond
    assert owners([1] * 8, [(0, 6), (2, 8)])[3] == 0


def _split_cost(lengths, batches, pass_tokens):
    return sum(pass_tokens + len(b) * max(lengths[j] for j in b) for b in batches)


def _cheapest_split(widths, batch_tokens, pass_tokens):
    """Brute force over every split of the sorted widths into runs within the budget."""
    if not widths:
        return 0
    return min(pass_tokens + k * widths[k - 1] + _cheapest_split(widths[k:], batch_tokens, pass_tokens)
               for k in range(1, len(widths) + 1) if k == 1 or k * widths[k - 1] <= batch_tokens)  # fmt: skip


def test_length_batches_bound_tokens_and_find_the_cheapest_split():
    import random

    from nuner_core.tagging.plan import length_batches

    lengths = [60, 8, 9, 10, 12, 30, 31, 8, 9, 10, 11, 59, 58, 8]
    batches = length_batches(lengths, batch_tokens=200, pass_tokens=20)
    assert sorted(j for b in batches for j in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[j] for j in b) <= 200 for b in batches)
    assert [[lengths[j] for j in b] for b in batches] == [[8, 8, 8, 9, 9, 10, 10, 11, 12], [30, 31], [58, 59, 60]]
    # a served request's few texts of spread lengths: not one batch padded to the longest, nor one per text
    served = [22, 9, 71, 11, 25, 10]
    assert [[served[j] for j in b] for b in length_batches(served, 8192, 40)] == [[9, 10, 11], [22, 25], [71]]
    rng = random.Random(0)
    for _ in range(40):
        widths = [rng.choice([rng.randint(3, 20), rng.randint(20, 120)]) for _ in range(rng.randint(1, 9))]
        budget, price = rng.choice([120, 300, 8192]), rng.choice([0, 10, 40, 500])
        got = length_batches(widths, budget, price)
        assert all(len(b) == 1 or len(b) * max(widths[j] for j in b) <= budget for b in got)
        assert _split_cost(widths, got, price) == _cheapest_split(sorted(widths), budget, price)
    assert length_batches([], 100) == []
    assert length_batches([300], 100) == [[0]]  # a window longer than the budget still gets its batch
    assert length_batches([300, 5, 400], 100, 0) == [[1], [0], [2]]


def test_the_public_api_lists_what_it_exports():
    import nuner_core.tagging as tagging

    assert sorted(tagging.__all__) == sorted(tagging._MODULE_OF)
    assert all(getattr(tagging, name) is not None for name in tagging.__all__)
