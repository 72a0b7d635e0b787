"""The greedy k~2k sampler: every type >= k, none > 2k, deterministic, and graceful when k is out of reach."""

from __future__ import annotations

from collections import Counter

import pytest

from nuner_core.evaluation.benchmarks import REGISTRY, load_benchmark
from nuner_core.evaluation.sampling import mention_counts, sample_support, support_sets
from nuner_core.iob2.conll import Sentence


def sent(*tags: str) -> Sentence:
    return Sentence(tuple(f"w{i}" for i in range(len(tags))), tuple(tags))


@pytest.fixture(scope="module")
def restaurant():
    return load_benchmark(REGISTRY["mit_restaurant"])


@pytest.fixture(scope="module")
def trivia():
    return load_benchmark(REGISTRY["mit_movie_trivia"])


def support_counts(bench, support) -> Counter:
    total: Counter = Counter()
    for c in mention_counts([bench.pool.sentences[i] for i in support.indices]):
        total.update(c)
    return total


@pytest.mark.parametrize("k", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_type_between_k_and_2k_on_real_data(assets, restaurant, k, seed):
    support = sample_support(mention_counts(restaurant.pool.sentences), restaurant.types, k, seed)
    counts = support_counts(restaurant, support)
    assert support.complete
    assert all(k <= counts[t] <= 2 * k for t in restaurant.types), counts
    assert dict(counts) == {t: n for t, n in support.counts.items() if n}
    assert len(set(support.indices)) == len(support.indices)  # no sentence twice


def test_deterministic_and_seed_dependent(assets, restaurant):
    counts = mention_counts(restaurant.pool.sentences)
    a = sample_support(counts, restaurant.types, 4, seed=3)
    b = sample_support(counts, restaurant.types, 4, seed=3)
    c = sample_support(counts, restaurant.types, 4, seed=4)
    d = sample_support(counts, restaurant.types, 4, seed=3, base_seed=1)
    assert a == b
    assert a.indices != c.indices and a.indices != d.indices


def test_rare_type_falls_short_without_failing(assets, trivia):
    """MIT Movie trivia's Soundtrack cannot reach k=16: keep what was found, say how short."""
    support = sample_support(mention_counts(trivia.pool.sentences), trivia.types, 16, seed=0)
    counts = support_counts(trivia, support)
    assert "Soundtrack" in support.shortfall
    assert support.shortfall["Soundtrack"] == counts["Soundtrack"] < 16
    assert all(counts[t] <= 32 for t in trivia.types)
    assert all(counts[t] >= 16 for t in trivia.types if t not in support.shortfall)
    assert support.attempts == len(trivia.pool.sentences)  # the whole pool was examined


TYPES = ["A", "B"]
IMPOSSIBLE = [
    ("type absent from the pool", [sent("B-A"), sent("B-A")], 1, {"B": 0}),
    ("only sentences with more than 2k mentions", [sent("B-A", "B-A", "B-A"), sent("B-B")], 1, {"A": 0}),
    ("type only beside too many of another", [sent("B-A"), sent("B-A", "B-A", "B-A", "B-B")], 1, {"B": 0}),
    ("sentences without entities", [sent("O", "O"), sent("O")], 2, {"A": 0, "B": 0}),
    ("empty pool", [], 1, {"A": 0, "B": 0}),
]


@pytest.mark.parametrize("case, pool, k, shortfall", IMPOSSIBLE, ids=[c[0] for c in IMPOSSIBLE])
def test_impossible_cases_report_shortfall(case, pool, k, shortfall):
    support = sample_support(mention_counts(pool), TYPES, k, seed=0)
    assert support.shortfall == shortfall
    total: Counter = Counter()
    for i in support.indices:
        total.update(mention_counts([pool[i]])[0])
    assert all(total[t] <= 2 * k for t in TYPES)


def test_accepts_only_sentences_that_help():
    """A sentence whose types are all at k already is skipped, even if it would fit under 2k."""
    pool = [sent("B-A")] * 5 + [sent("B-B")]
    for seed in range(5):
        support = sample_support(mention_counts(pool), TYPES, 1, seed)
        assert support.counts == {"A": 1, "B": 1}
        assert len(support.indices) == 2


def test_attempt_cap_limits_the_search():
    pool = [sent("O")] * 50 + [sent("B-A", "B-B")]
    support = sample_support(mention_counts(pool), TYPES, 1, seed=0, max_attempts=10)
    assert support.attempts <= 10
    if 50 not in support.indices:
        assert support.shortfall == {"A": 0, "B": 0}


def test_support_sets_are_saved_and_reused(tmp_path, assets, restaurant):
    grid = [(1, 0), (4, 1)]
    first, hits = support_sets(restaurant.pool.sentences, restaurant.pool.fingerprint, restaurant.types, grid, cache_dir=tmp_path)
    assert hits == 0
    again, hits = support_sets(restaurant.pool.sentences, restaurant.pool.fingerprint, restaurant.types, grid, cache_dir=tmp_path)
    assert hits == 2 and again == first
    other_pool, hits = support_sets(restaurant.pool.sentences, "another-fingerprint", restaurant.types, grid, cache_dir=tmp_path)
    assert hits == 0
