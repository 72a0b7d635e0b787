"""From per-word label probabilities to entities: best label above a threshold, adjacent words merged.

The pre-training objective is token-level (a token is or is not an instance of a concept;
there is no B/I), so an entity is a maximal run of consecutive words that took the same
label. Each word takes its single best label, and only if that label's probability is at
least the threshold (``p >= threshold``). An entity's score is the **mean** of its words'
probabilities: every word of it passed the threshold, so the mean does too, and unlike the
maximum it does not let one confident word vouch for a long run of doubtful ones.

Two decodings (``DECODINGS``):

- ``words``: as above; "European Central Bank" whose words prefer city,
  organization and company becomes three entities.
- ``spans`` (the default: 21.4 entity micro-F1 against 20.9 for words, mean of the four shared
  benchmarks with the demo's model; README "Zero-shot tagging"): the same words are in entities (a word whose best label reaches that label's
  threshold), but a maximal run of such adjacent words is one entity, labelled with the label
  of highest mean probability over the run. **Split rule:** the run is cut between adjacent
  words ``w`` and ``w + 1`` whose best labels differ and where each fails the other's label
  (``p[w + 1, best[w]] < t[best[w]]`` and ``p[w, best[w + 1]] < t[best[w + 1]]``): two
  strong labels meet and neither word could be the other's, as in "London Tuesday" (city,
  date). Each piece is then labelled as a run. Its score is the mean probability of its label.

Thresholds may differ per label (``t`` is an array with one threshold per label); a word is
compared with the threshold of its best label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

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


DECODINGS = ("words", "spans")
Decoding = Literal["words", "spans"]
DEFAULT_DECODING: Decoding = "spans"  # of the tagger, nuner tag, the tag stage and evaluate.zero_shot.decoding: measured better (README)
Run = tuple[int, int, int]  # first word, last word + 1, label index


def check_decoding(decoding: str) -> Decoding:
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
    return decoding  # type: ignore[return-value]


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], not {threshold}")
    return float(threshold)


def assign(best: np.ndarray, prob: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """(n_words,) label index per word, -1 where the best label's probability is below its threshold.

    ``threshold``: one for every label, or a (n_labels,) array indexed by label.
    """
    limit = threshold if np.ndim(threshold) == 0 else np.asarray(threshold)[best]
    return np.where(prob >= limit, best, -1)


def runs(assigned: np.ndarray) -> list[Run]:
    """Maximal runs (first word, last word + 1, label index) of equal labels >= 0 in ``assigned`` (n_words,)."""
    assigned = np.asarray(assigned)
    if assigned.size == 0:
        return []
    change = np.flatnonzero(np.diff(assigned)) + 1  # positions where a new run starts
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(assigned)]])
    return [(int(s), int(e), int(assigned[s])) for s, e in zip(starts, ends) if assigned[s] >= 0]


def span_runs(probs: np.ndarray, thresholds: float | np.ndarray) -> list[Run]:
    """Entities of ``spans`` decoding (module docstring) from one text's (n_words, n_labels) probabilities."""
    probs = np.asarray(probs)
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        return []
    limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
    best = probs.argmax(axis=1)
    active = assign(best, probs[np.arange(len(best)), best], limits) >= 0
    # where two strong labels meet: best labels differ and each word fails the other's label
    nxt, cur = best[1:], best[:-1]
    cut = (cur != nxt) & (probs[1:][np.arange(len(nxt)), cur] < limits[cur]) & (probs[:-1][np.arange(len(cur)), nxt] < limits[nxt])
    starts = active & np.concatenate([[True], ~active[:-1] | cut])  # a piece starts after an inactive word or a cut
    pieces = runs(np.where(active, np.cumsum(starts), -1))  # one id per piece, -1 outside
    return [(first, stop, int(probs[first:stop].mean(axis=0).argmax())) for first, stop, _ in pieces]


def decode_entities(
    text: str, spans: np.ndarray, best: np.ndarray, prob: np.ndarray, labels: Sequence[str], threshold: float | np.ndarray
) -> list[Entity]:
    """Entities of one text, ``words`` decoding.

    spans: (n_words, 2) character spans; best: (n_words,) index into ``labels`` of each word's
    best label; prob: (n_words,) its probability.
    """
    return entities_of(text, spans, runs(assign(best, prob, threshold)), labels, prob[:, None], best=True)


def decode_spans(text: str, spans: np.ndarray, probs: np.ndarray, labels: Sequence[str], threshold: float | np.ndarray) -> list[Entity]:
    """Entities of one text, ``spans`` decoding, from its (n_words, n_labels) probabilities."""
    return entities_of(text, spans, span_runs(probs, threshold), labels, probs)


def entities_of(text: str, spans: np.ndarray, found: list[Run], labels: Sequence[str], probs: np.ndarray, best: bool = False) -> list[Entity]:
    """Entities of word runs; score = mean of ``probs[:, label]`` over the run (``best``: its one column)."""
    entities = []
    for first, stop, label in found:
        start, end = int(spans[first, 0]), int(spans[stop - 1, 1])
        score = float(np.mean(probs[first:stop, 0 if best else label]))
        entities.append(Entity(start, end, text[start:end], labels[label], score))
    return entities


def iob2(assigned: np.ndarray, types: Sequence[str]) -> list[str]:
    """IOB2 tags of one sentence from per-word label indices (-1: none), adjacent same-label words merged."""
    return iob2_runs(len(assigned), runs(assigned), types)


def iob2_runs(n_words: int, found: Sequence[Run], types: Sequence[str]) -> list[str]:
    """IOB2 tags of one sentence of ``n_words`` words from entity runs (B- on a run's first word, I- on the rest)."""
    tags = ["O"] * n_words
    for first, stop, label in found:
        tags[first] = f"B-{types[label]}"
        for i in range(first + 1, stop):
            tags[i] = f"I-{types[label]}"
    return tags
