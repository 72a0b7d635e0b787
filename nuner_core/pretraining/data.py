"""Annotated sentences (``nuner_core.dual_encoder.annotated``) in, tokenised examples and length-bucketed micro-batches out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from nuner_core.dual_encoder.annotated import Example
from nuner_core.stage_api import StageError

# ---------------------------------------------------------------- tokenised examples


@dataclass
class Encoded:
    """One split, tokenised once. ``spans`` hold concept ids into ``ConceptVocab``."""

    input_ids: list[np.ndarray]  # per sentence (T_i,) int64
    offsets: list[np.ndarray]  # per sentence (T_i, 2) character offsets, (0, 0) for special tokens
    special: list[np.ndarray]  # per sentence (T_i,) bool
    spans: list[list[tuple[int, int, int]]]  # per sentence [(start, end, concept_id)]
    truncated: int = 0  # sentences longer than max_length, cut
    spans_cut: int = 0  # spans that end beyond the kept text (of truncated sentences)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ConceptVocab:
    names: list[str]  # concept id -> name
    input_ids: list[np.ndarray]  # concept id -> (L_c,) token ids of the name
    truncated: int = 0  # names longer than max_concept_length tokens

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def build_vocab(tokenizer: Any, splits: list[list[Example]], max_length: int) -> ConceptVocab:
    names = sorted({c for examples in splits for ex in examples for _, _, c in ex.spans})
    if not names:
        return ConceptVocab(names=[], input_ids=[])
    enc = tokenizer(names, truncation=True, max_length=max_length, return_overflowing_tokens=True)
    rows = enc["overflow_to_sample_mapping"]
    ids: list[np.ndarray | None] = [None] * len(names)
    for row, sample in enumerate(rows):
        if ids[sample] is None:  # later rows of a sample are overflow windows
            ids[sample] = np.asarray(enc["input_ids"][row], dtype=np.int64)
    truncated = sum(n > 1 for n in Counter(rows).values())
    return ConceptVocab(names=names, input_ids=ids, truncated=truncated)  # type: ignore[arg-type]


def encode(tokenizer: Any, examples: list[Example], vocab: ConceptVocab, max_length: int, chunk: int = 10_000) -> Encoded:
    """Tokenise with character offsets; sentences longer than ``max_length`` are truncated and counted."""
    index = vocab.index()
    out = Encoded(input_ids=[], offsets=[], special=[], spans=[])
    for lo in range(0, len(examples), chunk):
        part = examples[lo : lo + chunk]
        enc = tokenizer(
            [ex.text for ex in part],
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        rows = enc["overflow_to_sample_mapping"]
        seen: set[int] = set()
        for row, sample in enumerate(rows):
            if sample in seen:  # an overflow window: the sentence was truncated
                continue
            seen.add(sample)
            ex = part[sample]
            offsets = np.asarray(enc["offset_mapping"][row], dtype=np.int64).reshape(-1, 2)
            out.input_ids.append(np.asarray(enc["input_ids"][row], dtype=np.int64))
            out.offsets.append(offsets)
            out.special.append(np.asarray(enc["special_tokens_mask"][row], dtype=bool))
            out.spans.append([(s, e, index[c]) for s, e, c in ex.spans])
            if row + 1 < len(rows) and rows[row + 1] == sample:
                out.truncated += 1
                kept_end = int(offsets[:, 1].max(initial=0))
                out.spans_cut += sum(e > kept_end for _, e, _ in ex.spans)
    return out


# ---------------------------------------------------------------- batches


@dataclass(frozen=True)
class Layout:
    """How micro-batches map onto optimiser steps and processes.

    Each optimiser step consumes ``group = accum * world`` consecutive micro-batches of the
    epoch's list; process ``rank`` takes ``rank, rank + world, ...`` of them. The layout depends
    only on (sentences, micro-batch size, batch size), so the data position is the step number,
    whatever the number of processes.
    """

    num_sentences: int
    micro_batch_size: int
    batch_size: int
    world: int

    @property
    def group(self) -> int:
        return self.batch_size // self.micro_batch_size

    @property
    def accum(self) -> int:
        return self.group // self.world

    @property
    def steps_per_epoch(self) -> int:
        return (self.num_sentences // self.micro_batch_size) // self.group

    @property
    def skipped_per_epoch(self) -> int:
        """Sentences that do not fill a whole optimiser step (different ones every epoch)."""
        return self.num_sentences - self.steps_per_epoch * self.batch_size


def make_layout(num_sentences: int, batch_size: int, micro_batch_size: int | None, world: int) -> Layout:
    micro = micro_batch_size or max(1, batch_size // world)
    if batch_size % (micro * world):
        raise StageError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro} x {world} process(es); "
            "pick a micro_batch_size that divides batch_size / nproc"
        )
    layout = Layout(num_sentences, micro, batch_size, world)
    if layout.steps_per_epoch == 0:
        raise StageError(
            f"the training split has {num_sentences} sentence(s), fewer than one batch of {batch_size}; "
            "lower pretrain.batch_size or provide more data"
        )
    return layout


def epoch_micro_batches(lengths: np.ndarray, layout: Layout, bucket_batches: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's micro-batches (sentence indices), length-bucketed, in a seeded random order.

    Shuffle all sentences, sort windows of ``bucket_batches`` micro-batches by length (little
    padding), cut them into micro-batches, shuffle those; keep what fills whole steps.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    micro = layout.micro_batch_size
    window = micro * bucket_batches
    batches: list[np.ndarray] = []
    for lo in range(0, len(order) - micro + 1, window):
        chunk = order[lo : lo + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + micro] for i in range(0, len(chunk) - micro + 1, micro))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches[: layout.steps_per_epoch * layout.group]


def eval_micro_batches(lengths: np.ndarray, micro: int, rank: int, world: int) -> list[np.ndarray]:
    """Validation: every sentence once, sorted by length, this process's share."""
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + micro] for i in range(0, len(order), micro)]
    return batches[rank::world]
