"""From per-word label probabilities to entities: best label above a threshold, adjacent words merged.

The pre-training objective is token-level (a token is or is not an instance of a concept;
there is no B/I), so an entity is a maximal run of consecutive words that took the same
label. Each word takes its single best label, and only if that label's probability is at
least the threshold (``p >= threshold``). An entity's score is the **mean** of its words'
probabilities: every word of it passed the threshold, so the mean does too, and unlike the
maximum it does not let one confident word vouch for a long run of doubtful ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

# The threshold grid of calibration and of the evaluation's sweep: dense where the demo's
# probabilities live (the learned bias keeps them small), coarse above.
THRESHOLDS: tuple[float, ...] = (
    0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1,
    0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
)  # fmt: skip


@dataclass(frozen=True)
class Entity:
    start: int  # character offset into the text, inclusive
    end: int  # character offset, exclusive
    text: str  # text[start:end] (white space between merged words included)
    label: str
    score: float  # mean probability of the entity's words for ``label``

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], not {threshold}")
    return float(threshold)


def assign(best: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    """(n_words,) label index per word, -1 where the best label's probability is below ``threshold``."""
    return np.where(prob >= threshold, best, -1)


def runs(assigned: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs (first word, last word + 1, label index) of equal labels >= 0 in ``assigned`` (n_words,)."""
    assigned = np.asarray(assigned)
    if assigned.size == 0:
        return []
    change = np.flatnonzero(np.diff(assigned)) + 1  # positions where a new run starts
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(assigned)]])
    return [(int(s), int(e), int(assigned[s])) for s, e in zip(starts, ends) if assigned[s] >= 0]


def decode_entities(
    text: str, spans: np.ndarray, best: np.ndarray, prob: np.ndarray, labels: Sequence[str], threshold: float
) -> list[Entity]:
    """Entities of one text.

    spans: (n_words, 2) character spans; best: (n_words,) index into ``labels`` of each word's
    best label; prob: (n_words,) its probability.
    """
    entities = []
    for first, stop, label in runs(assign(best, prob, threshold)):
        start, end = int(spans[first, 0]), int(spans[stop - 1, 1])
        entities.append(Entity(start, end, text[start:end], labels[label], float(np.mean(prob[first:stop]))))
    return entities


def iob2(assigned: np.ndarray, types: Sequence[str]) -> list[str]:
    """IOB2 tags of one sentence from per-word label indices (-1: none), adjacent same-label words merged."""
    tags = ["O"] * len(assigned)
    for first, stop, label in runs(assigned):
        tags[first] = f"B-{types[label]}"
        for i in range(first + 1, stop):
            tags[i] = f"I-{types[label]}"
    return tags
