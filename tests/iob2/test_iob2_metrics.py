"""Metrics against hand-computed values and against seqeval; the probe's determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2

from nuner_core.evaluation.probe import fit_probe
from nuner_core.iob2.metrics import entity_micro_f1, token_macro_f1

TYPES = ["LOC", "PER"]


def test_token_macro_f1_by_hand():
    # words:   0    1    2    3    4    5    6    7
    gold = [0, 1, 1, 2, 2, 2, 0, 0]  # LOC LOC, PER PER PER
    pred = [1, 1, 0, 2, 2, 1, 2, 0]
    # LOC: tp 1 (word 1), fp 2 (words 0, 5), fn 1 (word 2): P 1/3, R 1/2, F1 0.4
    # PER: tp 2 (3, 4), fp 1 (6), fn 1 (5): P 2/3, R 2/3, F1 2/3
    value, scores = token_macro_f1(np.array(gold), np.array(pred), TYPES)
    by_type = {s.type: s for s in scores}
    assert by_type["LOC"].precision == pytest.approx(1 / 3) and by_type["LOC"].recall == pytest.approx(0.5)
    assert by_type["LOC"].f1 == pytest.approx(0.4)
    assert by_type["PER"].f1 == pytest.approx(2 / 3)
    assert (by_type["LOC"].support, by_type["LOC"].predicted) == (2, 3)
    assert value == pytest.approx((0.4 + 2 / 3) / 2)


def test_token_macro_f1_averages_over_types_present_in_gold():
    gold = np.array([1, 1, 0])
    pred = np.array([1, 1, 2])  # PER predicted but absent from gold: scored 0, not averaged
    value, scores = token_macro_f1(gold, pred, TYPES)
    assert value == 1.0
    assert {s.type: (s.f1, s.support, s.predicted) for s in scores} == {"LOC": (1.0, 2, 2), "PER": (0.0, 0, 1)}


def test_token_macro_f1_edge_cases():
    assert token_macro_f1(np.array([0, 0]), np.array([0, 0]), TYPES)[0] == 0.0  # no entity words at all
    assert token_macro_f1(np.array([1, 2]), np.array([0, 0]), TYPES)[0] == 0.0  # nothing predicted
    with pytest.raises(ValueError, match="shape"):
        token_macro_f1(np.array([1]), np.array([1, 0]), TYPES)


def test_entity_micro_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["B-LOC", "I-LOC"]]
    # gold mentions: PER(0,2), LOC(3,4), LOC(0,1); predicted: PER(0,2), PER(3,4), LOC(0,2)
    # exact matches: PER(0,2) only -> P 1/3, R 1/3, F1 1/3
    value, scores = entity_micro_f1(gold, pred)
    assert value == pytest.approx(1 / 3)
    by_type = {s.type: s for s in scores}
    assert (by_type["PER"].precision, by_type["PER"].recall) == (0.5, 1.0)
    assert (by_type["LOC"].precision, by_type["LOC"].recall) == (0.0, 0.0)


def test_entity_micro_f1_strict_ignores_dangling_inside_tags():
    gold = [["B-PER", "I-PER"]]
    assert entity_micro_f1(gold, [["I-PER", "I-PER"]])[0] == 0.0
    assert entity_micro_f1(gold, [["B-PER", "I-PER"]])[0] == 1.0
    with pytest.raises(ValueError):
        entity_micro_f1(gold, [["O"]])


def random_tags(rng: random.Random, n: int, types=("PER", "LOC", "ORG"), valid: bool = True) -> list[str]:
    tags, previous = [], "O"
    for _ in range(n):
        choice = rng.random()
        if choice < 0.4:
            tag = "O"
        elif choice < 0.7 or previous == "O" and valid:
            tag = f"B-{rng.choice(types)}"
        else:
            tag = f"I-{previous[2:] if valid and previous != 'O' else rng.choice(types)}"
        tags.append(tag)
        previous = tag
    return tags


@pytest.mark.parametrize("seed", range(20))
def test_entity_micro_f1_matches_seqeval_strict(seed):
    rng = random.Random(seed)
    gold = [random_tags(rng, rng.randint(1, 12)) for _ in range(30)]
    pred = [random_tags(rng, len(g), valid=seed % 2 == 0) for g in gold]  # odd seeds: invalid I- tags too
    ours, scores = entity_micro_f1(gold, pred)
    theirs = f1_score(gold, pred, mode="strict", scheme=IOB2, average="micro", zero_division=0)
    assert ours == pytest.approx(theirs)
    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    for s in scores:
        if s.type in report:
            assert s.f1 == pytest.approx(report[s.type]["f1-score"])
            assert s.support == report[s.type]["support"]


@pytest.mark.parametrize("seed", range(10))
def test_token_macro_f1_matches_seqeval_on_one_word_entities(seed):
    """Token-level scores are entity-level scores where every word is its own entity (B-<type>)."""
    rng = np.random.default_rng(seed)
    types = ["A", "B", "C"]
    gold = rng.integers(0, 4, size=200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 4, size=200))
    gold[:3] = [1, 2, 3]  # every type present in gold
    ours, _ = token_macro_f1(gold, pred, types)
    as_tags = lambda labels: [["O" if t == 0 else f"B-{types[t - 1]}" for t in labels]]  # noqa: E731
    theirs = f1_score(as_tags(gold), as_tags(pred), mode="strict", scheme=IOB2, average="macro", zero_division=0)
    assert ours == pytest.approx(theirs)


def test_probe_is_deterministic_and_learns_separable_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(3, 16))
    y = np.repeat(np.arange(3), 20)
    x = (centres[y] + rng.normal(size=(60, 16))).astype(np.float32)
    a = fit_probe(x, y, 3, max_iter=30)
    b = fit_probe(x, y, 3, max_iter=30)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert (a.predict(x) == y).mean() == 1.0
    x_new = (centres[y] + rng.normal(size=(60, 16))).astype(np.float32)
    assert (a.predict(x_new) == y).mean() > 0.95


def test_probe_handles_constant_features_and_absent_classes():
    x = np.ones((4, 3), dtype=np.float32)
    x[:, 0] = [0, 0, 1, 1]
    probe = fit_probe(x, np.array([0, 0, 2, 2]), 4)  # class 1 and 3 never seen
    assert probe.predict(x).tolist() == [0, 0, 2, 2]
