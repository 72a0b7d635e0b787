"""Texts and labels to entities, for both backends (torch and ONNX): one place for the label
normalisation, the thresholds per label and the two decodings; each backend only scores."""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from nuner_core.tagging.decode import Decoding, Entity, check_decoding, check_threshold, decode_entities, decode_spans
from nuner_core.tagging.labels import label_thresholds, normalise_label
from nuner_core.tagging.plan import check_texts
from nuner_core.tagging.settings import clean_labels
from nuner_core.text.words import segment_words

# (texts, word spans, normalised labels, "best" | "all") -> per text (best index, its p) or (n_words, n_labels) p
Score = Callable[[list[str], list[np.ndarray], list[str], Literal["best", "all"]], Sequence[Any]]


def predict_entities(
    texts: Sequence[str],
    labels: Sequence[str],
    threshold: float,
    thresholds: Mapping[str, float] | None,
    decoding: Decoding,
    score: Score,
) -> list[list[Entity]]:
    """Entities of each text: ``words`` or ``spans`` decoding (``decode``), thresholds per label over ``threshold``."""
    decoding = check_decoding(decoding)
    labels = clean_labels(labels)
    limits = label_thresholds(labels, check_threshold(threshold), thresholds)
    keys = [normalise_label(label) for label in labels]
    texts = check_texts(texts)
    spans = [segment_words(t) for t in texts]
    if decoding == "spans":  # needs every label's probability (a words x labels copy per text)
        probs = score(texts, spans, keys, "all")
        return [decode_spans(t, s, p, labels, limits) for t, s, p in zip(texts, spans, probs)]
    best = score(texts, spans, keys, "best")
    return [decode_entities(t, s, b, p, labels, limits) for t, s, (b, p) in zip(texts, spans, best)]
