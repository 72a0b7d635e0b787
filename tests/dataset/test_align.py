"""Alignment by exact match: all occurrences, word boundaries, nesting, case, non-ASCII offsets."""

import random

import numpy as np
import polars as pl
import pytest

from nuner_core.dataset.align import STATUSES, align, find_occurrences

CASES = [
    # (name, text, entity, case_insensitive_fallback, expected spans, expected status)
    ("once", "Apple makes phones.", "Apple", False, [(0, 5)], "exact"),
    ("every occurrence", "New York, New York.", "New York", False, [(0, 8), (10, 18)], "exact"),
    ("case-sensitive", "apple pie", "Apple", False, [], "absent"),
    ("case fallback", "apple pie", "Apple", True, [(0, 5)], "casefold"),
    ("fallback not used when exact exists", "Apple and apple", "Apple", True, [(0, 5)], "exact"),
    ("not inside a word (start)", "the restart", "start", False, [], "inside_word"),
    ("not inside a word (end)", "artist", "art", False, [], "inside_word"),
    ("inside and outside", "the start of art", "art", False, [(13, 16)], "exact"),
    ("possessive is a boundary", "The FBI's office", "FBI", False, [(4, 7)], "exact"),
    ("hyphen is a boundary", "state-of-the-art design", "art", False, [(13, 16)], "exact"),
    ("digits are word characters", "in 2019s", "2019", False, [], "inside_word"),
    ("punctuation-edged entity", "costs $5, not $50.", "$5", False, [(6, 8)], "exact"),
    ("entity ending in a dot", "the U.S.A. and U.S.Army", "U.S.", False, [(4, 8), (15, 19)], "exact"),
    ("glued to the previous word", "30 Apr, 2019LIFETIME", "LIFETIME", False, [], "inside_word"),
    ("overlapping occurrences", "a-a-a", "a-a", False, [(0, 3), (2, 5)], "exact"),
    ("absent", "Nothing here.", "Paris", False, [], "absent"),
    ("accented text: character offsets", "Café Zürich and Zürich", "Zürich", False, [(5, 11), (16, 22)], "exact"),
    ("emoji before entity", "😀😀 Paris", "Paris", False, [(3, 8)], "exact"),
    ("non-ASCII letter is a word character", "Parisé", "Paris", False, [], "inside_word"),
    ("non-ASCII letter before", "éParis", "Paris", False, [], "inside_word"),
    ("CJK entity", "我爱北京 北京", "北京", False, [(5, 7)], "exact"),
    ("combining mark continues a word", "Pariŝ Paris\u0301 Paris", "Paris", False, [(13, 18)], "exact"),
    ("underscore is a word character", "my_Paris Paris", "Paris", False, [(9, 14)], "exact"),
    ("fallback respects boundaries", "the PARISIAN paris", "Paris", True, [(13, 18)], "casefold"),
]


@pytest.mark.parametrize("name,text,entity,fallback,spans,status", CASES, ids=[c[0] for c in CASES])
def test_align_cases(name, text, entity, fallback, spans, status):
    al = align(np.array([0]), pl.Series([entity]), pl.Series([text]), fallback)
    got = [(s, e) for _, s, e in al.spans.sort("start").iter_rows()]
    assert got == spans
    assert STATUSES[al.status[0]] == status
    assert al.occurrences[0] == len(spans)
    for s, e in got:
        assert text[s:e].lower() == entity.lower()
    # the reference implementation agrees
    ref, _ = find_occurrences(text, entity, ignore_case=(status == "casefold"))
    assert ref == spans


def test_nested_entities_are_all_kept():
    text = "Agents of the FBI's Counterterrorism Division met the FBI."
    entities = ["FBI's Counterterrorism Division", "FBI", "Counterterrorism Division"]
    al = align(np.zeros(3, dtype=np.int64), pl.Series(entities), pl.Series([text]))
    got = sorted((row, s, e) for row, s, e in al.spans.iter_rows())
    assert got == [(0, 14, 45), (1, 14, 17), (1, 54, 57), (2, 20, 45)]
    assert list(al.occurrences) == [1, 2, 1]


@pytest.mark.parametrize("alphabet", ["ab _'-.A", "aé😀 b\u0303_x.中文B", "ab é-😀A"])
def test_vectorised_path_matches_reference(alphabet):
    """Random sentences and entities: the vectorised path finds exactly what the reference finds."""
    rng = random.Random(7)
    texts, sids, entities = [], [], []
    for i in range(600):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        texts.append(text)
        for _ in range(3):
            if text and rng.random() < 0.7:
                a = rng.randint(0, len(text) - 1)
                entity = text[a : rng.randint(a + 1, min(len(text), a + 5))]
            else:
                entity = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
            sids.append(i)
            entities.append(entity)
    for fallback in (False, True):
        al = align(np.array(sids), pl.Series(entities), pl.Series(texts), fallback)
        found: dict[int, list[tuple[int, int]]] = {}
        for row, s, e in al.spans.iter_rows():
            found.setdefault(row, []).append((s, e))
        for row, (sid, entity) in enumerate(zip(sids, entities)):
            spans, seen = find_occurrences(texts[sid], entity)
            status = "exact" if spans else None
            if not spans and fallback:
                spans, seen_ci = find_occurrences(texts[sid], entity, ignore_case=True)
                status = "casefold" if spans else None
                seen = seen or seen_ci
            status = status or ("inside_word" if seen else "absent")
            assert sorted(found.get(row, [])) == spans, (texts[sid], entity)
            assert STATUSES[al.status[row]] == status, (texts[sid], entity)


def test_empty_input():
    al = align(np.zeros(0, dtype=np.int64), pl.Series([], dtype=pl.String), pl.Series(["x"]))
    assert al.spans.height == 0 and al.status.size == 0


@pytest.mark.parametrize("text", ["ab " * 3000, "ab" * 3000, "aé " * 3000])  # clean matches; inside words; the reference path
def test_a_line_stops_after_max_matches_and_is_capped(text):
    from nuner_core.dataset.align import MAX_MATCHES_PER_LINE

    entity = "aé" if "é" in text else "ab"
    al = align(np.array([0, 0]), pl.Series([entity, "zz"]), pl.Series([text]))
    assert al.capped.tolist() == [True, False]
    assert al.occurrences[0] in (0, MAX_MATCHES_PER_LINE) and len(al.spans) == al.occurrences[0]


def test_a_line_with_more_matches_than_the_vectorised_passes_gets_them_all():
    """Past VECTOR_PASSES the line goes whole to the reference (one walk, not a slice per match): same spans."""
    from nuner_core.dataset.align import VECTOR_PASSES

    text = " ".join(["ab", "abc"] * (3 * VECTOR_PASSES)) + " ab."
    al = align(np.array([0, 0]), pl.Series(["ab", "abc"]), pl.Series([text]))
    expected = [find_occurrences(text, e)[0] for e in ("ab", "abc")]
    assert al.occurrences.tolist() == [len(expected[0]), len(expected[1])] == [3 * VECTOR_PASSES + 1, 3 * VECTOR_PASSES]
    got = [sorted(zip(g["start"].to_list(), g["end"].to_list())) for g in (al.spans.filter(pl.col("row") == r) for r in (0, 1))]
    assert got == expected and al.status.tolist() == [0, 0] and not al.capped.any()
