"""Word vectors against label vectors: pre-training's logits, term for term, for batches of words.

A word's vector is the text encoder's last hidden state at its first sub-token; the logit is
tau * cos(h, c) + b (cosine) or h . c / tau + b (dot), the probability sigmoid(logit)
(``nuner_core.dual_encoder.model.DualEncoder.forward``; a test checks these against it). A
batch of M words against C labels is one (M, D) x (D, C) product, in row blocks that keep
(rows x labels) bounded, and for the best label the argmax is taken on the device.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nuner_core.devices import autocast
from nuner_core.tagging.plan import Plan, Segment
from nuner_core.tagging.settings import DualEncoderSettings

MAX_LOGITS = 1 << 24  # (words x labels) entries scored at once: 64 MiB of fp32
Best = tuple[np.ndarray, np.ndarray]  # per text: (n_words,) best label index, (n_words,) its probability


def logits(vectors: torch.Tensor, matrix: torch.Tensor, settings: DualEncoderSettings, bias: torch.Tensor) -> torch.Tensor:
    """(M, D) word vectors x (C, D) label vectors -> (M, C): tau*cos + b, or h.c/tau + b (both already prepared)."""
    scale = settings.temperature if settings.similarity == "cosine" else 1.0 / settings.temperature
    return torch.addmm(bias.float().expand(1, 1), vectors, matrix.T, alpha=scale)


def word_vectors(
    encoder: nn.Module, plan: Plan, device: torch.device, bf16: bool, settings: DualEncoderSettings
) -> Iterator[tuple[torch.Tensor, list[Segment]]]:
    """Per batch of the plan: (M, D) fp32 word vectors (normalised for cosine) and where each text's words are."""
    for batch in plan.batches:
        ids, mask = plan.tensors(batch)  # (B, T)
        with autocast(device, bf16):
            h = encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, D)
        rows, cols, segments = plan.segments(batch)
        vectors = h[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)].float()  # (M, D)
        if settings.similarity == "cosine":
            vectors = F.normalize(vectors, dim=-1)
        plan.stats.encoder_batches += 1
        yield vectors, segments


def _blocks(vectors: torch.Tensor, matrix: torch.Tensor, settings: DualEncoderSettings, bias: torch.Tensor) -> Iterator[torch.Tensor]:
    step = max(1, MAX_LOGITS // max(1, matrix.shape[0]))
    for r in range(0, vectors.shape[0], step):
        yield logits(vectors[r : r + step], matrix, settings, bias)  # (m, C)


def score_best(
    vectors: torch.Tensor, segments: list[Segment], matrix: torch.Tensor, settings: DualEncoderSettings, bias: torch.Tensor,
    out: list[Best],
) -> None:  # fmt: skip
    """Each word's best label and its probability, into ``out`` (per text of the chunk)."""
    best, prob = [], []
    for block in _blocks(vectors, matrix, settings, bias):
        top, arg = block.max(dim=1)
        best.append(arg.cpu().numpy())
        prob.append(torch.sigmoid(top).cpu().numpy())
    b = np.concatenate(best) if best else np.zeros(0, dtype=np.int64)
    p = np.concatenate(prob) if prob else np.zeros(0, dtype=np.float32)
    for text, words, r0, r1 in segments:
        out[text][0][words] = b[r0:r1]
        out[text][1][words] = p[r0:r1]


def score_all(
    vectors: torch.Tensor, segments: list[Segment], matrix: torch.Tensor, settings: DualEncoderSettings, bias: torch.Tensor,
    out: list[np.ndarray],
) -> None:  # fmt: skip
    """Every word's probability for every label, into ``out`` (per text of the chunk, (n_words, C))."""
    parts = [torch.sigmoid(block).cpu().numpy() for block in _blocks(vectors, matrix, settings, bias)]
    probs = np.concatenate(parts) if parts else np.zeros((0, matrix.shape[0]), dtype=np.float32)
    for text, words, r0, r1 in segments:
        out[text][words] = probs[r0:r1]
