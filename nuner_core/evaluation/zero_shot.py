"""Protocol "zero_shot" (k = 0): the two-encoder model tags a benchmark from its type names alone.

Each entity type becomes a label name (``label_name``: ``Restaurant_Name`` -> "restaurant
name", through the tagger's ``normalise_label``), overridable per type with a mapping. Words
are decoded as the tagger decodes them (``nuner_core.tagging.decode``, ``spans`` by default: a
run of tagged words is one entity; or ``words``: each word its best label if p >= the threshold,
adjacent same-label words merged), then:

- **token macro-F1** over types, exactly the frozen protocol's metric (``metrics.token_macro_f1``
  on ``frozen.word_labels``), so this is the k = 0 point of the F1-vs-k table and plot;
- **entity micro-F1** (``metrics.entity_micro_f1``: exact span and type), the convention of the
  zero-shot NER literature; predictions become IOB2 with a run of same-label words as one
  mention (B- on its first word, I- on the rest).

The threshold is fixed before looking at the benchmark (the model's calibrated one, see
``nuner_core.tagging.calibrate``). ``sweep`` scores a grid of thresholds for an F1-vs-threshold
plot; its maximum on the test set is an upper bound to be reported as such, never the result.

Everything here is a pure function of (probabilities or a tagger, sentences, types, mapping,
thresholds): the probabilities are computed once per (model, benchmark) and every threshold
reuses them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nuner_core.evaluation.frozen import word_labels
from nuner_core.iob2.conll import Sentence
from nuner_core.iob2.metrics import TypeScore, entity_micro_f1, token_macro_f1
from nuner_core.tagging import DEFAULT_DECODING, THRESHOLDS, assign, check_decoding, check_threshold, iob2_runs, normalise_label, runs, span_runs

if TYPE_CHECKING:
    from nuner_core.stage_api import Progress
    from nuner_core.tagging import Decoding, ZeroShotTagger

PROTOCOL = "zero_shot"
METRICS = ("token_macro_f1", "entity_micro_f1")

_LOWER_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # restaurantName -> restaurant Name
_ACRONYM_WORD = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")  # HTMLParser -> HTML Parser


def label_name(entity_type: str) -> str:
    """A label name from a benchmark type: ``_`` and ``-`` as spaces, camelCase split, lower case.

    ``Restaurant_Name`` -> "restaurant name", ``RATING`` -> "rating", ``cell_line`` -> "cell line",
    ``programLang`` -> "program lang".
    """
    return normalise_label(_ACRONYM_WORD.sub(" ", _LOWER_UPPER.sub(" ", entity_type)))


def label_names(types: Sequence[str], mapping: Mapping[str, str] | None = None) -> list[str]:
    """One label name per type, in ``types`` order; ``mapping`` (type -> name, type matched ignoring case) overrides.

    A mapping key that is no type of the benchmark, an empty name, or two types with the same
    name once normalised (``normalise_label``: the tagger would score them as one label) is a ValueError.
    """
    by_lower = {t.lower(): t for t in types}
    overrides: dict[str, str] = {}
    for key, name in (mapping or {}).items():
        if key.lower() not in by_lower:
            raise ValueError(f"label mapping names type {key!r}, which the benchmark does not have (types: {', '.join(types)})")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"label mapping gives type {key!r} the name {name!r}; a label name must be a non-empty string")
        overrides[by_lower[key.lower()]] = " ".join(name.split())
    names = [overrides.get(t, label_name(t)) for t in types]
    seen: dict[str, str] = {}
    for t, name in zip(types, names):
        key = normalise_label(name)
        if key in seen:
            raise ValueError(f"types {seen[key]!r} and {t!r} both become the label {key!r}; map one of them to another name")
        seen[key] = t
    return names


@dataclass(frozen=True)
class ZeroShotScore:
    threshold: float
    token_macro_f1: float
    entity_micro_f1: float
    token_scores: tuple[TypeScore, ...]  # per type, token level
    entity_scores: tuple[TypeScore, ...]  # per type, entity level

    def metric(self, name: str) -> float:
        return {"token_macro_f1": self.token_macro_f1, "entity_micro_f1": self.entity_micro_f1}[name]


@dataclass(frozen=True)
class ZeroShotResult:
    labels: dict[str, str]  # type -> label name used
    threshold: float  # the one fixed beforehand
    threshold_source: str  # "calibrated", "default" or "given"
    score: ZeroShotScore  # at ``threshold``: the result
    curve: tuple[ZeroShotScore, ...]  # the sweep, ascending thresholds (for the plot)
    best_token: ZeroShotScore  # upper bound: the best token macro-F1 of the sweep, chosen on the test set
    best_entity: ZeroShotScore  # upper bound: the best entity micro-F1 of the sweep, chosen on the test set


def word_probabilities(
    tagger: ZeroShotTagger, sentences: Sequence[Sentence], labels: Sequence[str], progress: Progress | None = None
) -> list[np.ndarray]:
    """Per sentence, a (n_words, n_types) array of p(word is type), columns in ``labels`` order."""
    return tagger.predict_words([s.tokens for s in sentences], list(labels), progress)


def _found(probabilities: Sequence[np.ndarray], threshold: float, decoding: Decoding) -> list[list[tuple[int, int, int]]]:
    """Per sentence, its entities as word runs (first, stop, type index), decoded as the tagger does."""
    if decoding == "spans":
        return [span_runs(p, threshold) for p in probabilities]
    return [runs(assign(p.argmax(axis=1), p.max(axis=1), threshold)) if p.shape[0] else [] for p in probabilities]


def _word_types(n_words: int, found: list[tuple[int, int, int]]) -> np.ndarray:
    """(n_words,) type index + 1 of each word (0: none) from its sentence's runs."""
    out = np.zeros(n_words, dtype=np.int64)
    for first, stop, label in found:
        out[first:stop] = label + 1
    return out


