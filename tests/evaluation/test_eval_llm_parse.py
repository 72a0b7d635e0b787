"""The LLM competitor's prompt and answer parser, without a server: table-driven, every case counted."""

from __future__ import annotations

import pytest

from nuner_core.evaluation.llm_parse import ParseStats, parse_answer
from nuner_core.evaluation.llm_prompt import INPUT, NONE, build_messages, gold_answer
from nuner_core.iob2.conll import Sentence

TYPES = ["Amenity", "Cuisine", "Location", "Rating", "Restaurant_Name"]


def sent(words: str, tags: str) -> Sentence:
    return Sentence(tuple(words.split()), tuple(tags.split()))


EXAMPLES = [
    sent("cheap thai food near me", "O B-Cuisine O B-Location I-Location"),
    sent("is there a place open late", "O O O O B-Amenity I-Amenity"),
    sent("hello there", "O O"),
]
TEST = sent("find a five star italian place with valet parking", "O O B-Rating I-Rating B-Cuisine O O B-Amenity I-Amenity")


def test_prompt_shows_the_examples_and_the_types_and_nothing_of_the_test_labels():
    messages = build_messages(TYPES, EXAMPLES, TEST)
    system = messages[0]
    assert system["role"] == "system"
    assert "Amenity, Cuisine, Location, Rating, Restaurant_Name" in system["content"]
    assert "<>" in system["content"] and NONE in system["content"]
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * len(EXAMPLES)
    assert [m["content"] for m in turns[0::2]] == [INPUT + " ".join(e.tokens) for e in EXAMPLES]
    assert [m["content"] for m in turns[1::2]] == [
        "thai <> Cuisine\nnear me <> Location", "open late <> Amenity", NONE]
    assert messages[-1] == {"role": "user", "content": INPUT + "find a five star italian place with valet parking"}
    # No label of the test sentence anywhere: not its answer, not one of its lines, not a tag.
    everything = "\n".join(m["content"] for m in messages)
    for leak in (gold_answer(TEST), "five star <> Rating", "valet parking <> Amenity", "italian <> Cuisine", "B-", "I-"):
        assert leak not in everything
    assert build_messages(TYPES, EXAMPLES, TEST)[:-1] == build_messages(TYPES, EXAMPLES, EXAMPLES[0])[:-1]  # shared prefix


def test_gold_answer_lists_every_mention_in_order():
    s = sent("good food for a good price", "B-Rating O O O B-Rating O")
    assert gold_answer(s) == "good <> Rating\ngood <> Rating"
    assert gold_answer(sent("nothing here", "O O")) == NONE


