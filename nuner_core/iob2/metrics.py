"""Scores: token-level macro-F1 over entity types (frozen protocol) and entity-level micro-F1 (fine-tuning).

Per type, with TP/FP/FN counted over words (token level) or over exact mentions (entity level):
``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2 P R / (P + R)``, and 0 when
a denominator is 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nuner_core.iob2.conll import mentions


@dataclass(frozen=True)
class TypeScore:
    type: str
    precision: float
    recall: float
    f1: float
    support: int  # gold words (token level) or gold mentions (entity level)
    predicted: int


def _score(name: str, tp: int, fp: int, fn: int) -> TypeScore:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TypeScore(name, precision, recall, f1, tp + fn, tp + fp)


def token_macro_f1(gold: np.ndarray, pred: np.ndarray, types: Sequence[str]) -> tuple[float, list[TypeScore]]:
    """Token-level macro-F1 over entity types.

    ``gold`` and ``pred`` are (N,) word labels: 0 for None, ``i + 1`` for ``types[i]``
    (a word's label is its entity type, B- and I- alike). The macro average runs over the
    types with at least one gold word, so every encoder is averaged over the same types;
    per-type scores are returned for all types.
    """
    gold = np.asarray(gold)
    pred = np.asarray(pred)
    if gold.shape != pred.shape:
        raise ValueError(f"gold {gold.shape} and predictions {pred.shape} differ in shape")
    n = len(types) + 1
    tp = np.bincount(gold[gold == pred], minlength=n)
    gold_n = np.bincount(gold, minlength=n)
    pred_n = np.bincount(pred, minlength=n)
    scores = [_score(t, int(tp[i + 1]), int(pred_n[i + 1] - tp[i + 1]), int(gold_n[i + 1] - tp[i + 1])) for i, t in enumerate(types)]
    present = [s.f1 for s in scores if s.support > 0]
    return (float(np.mean(present)) if present else 0.0), scores


def entity_micro_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[float, list[TypeScore]]:
    """Entity-level micro-F1 over exact mentions, strict IOB2 (an I-X that does not continue X opens nothing).

    ``gold`` and ``pred`` are IOB2 tag sequences, sentence by sentence. A predicted mention
    counts only if its start, end and type all match a gold one.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    tp: Counter[str] = Counter()
    gold_n: Counter[str] = Counter()
    pred_n: Counter[str] = Counter()
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gold_spans, pred_spans = set(mentions(g)), set(mentions(p))
        gold_n.update(t for _, _, t in gold_spans)
        pred_n.update(t for _, _, t in pred_spans)
        tp.update(t for _, _, t in gold_spans & pred_spans)
    scores = [_score(t, tp[t], pred_n[t] - tp[t], gold_n[t] - tp[t]) for t in sorted(set(gold_n) | set(pred_n))]
    micro = _score("micro", sum(tp.values()), sum(pred_n.values()) - sum(tp.values()), sum(gold_n.values()) - sum(tp.values()))
    return micro.f1, scores
