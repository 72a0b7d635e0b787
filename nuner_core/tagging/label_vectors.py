"""The label side of tagging: label names as concept vectors, cached per label string.

A label is tokenised like a concept name (``build_vocab``: the concept tokenizer with its
special tokens, truncated to ``max_concept_length`` tokens) and its vector is ``mean_pool`` of
the concept encoder's last hidden states over all of its tokens, special ones included. A
fixed label set costs one concept-encoder pass; the last set is kept ready to score.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nuner_core.devices import autocast, pad_id
from nuner_core.dual_encoder.model import mean_pool
from nuner_core.tagging.label_cache import DEFAULT_MAX_LABELS, LabelCache
from nuner_core.tagging.plan import TagStats, concept_batches, concept_token_ids, pad_rows
from nuner_core.tagging.settings import DualEncoderSettings


class LabelVectors:
    """Concept vectors of label names on ``device``: a cache per label string, and the last label set as a matrix."""

    def __init__(
        self, encoder: nn.Module, tokenizer: Any, settings: DualEncoderSettings, device: torch.device, bf16: bool, batch_size: int,
        stats: TagStats, max_labels: int = DEFAULT_MAX_LABELS,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.bf16 = bf16
        self.batch_size = batch_size
        self.stats = stats
        self.pad_id = pad_id(tokenizer)
        self.cache: LabelCache[torch.Tensor] = LabelCache(stats, max_labels)  # label -> (D,) fp32 concept vector, on device
        self._matrix: tuple[tuple[str, ...], torch.Tensor] | None = None  # the last label set, ready to score

    def vectors(self, labels: list[str]) -> torch.Tensor:
        """(C, D) fp32 concept vectors (mean-pooled, not normalised), from the cache or one pass."""
        return torch.stack(self.cache.lookup(labels, self.embed))

    def matrix(self, labels: list[str]) -> torch.Tensor:
        """(C, D) label vectors ready to score (normalised for cosine); the last label set is kept."""
        key = tuple(labels)
        if self._matrix is not None and self._matrix[0] == key:
            self.stats.label_cache_hits += len(labels)
        else:
            matrix = self.vectors(labels)  # (C, D)
            if self.settings.similarity == "cosine":
                matrix = F.normalize(matrix, dim=-1)
            self._matrix = (key, matrix)
        return self._matrix[1]

    def clear(self) -> None:
        self.cache.clear()
        self._matrix = None

    def embed(self, missing: list[str]) -> dict[str, torch.Tensor]:
        """Concept vectors of ``missing`` (distinct labels): length-sorted batches, one forward pass each."""
        fresh: dict[str, torch.Tensor] = {}
        ids = concept_token_ids(self.tokenizer, missing, self.settings.max_concept_length, self.stats)
        with torch.inference_mode():
            for part in concept_batches(ids, self.batch_size):
                c_ids, c_mask = (torch.from_numpy(a) for a in pad_rows([ids[i] for i in part], self.pad_id))  # (C, L)
                c_ids, c_mask = c_ids.to(self.device), c_mask.to(self.device)
                with autocast(self.device, self.bf16):
                    hc = self.encoder(input_ids=c_ids, attention_mask=c_mask).last_hidden_state  # (C, L, D)
                vectors = mean_pool(hc, c_mask).float()  # (C, D)
                for r, i in enumerate(part):
                    fresh[missing[i]] = vectors[r].clone()
                self.stats.concept_batches += 1
        return fresh
