"""The data of a dual-encoder adaptation: the user's spans as pre-training examples, replay, and each step's batch.

The user's sentences (words + IOB2 tags) become pre-training ``Example``s: the words joined by
single spaces (``join_words``, as the tagger reads pre-split words) and every gold mention a span
whose concept is its label name, ``normalise_label(type)`` (what the tagger embeds for the label
as the user spells it). Replay sentences are the pretrain dataset's training split, as
pre-training read them. Both are tokenised and batched by pre-training's own code
(``pretraining.data.encode``, ``epoch_micro_batches``, ``targets.collate``).

A step's batch: ``batch_size - replay`` user sentences (the epoch's seeded, length-bucketed
order over the user's data; an epoch is one pass over it) and ``replay = round(replay_share *
batch_size)`` pretrain sentences drawn by a generator seeded with (seed, step); its concept
columns are the concepts annotated in it, **every label name of the user's data** (negatives
where not annotated) and ``negatives`` sampled pretrain concepts. Everything is a function of
(seed, step): a resumed run sees the batches the killed one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nuner_core.dual_encoder.annotated import Example
from nuner_core.iob2.conll import Sentence, mentions
from nuner_core.pretraining.objective import Batch, ConceptVocab, Encoded, Layout, build_vocab, collate, encode, epoch_micro_batches, make_layout
from nuner_core.stage_api import StageError
from nuner_core.tagging import normalise_label
from nuner_core.text.words import join_words

BUCKET_BATCHES = 50  # pre-training's default length bucketing


def user_examples(sentences: Sequence[Sentence], prefix: str) -> list[Example]:
    """Labelled sentences as examples: words joined by spaces, each mention a span of its normalised label name."""
    out = []
    for i, sentence in enumerate(sentences):
        text, spans = join_words(list(sentence.tokens))
        found = tuple((int(spans[first, 0]), int(spans[last - 1, 1]), normalise_label(kind)) for first, last, kind in mentions(sentence.tags))
        out.append(Example(f"{prefix}-{i}", text, found))
    return out


def replay_sample(pool: Sequence[Example], size: int | None, seed: int) -> list[Example]:
    """A seeded sample of ``size`` pretrain sentences with at least one concept (all of them when fewer)."""
    usable = [ex for ex in pool if ex.spans]
    if size is None or len(usable) <= size:
        return usable
    keep = np.sort(np.random.default_rng([seed, 7]).choice(len(usable), size=size, replace=False))
    return [usable[i] for i in keep]


@dataclass
class AdaptData:
    """Tokenised user (first ``n_user`` rows of ``train``) and replay sentences, dev, and the concept vocabulary."""

    train: Encoded
    dev: Encoded
    vocab: ConceptVocab
    n_user: int
    labels: tuple[int, ...]  # vocabulary ids of the user's label names
    negative_pool: np.ndarray  # vocabulary ids of pretrain concepts that are no user label name


def prepare(tokenizer: Any, concept_tokenizer: Any, train: list[Example], dev: list[Example], replay: list[Example],
            label_names: Sequence[str], max_length: int, max_concept_length: int) -> AdaptData:  # fmt: skip
    """Tokenise once; the vocabulary holds every label name, annotated or not, and the replay concepts."""
    named = [Example("labels", "", tuple((0, 1, n) for n in label_names))]  # every label name, even one absent from train
    vocab = build_vocab(concept_tokenizer, [train, dev, replay, named], max_concept_length)
    index = vocab.index()
    labels = tuple(sorted(index[n] for n in set(label_names)))
    negative_pool = np.array(sorted(set(range(len(vocab.names))) - set(labels)), dtype=np.int64)
    return AdaptData(encode(tokenizer, train + replay, vocab, max_length), encode(tokenizer, dev, vocab, max_length), vocab,
                     len(train), labels, negative_pool)  # fmt: skip


@dataclass(frozen=True)
class StepPlan:
    """Which sentences and concepts each optimiser step uses (a pure function of seed and step)."""

    layout: Layout  # over the user's sentences: ``batch_size - replay`` of them per step
    replay: int  # replay sentences per step
    n_replay: int  # replay sentences to draw from
    negatives: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.layout.steps_per_epoch

    def user_batches(self, lengths: np.ndarray, epoch: int) -> list[np.ndarray]:
        return epoch_micro_batches(lengths, self.layout, BUCKET_BATCHES, self.seed, epoch)

    def extras(self, step: int, negative_pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This step's replay rows (offsets into the replay sentences) and sampled negative concepts."""
        rng = np.random.default_rng([self.seed, step, 1])
        replay = rng.choice(self.n_replay, size=min(self.replay, self.n_replay), replace=False) if self.n_replay else np.zeros(0, np.int64)
        k = min(self.negatives, len(negative_pool))
        negatives = rng.choice(negative_pool, size=k, replace=False) if k else np.zeros(0, np.int64)
        return np.sort(replay), np.sort(negatives)


def step_plan(n_user: int, n_replay: int, batch_size: int, replay_share: float, negatives: int, seed: int) -> StepPlan:
    replay = round(replay_share * batch_size) if n_replay else 0
    if replay >= batch_size:
        raise StageError(f"finetune.adapt.replay_share {replay_share} leaves no user sentence in a batch of {batch_size}")
    per_step = min(batch_size - replay, n_user)  # a training set smaller than a batch: all of it each step
    return StepPlan(make_layout(n_user, per_step, None, 1), replay, n_replay, negatives, seed)


def step_batch(data: AdaptData, plan: StepPlan, user_batches: list[np.ndarray], step: int, pad_id: int, concept_pad_id: int) -> Batch:
    """The batch of optimiser ``step`` (``user_batches``: its epoch's ``plan.user_batches``)."""
    within = step % plan.steps_per_epoch
    replay, negatives = plan.extras(step, data.negative_pool)
    rows = np.concatenate([user_batches[within], data.n_user + replay])
    return collate(data.train, rows, data.vocab, pad_id, concept_pad_id, extra_concepts=(*data.labels, *negatives.tolist()))


def dev_batches(data: AdaptData, size: int, pad_id: int, concept_pad_id: int) -> list[Batch]:
    """The dev sentences against every label name of the user's data."""
    order = np.argsort(data.dev.lengths, kind="stable")
    return [collate(data.dev, order[i : i + size], data.vocab, pad_id, concept_pad_id, extra_concepts=data.labels)
            for i in range(0, len(order), size)]  # fmt: skip
