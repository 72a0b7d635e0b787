"""Control data: the same sentences with their annotations destroyed.

A control encoder is trained exactly like the real one on these; the evaluation then shows how
much of the gain comes from the LLM's annotations rather than from more training on web text.

- ``shuffle_concepts``: every span keeps its place, but the concept labels are permuted across
  all mentions of the split (same concept frequencies, no entity-concept association).
- ``random_spans``: every span keeps its concept and its length in words, but moves to a random
  word-aligned place in the same sentence (same concepts per sentence, wrong tokens).
"""

from __future__ import annotations

import re

import numpy as np

from nuner_core.dual_encoder.annotated import Annotated, Example

WORD = re.compile(r"\S+")


def shuffle_concepts(examples: list[Example], rng: np.random.Generator) -> list[Example]:
    concepts = [c for ex in examples for _, _, c in ex.spans]
    shuffled = [concepts[i] for i in rng.permutation(len(concepts))]
    out, k = [], 0
    for ex in examples:
        spans = tuple((s, e, shuffled[k + j]) for j, (s, e, _) in enumerate(ex.spans))
        k += len(ex.spans)
        out.append(Example(ex.id, ex.text, spans))
    return out


def random_spans(examples: list[Example], rng: np.random.Generator) -> list[Example]:
    out = []
    for ex in examples:
        words = [(m.start(), m.end()) for m in WORD.finditer(ex.text)]
        spans = []
        for s, e, c in ex.spans:
            width = max(1, sum(ws < e and we > s for ws, we in words))  # words the span touches
            width = min(width, len(words))
            first = int(rng.integers(0, len(words) - width + 1))
            spans.append((words[first][0], words[first + width - 1][1], c))
        out.append(Example(ex.id, ex.text, tuple(spans)))
    return out


CONTROLS = {"shuffle_concepts": shuffle_concepts, "random_spans": random_spans}


def destroy(data: Annotated, control: str, seed: int) -> Annotated:
    """The control version of both splits (seeded: the same control every time)."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; controls: {', '.join(CONTROLS)}")
    fn = CONTROLS[control]
    rng = np.random.default_rng([seed, 7919])
    return Annotated(train=fn(data.train, rng), validation=fn(data.validation, rng), dropped=data.dropped)
