"""The evaluation's zero_shot protocol: label names from types, scores at a threshold, the sweep."""

from __future__ import annotations

import numpy as np
import pytest

from nuner_core.evaluation.zero_shot import evaluate_zero_shot, label_name, label_names, score_at, sweep
from nuner_core.iob2.conll import Sentence
from nuner_core.tagging import ZeroShotTagger


@pytest.mark.parametrize(
    ("entity_type", "name"),
    [
        ("Restaurant_Name", "restaurant name"),
        ("RATING", "rating"),
        ("Amenity", "amenity"),
        ("cell_line", "cell line"),
        ("cell-type", "cell type"),
        ("programLang", "program lang"),
        ("RestaurantName", "restaurant name"),
        ("HTMLParser", "html parser"),
        ("RATINGS_AVERAGE", "ratings average"),
        ("DNA", "dna"),
        ("Opinion__Rating", "opinion rating"),
        ("mp3Player", "mp3 player"),
    ],
)
def test_label_name(entity_type, name):
    assert label_name(entity_type) == name


def test_label_names_with_a_mapping():
    types = ["Amenity", "ProgramLang", "Restaurant_Name"]
    assert label_names(types) == ["amenity", "program lang", "restaurant name"]
    assert label_names(types, {"programlang": " programming   language "}) == ["amenity", "programming language", "restaurant name"]
    with pytest.raises(ValueError, match="does not have"):
        label_names(types, {"dish": "dish"})
    with pytest.raises(ValueError, match="non-empty"):
        label_names(types, {"Amenity": "  "})
    with pytest.raises(ValueError, match="both become the label 'amenity'"):
        label_names(types, {"ProgramLang": "amenity"})
    with pytest.raises(ValueError, match="both become"):
        label_names(["cell_line", "Cell-Line"])


TYPES = ["City", "Dish"]
SENTENCES = [
    Sentence(("new", "york", "pizza"), ("B-City", "I-City", "B-Dish")),
    Sentence(("eat", "pasta"), ("O", "B-Dish")),
]
PROBS = [
    np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.6]], dtype=np.float32),
    np.array([[0.7, 0.1], [0.1, 0.04]], dtype=np.float32),
]


def test_scores_by_hand():
    at_half = score_at(PROBS, SENTENCES, TYPES, 0.5, "words")
    # words: new/york -> City, pizza -> Dish, eat -> City, pasta -> nothing
    # token level: City P 2/3 R 1 -> 0.8; Dish P 1 R 1/2 -> 2/3; macro 0.7333
    assert at_half.token_macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert [(s.type, s.support, s.predicted) for s in at_half.token_scores] == [("City", 2, 3), ("Dish", 2, 1)]
    # entity level: "new york" (merged) and "pizza" right, "eat" wrong, "pasta" missed: P 2/3 R 2/3
    assert at_half.entity_micro_f1 == pytest.approx(2 / 3)
    at_low = score_at(PROBS, SENTENCES, TYPES, 0.05, "words")
    # pasta's best is City (0.1): "eat pasta" becomes one City mention, wrong
    assert at_low.token_macro_f1 == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert at_low.entity_micro_f1 == pytest.approx(2 / 3)
    assert score_at(PROBS, SENTENCES, TYPES, 0.95, "words").entity_micro_f1 == 0.0


def test_sweep_is_score_at_per_threshold():
    curve = sweep(PROBS, SENTENCES, TYPES, [0.5, 0.05, 0.95])
    assert [c.threshold for c in curve] == [0.05, 0.5, 0.95]
    assert curve[1] == score_at(PROBS, SENTENCES, TYPES, 0.5)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        score_at([PROBS[0], PROBS[1][:, :1]], SENTENCES, TYPES, 0.5)
    with pytest.raises(ValueError, match="1 probability arrays for 2 sentences"):
        score_at(PROBS[:1], SENTENCES, TYPES, 0.5)


def test_evaluate_on_precomputed_probabilities():
    result = evaluate_zero_shot(PROBS, SENTENCES, TYPES, threshold=0.5, thresholds=[0.05, 0.5, 0.95])
    assert result.labels == {"City": "city", "Dish": "dish"}
    assert result.threshold_source == "given" and result.score == score_at(PROBS, SENTENCES, TYPES, 0.5)
    assert result.best_token.threshold == 0.5 and result.best_entity.entity_micro_f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="threshold must be given"):
        evaluate_zero_shot(PROBS, SENTENCES, TYPES)


def test_evaluate_a_tagger(tmp_path):
    from tagging_helpers import build_planted

    sentences = [
        Sentence(("alice", "ate", "pizza", "in", "new", "york"), ("O", "O", "B-Food", "O", "B-City", "I-City")),
        Sentence(("bread", "from", "paris", "and", "london"), ("B-Food", "O", "B-City", "O", "B-City")),
    ]
    tagger = ZeroShotTagger.from_pretrained(build_planted(tmp_path / "m", threshold=0.5))
    result = evaluate_zero_shot(tagger, sentences, ["City", "Food"])
    assert result.threshold == 0.5 and result.threshold_source == "calibrated"
    assert result.score.token_macro_f1 == 1.0 and result.score.entity_micro_f1 == 1.0
    assert result.best_token.token_macro_f1 == 1.0
    low = {c.threshold: c for c in result.curve}[0.001]  # every word takes a label: precision collapses
    assert low.entity_micro_f1 < 0.5
    # a mapping that names the types differently changes what is asked: "person" finds no city or food
    renamed = evaluate_zero_shot(tagger, sentences, ["City", "Food"], mapping={"city": "person"}, threshold=0.5)
    assert renamed.labels == {"City": "person", "Food": "food"}
    assert [s.f1 for s in renamed.score.token_scores] == [0.0, 1.0]
