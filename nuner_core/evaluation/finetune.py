"""Protocol "finetune" (paper section 6): the whole encoder plus a two-layer head, entity-level micro-F1.

The head reads each word's first sub-token and predicts its IOB2 tag; the score is
strict IOB2 entity-level micro-F1 on the test set. Seeded: the head's initialisation,
dropout and batch order follow ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.config import FinetuneConfig
from nuner_core.evaluation.encoders import EncoderRef, load_encoder
from nuner_core.iob2.metrics import entity_micro_f1
from nuner_core.evaluation.sampling import SupportSet

log = logging.getLogger(__name__)
METRIC = "entity_micro_f1"
IGNORE = -100  # label of sub-tokens that are not a word's first, and of special tokens


def tagging_loss(logits, labels):
    """``mean over labelled positions of -log softmax(logits)[label]``; positions labelled -100 are ignored.

    ``logits`` (B, T, L), ``labels`` (B, T).
    """
    import torch.nn.functional as F

    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def build_tagger(encoder, n_labels: int, hidden: int, dropout: float):
    import torch
    from torch import nn

    class Tagger(nn.Module):
        """Encoder + dropout -> Linear(D, H) -> GELU -> dropout -> Linear(H, L)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            width = encoder.config.hidden_size
            self.head = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels)
            )

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
            return self.head(states)  # (B, T, L)

    return Tagger()


def _batch(tokenizer, sentences: Sequence[Sequence[str]], tag_ids: Sequence[Sequence[int]] | None, max_length: int):
    """input_ids, attention_mask (B, T), labels (B, T) at first sub-tokens, and first-sub-token positions per word."""
    import torch

    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length,
                    padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, IGNORE, dtype=torch.long)
    firsts: list[list[int]] = []
    for row in range(len(sentences)):
        first = [-1] * len(sentences[row])
        for position, word in enumerate(enc.word_ids(row)):
            if word is not None and first[word] < 0:
                first[word] = position
                if tag_ids is not None:
                    labels[row, position] = tag_ids[row][word]
        firsts.append(first)
    return enc["input_ids"], enc["attention_mask"], labels, firsts


@dataclass
class FinetuneResult:
    value: float
    per_type: list
    train_s: float
    predict_s: float
    steps: int
    final_loss: float


def finetune_and_score(
    ref: EncoderRef, bench: Benchmark, support: SupportSet, config: FinetuneConfig, seed: int, max_length: int = 512,
    test_batch: int = 64, device: str = "cpu",
) -> FinetuneResult:
    """Fine-tune a fresh copy of the encoder on one support set, then score it on the test set."""
    import torch

    labels = ["O"] + [f"{p}-{t}" for t in bench.types for p in ("B", "I")]
    index = {tag: i for i, tag in enumerate(labels)}
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(ref, device)
    model = build_tagger(encoder, len(labels), config.hidden, config.dropout).to(encoder.device)
    train = [bench.pool.sentences[i] for i in support.indices]
    decay = [p for n, p in model.encoder.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.encoder.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay, "base_lr": config.lr},
            {"params": no_decay, "lr": config.lr, "weight_decay": 0.0, "base_lr": config.lr},
            {"params": list(model.head.parameters()), "lr": config.head_lr, "weight_decay": config.weight_decay, "base_lr": config.head_lr},
        ]
    )
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, total_steps // 10)
    started = time.perf_counter()
    step, loss_value = 0, float("nan")
    model.train()
    for epoch in range(config.epochs if train else 0):
        order = torch.randperm(len(train)).tolist()
        for start in range(0, len(train), config.batch_size):
            # lr: linear warm-up over the first 10% of steps, then linear decay to 0
            scale = (step + 1) / warmup if step < warmup else max(0.0, (total_steps - step) / (total_steps - warmup))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            chunk = [train[i] for i in order[start : start + config.batch_size]]
            ids, mask, target, _ = _batch(tokenizer, [s.tokens for s in chunk], [[index[t] for t in s.tags] for s in chunk], max_length)
            loss = tagging_loss(model(ids.to(encoder.device), mask.to(encoder.device)), target.to(encoder.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            step += 1
        log.debug("finetune %s k=%d seed=%d epoch %d loss %.4f", ref.name, support.k, seed, epoch, loss_value)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    model.eval()
    test = bench.test.sentences
    predicted: list[list[str]] = [[] for _ in test]
    order = sorted(range(len(test)), key=lambda i: len(test[i].tokens))  # similar lengths together: less padding
    with torch.inference_mode():
        for start in range(0, len(order), test_batch):
            rows = order[start : start + test_batch]
            ids, mask, _, firsts = _batch(tokenizer, [test[i].tokens for i in rows], None, max_length)
            best = model(ids.to(encoder.device), mask.to(encoder.device)).argmax(dim=-1).cpu().numpy()  # (B, T)
            for row, i in enumerate(rows):
                predicted[i] = [labels[best[row, p]] if p >= 0 else "O" for p in firsts[row]]
    value, per_type = entity_micro_f1([s.tags for s in test], predicted)
    return FinetuneResult(value, per_type, train_s, time.perf_counter() - started, step, loss_value)


def finetune_rows(ref: EncoderRef, bench: Benchmark, supports: dict[tuple[int, int], SupportSet],
                  grid: Sequence[tuple[int, int]], config: FinetuneConfig, max_length: int, device: str = "cpu") -> list[dict[str, Any]]:
    rows = []
    for k, seed in grid:
        result = finetune_and_score(ref, bench, supports[(k, seed)], config, seed, max_length, device=device)
        log.info("finetune %s on %s, k=%d seed=%d: %d steps, F1 %.3f (%.0f s + %.0f s test)",
                 ref.name, bench.name, k, seed, result.steps, result.value, result.train_s, result.predict_s)
        rows.append({"k": k, "seed": seed, "metric": METRIC, "value": result.value, "per_type": result.per_type,
                     "fit_s": result.train_s + result.predict_s})
    return rows

