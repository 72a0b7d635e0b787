"""Protocol "frozen" (paper section 4.1): frozen encoder features + a linear probe, token-level macro-F1."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.config import FrozenConfig
from nuner_core.evaluation.probe import fit_probe
from nuner_core.evaluation.sampling import SupportSet
from nuner_core.iob2.conll import Sentence
from nuner_core.iob2.metrics import token_macro_f1

METRIC = "token_macro_f1"


def word_labels(sentences: Sequence[Sentence], types: Sequence[str]) -> np.ndarray:
    """(total words,) labels: 0 for None, i + 1 for ``types[i]`` (B- and I- alike)."""
    index = {t: i + 1 for i, t in enumerate(types)}
    return np.array([0 if tag == "O" else index[tag[2:]] for s in sentences for tag in s.tags], dtype=np.int64)


@dataclass
class ProbeTimings:
    fits: int = 0
    fit_s: float = 0.0  # fitting and predicting, summed over the grid
    per_fit: list[float] = field(default_factory=list)


def run_grid(
    bench: Benchmark,
    supports: dict[tuple[int, int], SupportSet],
    grid: Sequence[tuple[int, int]],
    pool_features: dict[int, np.ndarray],
    test_features: Sequence[np.ndarray],
    config: FrozenConfig,
    timings: ProbeTimings | None = None,
    predictions: dict[tuple[int, int], np.ndarray] | None = None,
    keep: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
) -> list[dict[str, Any]]:
    """One result row per (k, seed): fit the probe on the support set, score it on the test set.

    The word predictions of the cells in ``keep`` are put into ``predictions`` (the LLM
    comparison scores the encoders again on exactly the sentences an LLM answered).
    """
    timings = timings if timings is not None else ProbeTimings()
    x_test = np.concatenate(test_features)  # (M, D)
    y_test = word_labels(bench.test.sentences, bench.types)  # (M,)
    rows = []
    for k, seed in grid:
        support = supports[(k, seed)]
        started = time.perf_counter()
        if support.indices:
            x = np.concatenate([pool_features[i] for i in support.indices])  # (N, D)
            y = word_labels([bench.pool.sentences[i] for i in support.indices], bench.types)  # (N,)
            probe = fit_probe(x, y, len(bench.types) + 1, config.l2, config.max_iter)
            pred = probe.predict(x_test)
        else:  # nothing could be sampled at all: everything is None
            pred = np.zeros_like(y_test)
        value, per_type = token_macro_f1(y_test, pred, bench.types)
        if predictions is not None and (k, seed) in keep:
            predictions[(k, seed)] = pred
        elapsed = time.perf_counter() - started
        timings.fits += 1
        timings.fit_s += elapsed
        timings.per_fit.append(elapsed)
        rows.append({"k": k, "seed": seed, "metric": METRIC, "value": value, "per_type": per_type, "fit_s": elapsed})
    return rows
