"""The k_w sampler (NuNER section 6): entity words per type between k_w and 2k_w, deterministic, cached apart from k~2k."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from nuner_core.evaluation.benchmarks import REGISTRY, load_benchmark
from nuner_core.evaluation.sampling import (
    SAMPLER_VERSION,
    _cache_path,
    mention_counts,
    sample_support,
    support_sets,
    unit_counts,
    word_counts,
)
from nuner_core.iob2.conll import Sentence


def sent(*tags: str) -> Sentence:
    return Sentence(tuple(f"w{i}" for i in range(len(tags))), tuple(tags))


@pytest.fixture(scope="module")
def restaurant():
    return load_benchmark(REGISTRY["mit_restaurant"])


def words_in(bench, support) -> Counter:
    total: Counter = Counter()
    for c in word_counts([bench.pool.sentences[i] for i in support.indices]):
        total.update(c)
    return total


@pytest.mark.parametrize("k", [2, 8, 32])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_type_between_kw_and_2kw_words_on_real_data(assets, restaurant, k, seed):
    support = sample_support(word_counts(restaurant.pool.sentences), restaurant.types, k, seed, method="kw")
    words = words_in(restaurant, support)
    assert support.method == "kw" and support.complete
    assert all(k <= words[t] <= 2 * k for t in restaurant.types), words
    assert support.counts == {t: words[t] for t in restaurant.types}


def test_words_not_mentions():
    """A three-word mention counts 3 for k_w and 1 for k~2k; one longer than 2k_w words can never be drawn."""
    pool = [sent("B-A", "I-A", "I-A", "B-B"), sent("B-A", "O", "B-B")]
    assert word_counts(pool)[0] == Counter({"A": 3, "B": 1}) and mention_counts(pool)[0] == Counter({"A": 1, "B": 1})
    kw = sample_support(unit_counts(pool, "kw"), ["A", "B"], 1, seed=0, method="kw")
    assert kw.indices == (1,) and kw.counts == {"A": 1, "B": 1}  # the first sentence has 3 > 2 words of A
    short = sample_support(unit_counts(pool[:1], "kw"), ["A", "B"], 1, seed=0, method="kw")
    assert short.shortfall == {"A": 0, "B": 0}
    with pytest.raises(ValueError, match="unknown sampling method"):
        unit_counts(pool, "k3k")  # type: ignore[arg-type]


def test_deterministic_saved_apart_and_k2k_unchanged(tmp_path, assets, restaurant):
    grid = [(4, 0), (4, 1)]
    args = (restaurant.pool.sentences, restaurant.pool.fingerprint, restaurant.types, grid)
    kw, hits = support_sets(*args, cache_dir=tmp_path, method="kw")
    k2k, hits2 = support_sets(*args, cache_dir=tmp_path)
    assert hits == hits2 == 0 and kw[(4, 0)].indices != k2k[(4, 0)].indices
    again, hits = support_sets(*args, cache_dir=tmp_path, method="kw")
    assert hits == 2 and again == kw
    # k~2k keeps the cache paths of earlier versions (their saved sets stay valid) and the same sets.
    key = hashlib.sha256(json.dumps([SAMPLER_VERSION, restaurant.pool.fingerprint, list(restaurant.types), 0, None]).encode()).hexdigest()[:16]
    assert _cache_path(tmp_path, restaurant.pool.fingerprint, restaurant.types, 4, 0, 0, None) == tmp_path / "support" / key / "k4-s0.json"
    assert k2k[(4, 0)] == sample_support(mention_counts(restaurant.pool.sentences), restaurant.types, 4, 0)
