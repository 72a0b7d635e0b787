"""Targets from fast-tokenizer offsets, and the micro-batch tensors the model consumes.

A token is positive for a concept when its character span lies inside a span annotated with
that concept: every sub-token of an entity is positive, nested spans give several positives,
a token that only partly overlaps a span is negative. Special and padding tokens are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from nuner_core.pretraining.data import ConceptVocab, Encoded


def token_targets(offsets: np.ndarray, special: np.ndarray, spans: list[tuple[int, int, int]], num_concepts: int) -> np.ndarray:
    """(T, C) bool: token t is positive for batch concept c.

    offsets: (T, 2) character [start, end) of each token; special: (T,) bool;
    spans: (start, end, batch concept index) with end exclusive.
    """
    targets = np.zeros((len(offsets), num_concepts), dtype=bool)  # (T, C)
    tok_start, tok_end = offsets[:, 0], offsets[:, 1]
    real = ~special & (tok_end > tok_start)  # (T,) tokens that cover text
    for start, end, concept in spans:
        targets[:, concept] |= real & (tok_start >= start) & (tok_end <= end)
    return targets


def padding_groups(lengths: list[int], max_groups: int = 4, call_cost: int = 16) -> tuple[tuple[int, int, int], ...]:
    """Split length-sorted sequences into at most ``max_groups`` contiguous groups (start, end, width)
    that minimise padded tokens plus ``call_cost`` tokens per extra encoder call.

    Concept names are short (3-8 tokens with [CLS]/[SEP]); padding all of a batch's concepts to the
    longest one nearly doubles the concept encoder's work. A dynamic programme over the distinct lengths.
    """
    if not lengths:
        return ()
    assert all(a <= b for a, b in zip(lengths, lengths[1:])), "lengths must be sorted"
    widths = sorted(set(lengths))
    ends = [sum(1 for x in lengths if x <= w) for w in widths]  # sequences with length <= widths[i]
    m = len(widths)
    INF = float("inf")
    # best[g][i]: cost of covering widths[0..i] with g groups, last group ending at widths[i]
    best = [[INF] * m for _ in range(max_groups + 1)]
    back = [[-1] * m for _ in range(max_groups + 1)]
    for i in range(m):
        best[1][i] = ends[i] * widths[i]
    for g in range(2, max_groups + 1):
        for i in range(m):
            for j in range(i):
                cost = best[g - 1][j] + (ends[i] - ends[j]) * widths[i] + call_cost
                if cost < best[g][i]:
                    best[g][i], back[g][i] = cost, j
    g = min(range(1, max_groups + 1), key=lambda k: best[k][m - 1])
    cuts, i = [], m - 1
    while g >= 1 and i >= 0:
        cuts.append(i)
        i, g = back[g][i], g - 1
    groups, start = [], 0
    for i in reversed(cuts):
        groups.append((start, ends[i], widths[i]))
        start = ends[i]
    return tuple(groups)


@dataclass
class Batch:
    text_ids: torch.Tensor  # (B, T) long
    text_mask: torch.Tensor  # (B, T) long: 1 for real tokens (attention mask)
    token_mask: torch.Tensor  # (B, T) bool: tokens that enter the loss (not special, not padding)
    concept_ids: torch.Tensor  # (C, L) long; C >= 1 (a placeholder when the batch has no concept)
    concept_mask: torch.Tensor  # (C, L) long
    concept_valid: torch.Tensor  # (C,) bool: False only for the placeholder
    concept_groups: tuple[tuple[int, int, int], ...]  # (start, end, width): concepts sorted by length, encoded per group
    concepts: tuple[int, ...]  # (C,) the ConceptVocab id of each column (empty for the placeholder)
    targets: torch.Tensor  # (B, T, C) float 0/1
    num_tokens: int  # real text tokens (special ones included), for tokens/s

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return Batch(move(self.text_ids), move(self.text_mask), move(self.token_mask), move(self.concept_ids), move(self.concept_mask),
                     move(self.concept_valid), self.concept_groups, self.concepts, move(self.targets), self.num_tokens)


def _pad(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def collate(
    data: Encoded, indices: np.ndarray, vocab: ConceptVocab, pad_id: int, concept_pad_id: int | None = None, extra_concepts: Sequence[int] = ()
) -> Batch:
    """One micro-batch: padded text, the batch's unique concepts (each encoded once), targets.

    ``extra_concepts``: vocabulary ids added as columns even where no sentence of the batch has
    them: negatives everywhere but where annotated (fine-tuning's other label names).
    """
    concept_pad_id = pad_id if concept_pad_id is None else concept_pad_id
    present = {c for i in indices for _, _, c in data.spans[i]} | {int(c) for c in extra_concepts}
    concept_ids = sorted(present, key=lambda c: (len(vocab.input_ids[c]), c))
    local = {c: j for j, c in enumerate(concept_ids)}
    text_ids, text_mask = _pad([data.input_ids[i] for i in indices], pad_id)  # (B, T)
    B, T = text_ids.shape
    C = max(1, len(concept_ids))
    targets = np.zeros((B, T, C), dtype=np.float32)  # (B, T, C)
    token_mask = np.zeros((B, T), dtype=bool)
    for b, i in enumerate(indices):
        n = len(data.input_ids[i])
        spans = [(s, e, local[c]) for s, e, c in data.spans[i]]
        targets[b, :n] = token_targets(data.offsets[i], data.special[i], spans, C)
        token_mask[b, :n] = ~data.special[i]
    if concept_ids:
        c_ids, c_mask = _pad([vocab.input_ids[c] for c in concept_ids], concept_pad_id)  # (C, L), shortest first
        groups = padding_groups([len(vocab.input_ids[c]) for c in concept_ids])
    else:  # no sentence of the batch has a span: one placeholder column, masked out of the loss
        c_ids, c_mask = np.full((1, 1), concept_pad_id, dtype=np.int64), np.ones((1, 1), dtype=np.int64)
        groups = ((0, 1, 1),)
    return Batch(
        text_ids=torch.from_numpy(text_ids),
        text_mask=torch.from_numpy(text_mask),
        token_mask=torch.from_numpy(token_mask),
        concept_ids=torch.from_numpy(c_ids),
        concept_mask=torch.from_numpy(c_mask),
        concept_valid=torch.tensor([bool(concept_ids)] * C),
        concept_groups=groups,
        concepts=tuple(concept_ids),
        targets=torch.from_numpy(targets),
        num_tokens=int(text_mask.sum()),
    )
