"""The threshold, fixed before looking at any benchmark: the best F1 on the pre-training validation split.

The validation split of the dataset artifact (``annotated.parquet`` rows with ``split ==
"validation"``) holds the LLM's own annotations of sentences the model never trained on.
Each sentence is tagged with **its own concepts as labels** (``label_set="sentence"``, the
default: the concepts annotated in it, as pre-training paired sentences with concepts), or
with every concept of the split (``label_set="split"``: harder, closer to a fixed label set
with many absent labels, but every concept the LLM did not annotate in a sentence counts
against the model).

The F1 is the **word-level micro-F1 over (word, concept) pairs**:

    gold      = {(w, c) : word w lies inside a span annotated with concept c}
    predicted = {(w, best label of w) : p(w, best label) >= t}
    P = |gold & predicted| / |predicted|,  R = |gold & predicted| / |gold|,  F1 = 2PR / (P + R)

Words are ``nuner_core.text.words.segment_words``'s; "inside" is pre-training's rule for tokens
(``targets.token_targets``: a token is positive when it lies inside the span), applied to
words, and the dataset stage only keeps spans on word boundaries, so gold spans are whole
words. A word inside two nested spans is two gold pairs and the tagger predicts one label per
word, so recall stays below 1 there at every threshold. Sentences without a concept have no
labels under ``"sentence"`` and are skipped (counted).

The threshold is the grid point with the highest F1; when several tie, the middle one of them
(away from both ends of a plateau).

Per concept: for the split's most frequent concepts (``per_concept_top``, each with at least
``per_concept_min_gold`` gold pairs) the same pick on that concept's pairs alone (predicted:
words whose best label is it) is recorded in ``Calibration.per_concept``. It is a record, not a
setting: the tagger uses the global threshold unless the user passes per-label ones
(``thresholds={label: p}``, ``--threshold person=0.1``), for which these are a starting point.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from nuner_core.dual_encoder.annotated import Example, load_annotated
from nuner_core.stage_api import Progress, StageError
from nuner_core.tagging.decode import THRESHOLDS
from nuner_core.text.words import segment_words

if TYPE_CHECKING:
    from nuner_core.tagging.tagger import ZeroShotTagger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    predicted: int  # (word, label) pairs predicted
    correct: int  # of which gold


@dataclass(frozen=True)
class Calibration:
    threshold: float  # the chosen one
    f1: float
    precision: float
    recall: float
    curve: tuple[CurvePoint, ...]  # one point per grid threshold, ascending
    label_set: str
    sentences: int  # validation sentences scored
    words: int
    gold_pairs: int
    labels: int  # distinct concepts used as labels
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> sentences (or spans) left out
    per_concept: dict[str, float] = field(default_factory=dict)  # frequent concepts' own optimum, most frequent first

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gold_pairs(words: np.ndarray, spans: Sequence[tuple[int, int, str]]) -> set[tuple[int, str]]:
    """(word index, concept) for every word of (n_words, 2) ``words`` inside a (start, end, concept) span."""
    pairs: set[tuple[int, str]] = set()
    for start, end, concept in spans:
        inside = np.flatnonzero((words[:, 0] >= start) & (words[:, 1] <= end))
        pairs.update((int(w), concept) for w in inside)
    return pairs


def threshold_curve(prob: np.ndarray, correct: np.ndarray, gold: int, thresholds: Sequence[float]) -> list[CurvePoint]:
    """Micro P/R/F1 per threshold from each word's best-label probability (N,) and whether that pair is gold (N,)."""
    prob, correct = np.asarray(prob, dtype=np.float64), np.asarray(correct, dtype=bool)
    points = []
    for t in sorted(thresholds):
        chosen = prob >= t
        predicted, hit = int(chosen.sum()), int((chosen & correct).sum())
        precision = hit / predicted if predicted else 0.0
        recall = hit / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        points.append(CurvePoint(float(t), precision, recall, f1, predicted, hit))
    return points