S = sent("where is the burger king near burger street", "O O O B-Restaurant_Name I-Restaurant_Name B-Location I-Location I-Location")
GOLD = ("O", "O", "O", "B-Restaurant_Name", "I-Restaurant_Name", "B-Location", "I-Location", "I-Location")
CASES = [
    # (case, answer, expected tags, expected counts beyond answers=1)
    ("exact", "burger king <> Restaurant_Name\nnear burger street <> Location", GOLD, {"lines": 2, "mentions": 2}),
    ("bullets, numbers, fences, quotes", "```\n- \"burger king\" <> Restaurant_Name\n2. near burger street <> 'Location'\n```",
     GOLD, {"lines": 2, "mentions": 2}),
    ("NONE", "NONE", ("O",) * 8, {"none": 1}),
    ("NONE in a fence, twice", "```\nNone.\nNONE\n```", ("O",) * 8, {"none": 1}),
    ("empty", "  \n", ("O",) * 8, {"empty": 1}),
    ("garbage", "I am sorry, I cannot help with that.", ("O",) * 8, {"unparsable": 1, "lines": 1, "bad_lines": 1}),
    ("casing", "Burger King <> Restaurant_Name", GOLD[:5] + ("O",) * 3, {"lines": 1, "mentions": 1, "case_insensitive": 1}),
    ("type spelled otherwise", "burger king <> restaurant name", GOLD[:5] + ("O",) * 3,
     {"lines": 1, "mentions": 1, "type_normalised": 1}),
    ("unknown type", "burger king <> Restaurant_Name\nburger <> Dish", GOLD[:5] + ("O",) * 3,
     {"lines": 2, "mentions": 1, "unknown_type": 1}),
    ("not in the sentence", "burger queen <> Restaurant_Name", ("O",) * 8, {"lines": 1, "not_in_sentence": 1}),
    ("duplicate line", "burger king <> Restaurant_Name\nburger king <> Restaurant_Name", GOLD[:5] + ("O",) * 3,
     {"lines": 2, "mentions": 1, "extra_listings": 1}),
    ("overlapping a longer mention", "burger king <> Restaurant_Name\nking <> Location", GOLD[:5] + ("O",) * 3,
     {"lines": 2, "mentions": 1, "overlapping": 1}),
    ("a bad line among good ones", "burger king <> Restaurant_Name\nthe rest is fine", GOLD[:5] + ("O",) * 3,
     {"lines": 2, "mentions": 1, "bad_lines": 1}),
    ("extra fields after the type", "burger king <> Restaurant_Name <> a fast-food chain", GOLD[:5] + ("O",) * 3,
     {"lines": 1, "mentions": 1}),
    ("a word listed once, occurring twice", "burger <> Cuisine",
     ("O", "O", "O", "B-Cuisine", "O", "O", "O", "O"), {"lines": 1, "mentions": 1, "occurrences_left": 1}),
    ("a word listed twice, occurring twice", "burger <> Cuisine\nburger <> Location",
     ("O", "O", "O", "B-Cuisine", "O", "O", "B-Location", "O"), {"lines": 2, "mentions": 1, "repeated": 1}),
    ("answer order places a word after the previous mention", "near <> Location\nburger <> Cuisine",
     ("O", "O", "O", "O", "O", "B-Location", "B-Cuisine", "O"), {"lines": 2, "mentions": 2, "occurrences_left": 1}),
    ("a shorter mention finds the free occurrence", "burger king <> Restaurant_Name\nburger <> Cuisine",
     ("O", "O", "O", "B-Restaurant_Name", "I-Restaurant_Name", "O", "B-Cuisine", "O"), {"lines": 2, "mentions": 2}),
    ("no separator at all", "burger king: Restaurant_Name", ("O",) * 8, {"unparsable": 1, "lines": 1, "bad_lines": 1}),
    ("an empty side", " <> Location\nburger king <> ", ("O",) * 8, {"unparsable": 1, "lines": 2, "bad_lines": 2}),
]


@pytest.mark.parametrize("case, answer, tags, counts", CASES, ids=[c[0] for c in CASES])
def test_parse_answer(case, answer, tags, counts):
    parsed, stats = parse_answer(answer, S.tokens, TYPES)
    assert parsed == tags
    expected = {name: 0 for name in ParseStats().as_dict()} | {"answers": 1} | counts
    assert stats.as_dict() == expected


def test_spacing_and_truncation():
    s = sent("joe 's pizza is open", "B-Restaurant_Name I-Restaurant_Name I-Restaurant_Name O O")
    parsed, stats = parse_answer("joe's pizza <> Restaurant_Name\nopen <> Ame", s.tokens, TYPES, finish_reason="length")
    assert parsed == s.tags
    assert (stats.spacing, stats.truncated, stats.unknown_type) == (1, 1, 1)


def test_quotes_that_are_words_are_kept():
    s = sent("`` little italy '' cafe", "B-Restaurant_Name I-Restaurant_Name I-Restaurant_Name I-Restaurant_Name O")
    parsed, _ = parse_answer(gold_answer(s), s.tokens, TYPES)
    assert parsed == s.tags


def test_every_gold_answer_of_a_benchmark_parses_back(assets):
    """The format is lossless but for a word that is an entity at one occurrence and not at another: measured."""
    from nuner_core.evaluation.benchmarks import REGISTRY, load_benchmark

    bench = load_benchmark(REGISTRY["mit_restaurant"], max_test=500)
    wrong = [s for s in bench.test.sentences if parse_answer(gold_answer(s), s.tokens, bench.types)[0] != s.tags]
    assert len(wrong) <= 2, wrong