def score_at(
    probabilities: Sequence[np.ndarray], sentences: Sequence[Sentence], types: Sequence[str], threshold: float, decoding: Decoding = DEFAULT_DECODING
) -> ZeroShotScore:
    """Token macro-F1 and entity micro-F1 at one threshold; ``probabilities[i]`` is (len(sentences[i].tokens), len(types))."""
    threshold = check_threshold(threshold)
    decoding = check_decoding(decoding)
    if len(probabilities) != len(sentences):
        raise ValueError(f"{len(probabilities)} probability arrays for {len(sentences)} sentences")
    for i, (p, s) in enumerate(zip(probabilities, sentences)):
        if p.shape != (len(s.tokens), len(types)):
            raise ValueError(f"sentence {i}: probabilities {p.shape}, expected ({len(s.tokens)}, {len(types)})")
    found = _found(probabilities, threshold, decoding)
    gold = word_labels(sentences, types)  # (N,) 0 for None, i + 1 for types[i]
    lengths = [len(s.tokens) for s in sentences]
    pred = np.concatenate([_word_types(n, f) for n, f in zip(lengths, found)]) if found else np.zeros(0, dtype=np.int64)
    token_f1, token_scores = token_macro_f1(gold, pred, types)
    entity_f1, entity_scores = entity_micro_f1([list(s.tags) for s in sentences], [iob2_runs(n, f, types) for n, f in zip(lengths, found)])
    return ZeroShotScore(threshold, token_f1, entity_f1, tuple(token_scores), tuple(entity_scores))


def sweep(
    probabilities: Sequence[np.ndarray],
    sentences: Sequence[Sentence],
    types: Sequence[str],
    thresholds: Sequence[float] = THRESHOLDS,
    decoding: Decoding = DEFAULT_DECODING,
) -> list[ZeroShotScore]:
    """``score_at`` for every threshold, ascending."""
    return [score_at(probabilities, sentences, types, t, decoding) for t in sorted(thresholds)]


def evaluate_zero_shot(
    model: ZeroShotTagger | Sequence[np.ndarray],
    sentences: Sequence[Sentence],
    types: Sequence[str],
    *,
    mapping: Mapping[str, str] | None = None,
    threshold: float | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: Progress | None = None,
    decoding: Decoding = DEFAULT_DECODING,
) -> ZeroShotResult:
    """Score a tagger (or precomputed probabilities, columns in ``types`` order) on a benchmark's test sentences.

    ``threshold`` None: the tagger's own (calibrated, else the default); with probabilities it
    must be given.
    """
    names = label_names(types, mapping)
    if isinstance(model, Sequence):
        if threshold is None:
            raise ValueError("with precomputed probabilities the threshold must be given")
        probabilities, source = list(model), "given"
    else:
        probabilities = word_probabilities(model, sentences, names, progress)
        source = "given" if threshold is not None else model.threshold_source
        threshold = model.threshold if threshold is None else threshold
    score = score_at(probabilities, sentences, types, threshold, decoding)
    curve = sweep(probabilities, sentences, types, thresholds, decoding)
    return ZeroShotResult(
        labels=dict(zip(types, names)),
        threshold=score.threshold,
        threshold_source=source,
        score=score,
        curve=tuple(curve),
        best_token=max(curve, key=lambda s: s.token_macro_f1),
        best_entity=max(curve, key=lambda s: s.entity_micro_f1),
    )