def pick_threshold(curve: Sequence[CurvePoint]) -> CurvePoint:
    """The point of highest F1; of several equal ones, the middle one (ascending thresholds)."""
    if not curve:
        raise ValueError("an empty threshold curve")
    best = max(p.f1 for p in curve)
    tied = [p for p in curve if p.f1 == best]
    return tied[(len(tied) - 1) // 2]


def per_concept_thresholds(
    prob: np.ndarray, correct: np.ndarray, predicted: np.ndarray, golds: Sequence[set[tuple[int, str]]], thresholds: Sequence[float],
    top: int, min_gold: int,
) -> dict[str, float]:  # fmt: skip
    """Each frequent concept's F1-maximising threshold over its own (word, concept) pairs.

    prob, correct, predicted: (N,) each word's best-label probability, whether that pair is
    gold, and the best label's name; ``golds``: per sentence its gold pairs.
    """
    counts = Counter(c for g in golds for _, c in g)
    out: dict[str, float] = {}
    for concept, n in counts.most_common(top):
        if n < min_gold:
            break
        mine = predicted == concept
        out[concept] = pick_threshold(threshold_curve(prob[mine], correct[mine], n, thresholds)).threshold
    return out


def calibrate_threshold(
    tagger: ZeroShotTagger,
    annotated: str | Path,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    label_set: Literal["sentence", "split"] = "sentence",
    max_sentences: int | None = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    per_concept_top: int = 20,
    per_concept_min_gold: int = 20,
) -> Calibration:
    """The F1-maximising threshold on the validation split of ``annotated`` (a parquet file or its directory).

    ``max_sentences``: a seeded sample of that many validation sentences (None: all); ten
    thousand pin the curve's maximum well and keep a CPU run short.
    """
    path = Path(annotated)
    path = path / "annotated.parquet" if path.is_dir() else path
    data = load_annotated(path)
    if not data.validation:
        raise StageError(f"{path}: no validation sentences to calibrate on; the dataset stage's validation split is empty")
    return calibrate_examples(tagger, data.validation, str(path), thresholds=thresholds, label_set=label_set, max_sentences=max_sentences,
                              seed=seed, progress=progress, per_concept_top=per_concept_top, per_concept_min_gold=per_concept_min_gold,
                              skipped={f"dropped:{k}": v for k, v in data.dropped.items()})  # fmt: skip


def calibrate_examples(
    tagger: ZeroShotTagger,
    examples: Sequence[Example],
    source: str,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    label_set: Literal["sentence", "split"] = "sentence",
    max_sentences: int | None = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    per_concept_top: int = 20,
    per_concept_min_gold: int = 20,
    skipped: dict[str, int] | None = None,
) -> Calibration:
    """``calibrate_threshold`` on given held-out sentences (``source`` names them in errors): the fine-tuning's dev split."""
    examples = list(examples)
    skipped = dict(skipped or {})
    if not examples:
        raise StageError(f"{source}: no sentences to calibrate on")
    if max_sentences is not None and len(examples) > max_sentences:
        keep = np.sort(np.random.default_rng(seed).choice(len(examples), size=max_sentences, replace=False))
        skipped["not_sampled"] = len(examples) - max_sentences
        examples = [examples[i] for i in keep]
    if label_set == "sentence":
        without = sum(1 for ex in examples if not ex.spans)
        if without:
            skipped["no_concept"] = without
        examples = [ex for ex in examples if ex.spans]
        if not examples:
            raise StageError(f"{source}: no sentence has an annotated concept; nothing to calibrate on")
    elif label_set != "split":
        raise ValueError(f"label_set must be 'sentence' or 'split', not {label_set!r}")

    texts = [ex.text for ex in examples]
    words = [segment_words(t) for t in texts]
    golds = [gold_pairs(w, ex.spans) for w, ex in zip(words, examples)]
    if label_set == "sentence":
        columns = [sorted({c for _, _, c in ex.spans}) for ex in examples]
        probs = tagger.score_spans(texts, words, columns, progress)  # per sentence (n_words, C_i)
        best = [(p.argmax(axis=1), p.max(axis=1, initial=0.0)) if p.size else (np.zeros(len(p), dtype=np.int64), np.zeros(len(p))) for p in probs]
        names = columns
        n_labels = len({c for cs in columns for c in cs})
    else:
        concepts = sorted({c for ex in examples for _, _, c in ex.spans})
        if not concepts:
            raise StageError(f"{source}: no sentence has an annotated concept; nothing to calibrate on")
        best = tagger.best_labels(texts, words, concepts, progress)
        names = [concepts] * len(examples)
        n_labels = len(concepts)

    prob = np.concatenate([p for _, p in best]) if best else np.zeros(0)
    correct = np.concatenate(
        [np.array([(w, names[i][b]) in golds[i] for w, b in enumerate(idx)], dtype=bool) for i, (idx, _) in enumerate(best)]
    ) if best else np.zeros(0, dtype=bool)  # fmt: skip
    predicted = np.array([names[i][b] for i, (idx, _) in enumerate(best) for b in idx], dtype=object)
    gold = sum(len(g) for g in golds)
    curve = threshold_curve(prob, correct, gold, thresholds)
    own = per_concept_thresholds(prob, correct, predicted, golds, thresholds, per_concept_top, per_concept_min_gold)
    chosen = pick_threshold(curve)
    log.info("calibrated threshold %.3f: word-level micro-F1 %.3f on %d validation sentences (%s labels)",
             chosen.threshold, chosen.f1, len(examples), label_set)
    return Calibration(
        threshold=chosen.threshold, f1=chosen.f1, precision=chosen.precision, recall=chosen.recall, curve=tuple(curve),
        label_set=label_set, sentences=len(examples), words=int(sum(len(w) for w in words)), gold_pairs=gold,
        labels=n_labels, skipped=skipped, per_concept=own,
    )  # fmt: skip
