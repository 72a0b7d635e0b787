"""Protocol "finetune" (paper section 6): the whole encoder plus a two-layer head, entity-level micro-F1.

Each support set is a fine-tuning run of ``nuner_core.token_classifier`` (the finetune stage's
training): a two-layer head (``hidden``, ``dropout``) reads each word's first sub-token and
predicts its IOB2 tag; no dev set, so every epoch runs and the last weights are scored, as
strict IOB2 entity-level micro-F1 on the test set. Seeded: the head's initialisation, dropout
and batch order follow the support set's seed. Runs are short: no training checkpoints.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from nuner_core.evaluation.benchmarks import Benchmark
from nuner_core.evaluation.config import FinetuneProtocolConfig
from nuner_core.evaluation.encoders import EncoderRef
from nuner_core.evaluation.sampling import SupportSet
from nuner_core.iob2.metrics import TypeScore
from nuner_core.token_classifier.config import TrainingConfig
from nuner_core.token_classifier.splits import LabelledSplits
from nuner_core.token_classifier.train import RunSpec, train_run

log = logging.getLogger(__name__)
METRIC = "entity_micro_f1"
STRIDE = 64  # sub-tokens shared by the windows of a sentence longer than max_length (rare in the benchmarks)


class _Silent:
    """No progress lines: the harness reports progress per encoder and benchmark."""

    def update(self, done: int, total: int | None, note: str = "") -> None:
        pass


def training_config(config: FinetuneProtocolConfig, max_length: int, device: str, test_batch: int = 64) -> TrainingConfig:
    """The protocol's runs: its optimisation settings, a two-layer head, every epoch, no checkpoints."""
    return TrainingConfig(
        epochs=config.epochs, lr=config.lr, head_lr=config.head_lr, weight_decay=config.weight_decay, batch_size=config.batch_size,
        warmup_ratio=0.1, grad_clip=1.0, patience=None, head_hidden=config.hidden, dropout=config.dropout,
        max_length=max_length, stride=min(STRIDE, (max_length - 5) // 2), device=device, eval_batch_size=test_batch,
        checkpoints=False,
    )  # fmt: skip


def finetune_and_score(
    ref: EncoderRef, bench: Benchmark, support: SupportSet, config: FinetuneProtocolConfig, seed: int, max_length: int = 512,
    device: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """Fine-tune a fresh copy of the encoder on one support set, then score it on the test set: the run's summary."""
    splits = LabelledSplits(train=[bench.pool.sentences[i] for i in support.indices], dev=[], test=list(bench.test.sentences),
                            types=list(bench.types))  # fmt: skip
    spec = RunSpec(ref.name, ref.location(), seed, ref.init_seed if ref.random_init else None)
    with tempfile.TemporaryDirectory(prefix="nuner-finetune-") as work:
        return train_run(training_config(config, max_length, device), spec, splits, Path(work), _Silent())


def finetune_rows(ref: EncoderRef, bench: Benchmark, supports: dict[tuple[int, int], SupportSet],
                  grid: Sequence[tuple[int, int]], config: FinetuneProtocolConfig, max_length: int, device: str = "cpu") -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for k, seed in grid:
        started = time.perf_counter()
        summary = finetune_and_score(ref, bench, supports[(k, seed)], config, seed, max_length, device=device)
        test = summary["test"]
        seconds = time.perf_counter() - started
        log.info("finetune %s on %s, k=%d seed=%d: %d steps, F1 %.3f (%.0f s)", ref.name, bench.name, k, seed, summary["steps"], test["f1"], seconds)
        rows.append({"k": k, "seed": seed, "metric": METRIC, "value": test["f1"], "per_type": [TypeScore(**t) for t in test["per_type"]],
                     "fit_s": seconds})  # fmt: skip
    return rows
