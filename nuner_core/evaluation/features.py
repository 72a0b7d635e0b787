"""Word features of a frozen encoder, computed once and cached on disk.

A word is represented by its first sub-token's hidden state: the last layer, or the last
layer concatenated with an earlier one. Features are cached per (encoder identity, split
fingerprint, layers, max length) as shards of sentences, so a grid of k x seeds costs one
encoding pass, a later run (a new seed, a new k, a new benchmark, a new encoder) encodes
only the sentences it has not seen, and an unchanged encoder is never loaded again.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from nuner_core.devices import pad_id
from nuner_core.hashing import short_hash
from nuner_core.stage_api import StageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

FEATURE_VERSION = "1"  # bump when the same encoder and sentences would give different features


@dataclass
class EncodeStats:
    sentences: int = 0  # sentences encoded (cache misses)
    cached_sentences: int = 0  # sentences read from the cache
    words: int = 0
    words_truncated: int = 0  # beyond max_length sub-tokens: zero features
    words_without_subtoken: int = 0  # the tokenizer produced nothing for them: zero features
    seconds: float = 0.0  # time spent encoding (model forward passes and tokenization)

    def add(self, other: "EncodeStats") -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


def encode_words(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    layers: tuple[int, ...],
    max_length: int = 512,
    batch_tokens: int = 4096,
    stats: EncodeStats | None = None,
) -> list[np.ndarray]:
    """Per sentence, a (n_words, D * len(layers)) float32 array of first-sub-token states."""
    import torch

    stats = stats if stats is not None else EncodeStats()
    started = time.perf_counter()
    encoded = tokenizer([list(s) for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    pad = pad_id(tokenizer)
    out: list[np.ndarray | None] = [None] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:  # longest-last; a batch holds at most batch_tokens padded sub-tokens
        if batches and (len(batches[-1]) + 1) * lengths[i] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = torch.tensor(encoded["input_ids"][i])
                mask[row, : lengths[i]] = 1
            hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
            bad = [layer for layer in layers if not -len(hidden) <= layer < len(hidden)]
            if bad:
                raise StageError(
                    f"layer(s) {bad} do not exist: the encoder has {len(hidden)} hidden states "
                    f"(embeddings + {len(hidden) - 1} layers; indices -{len(hidden)}..{len(hidden) - 1})"
                )
            states = torch.cat([hidden[layer] for layer in layers], dim=-1).float().cpu()  # (B, T, D * L)
            for row, i in enumerate(batch):
                n_words = len(sentences[i])
                first = _first_subtokens(encoded.word_ids(i), n_words)  # (n_words,), -1 where none
                feats = np.zeros((n_words, states.shape[-1]), dtype=np.float32)
                have = first >= 0
                feats[have] = states[row, first[have]].numpy()
                last_seen = max((w for w in encoded.word_ids(i) if w is not None), default=-1)
                missing = np.flatnonzero(~have)
                stats.words_truncated += int((missing > last_seen).sum())
                stats.words_without_subtoken += int((missing <= last_seen).sum())
                stats.words += n_words
                out[i] = feats
    stats.sentences += len(sentences)
    stats.seconds += time.perf_counter() - started
    return out  # type: ignore[return-value]


def _first_subtokens(word_ids: Sequence[int | None], n_words: int) -> np.ndarray:
    first = np.full(n_words, -1, dtype=np.int64)
    for position, word in enumerate(word_ids):
        if word is not None and first[word] < 0:
            first[word] = position
    return first


class FeatureCache:
    """Word features of one (encoder, split, layers, max length): shards of ``ids``, ``lengths``, ``features``."""

    def __init__(self, root: Path, encoder_id: str, split_fingerprint: str, layers: tuple[int, ...], max_length: int):
        key = short_hash(json.dumps([FEATURE_VERSION, list(layers), max_length]), 12)
        self.dir = Path(root) / "features" / encoder_id / f"{split_fingerprint}-{key}"

    def load(self) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        if not self.dir.is_dir():
            return found
        for shard in sorted(self.dir.glob("*.npz")):
            with np.load(shard) as data:
                ids, lengths, feats = data["ids"], data["lengths"], data["features"]
            for i, start, length in zip(ids.tolist(), np.cumsum(lengths) - lengths, lengths.tolist()):
                found[i] = feats[start : start + length]
        return found

    def save(self, features: dict[int, np.ndarray]) -> None:
        """Add a shard (written to a temporary name, then renamed: a crash leaves no half shard)."""
        if not features:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = np.array(sorted(features), dtype=np.int64)
        lengths = np.array([len(features[i]) for i in ids], dtype=np.int64)
        stacked = np.concatenate([features[i] for i in ids]).astype(np.float32)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        part = self.dir / f".{name}.part.npz"
        np.savez(part, ids=ids, lengths=lengths, features=stacked)
        os.replace(part, self.dir / f"{name}.npz")


def cached_features(
    cache: FeatureCache,
    sentences: Sequence[Sequence[str]],
    wanted: Sequence[int],
    encode: Callable[[list[Sequence[str]], EncodeStats], list[np.ndarray]],
    stats: EncodeStats,
) -> dict[int, np.ndarray]:
    """Features of the ``wanted`` sentence indices: from the cache, encoding (and saving) only the missing ones."""
    have = cache.load()
    missing = sorted(set(wanted) - set(have))
    stats.cached_sentences += len(set(wanted)) - len(missing)
    if missing:
        fresh = dict(zip(missing, encode([sentences[i] for i in missing], stats)))
        cache.save(fresh)
        have.update(fresh)
    return {i: have[i] for i in wanted}
