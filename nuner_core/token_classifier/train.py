"""One fine-tuning run (one encoder, one seed): the training loop, read top to bottom, in nanoGPT's order.

    setup: windows of train/dev/test, model, optimiser, schedule; resume from the latest checkpoint
    loop:  1 learning rate    (the schedule, stepped once per optimiser step)
           2 evaluate / save  (at each epoch's end: dev entity F1, best weights, early stopping; a checkpoint)
           3 forward, loss, backward
           4 clip, step, zero
           5 log              (loss, lr, windows/s -> metrics.jsonl, progress)
    end:   the selected weights (best dev F1, or the last when there is no dev set) scored on test

Everything a run writes lives in its ``work_dir``: ``checkpoints/step_*.pt`` (model, optimiser,
scheduler, RNG, data position, early-stopping state and history; atomic), ``best/step_*.pt``
(the selected weights, named by step so a kill between writing them and the checkpoint that
refers to them cannot mix two runs' states), ``metrics.jsonl`` and ``summary.json`` (written
last: a run that has one is finished and is not trained again). With ``checkpoints`` off (short
runs, e.g. the evaluation's protocol) no training state is written and a killed run starts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nuner_core import checkpoint as ckpt
from nuner_core.devices import pad_id as pad_id_of
from nuner_core.devices import resolve_device
from nuner_core.iob2.conll import Sentence
from nuner_core.iob2.metrics import TypeScore, entity_micro_f1
from nuner_core.schedule import linear_schedule
from nuner_core.stage_api import LogProgress, Progress, StageError
from nuner_core.token_classifier.config import TrainingConfig
from nuner_core.token_classifier.model import (
    EncodeCounts,
    Window,
    WordPredictions,
    build_model,
    collate,
    encode_windows,
    predict_words,
    token_loss,
)  # fmt: skip
from nuner_core.token_classifier.recipe import param_groups, reinit_top_blocks
from nuner_core.token_classifier.splits import LabelledSplits
from nuner_core.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST_DIR = "best"


@dataclass(frozen=True)
class RunSpec:
    name: str  # which encoder, e.g. "nuner" or "base"
    location: str  # a directory or hub id from_pretrained accepts
    seed: int  # head initialisation, dropout, batch order
    init_seed: int | None = None  # the encoder's weights freshly initialised from this seed (a sanity floor); None: pretrained


def tags_of(pred: WordPredictions, labels: Sequence[str]) -> list[list[str]]:
    """IOB2 tags per word; a word the model never read (no sub-token) is ``O``."""
    return [[labels[i] if i >= 0 else "O" for i in sentence] for sentence in pred.label_ids]


def score(gold: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Strict IOB2 entity-level micro-F1 (exact span and type), its precision and recall, per-type scores."""
    f1, per_type = entity_micro_f1([s.tags for s in gold], predicted)
    tp = sum(round(s.recall * s.support) for s in per_type)
    gold_n, pred_n = sum(s.support for s in per_type), sum(s.predicted for s in per_type)
    return {
        "f1": f1,
        "precision": tp / pred_n if pred_n else 0.0,
        "recall": tp / gold_n if gold_n else 0.0,
        "per_type": [_type_row(s) for s in per_type],
    }


def _type_row(s: TypeScore) -> dict[str, Any]:
    return {"type": s.type, "precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support, "predicted": s.predicted}


def train_run(
    cfg: TrainingConfig, spec: RunSpec, data: LabelledSplits, work_dir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Fine-tune ``spec.location`` on ``data`` with ``spec.seed`` (resuming if a checkpoint exists); returns the summary."""
    work_dir = Path(work_dir)
    if (work_dir / SUMMARY).is_file():
        finished: dict[str, Any] = json.loads((work_dir / SUMMARY).read_text())  # finished before
        return finished
    started = time.time()
    progress = progress or LogProgress(f"finetune {spec.name} seed {spec.seed}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)

    # ---- data: words -> windows with first-sub-token labels
    labels = data.labels
    label_id = {label: i for i, label in enumerate(labels)}
    tokenizer = load_tokenizer(spec.location, pre_split_words=True)
    pad_id = pad_id_of(tokenizer)
    counts = {split: EncodeCounts() for split in ("train", "dev", "test")}

    def windows(split: str, sentences: list[Sentence]) -> list[Window]:
        tags = [[label_id[t] for t in s.tags] for s in sentences]
        return encode_windows(tokenizer, [s.tokens for s in sentences], cfg.max_length, cfg.stride, tags, counts[split])

    train_set, dev_set, test_set = windows("train", data.train), windows("dev", data.dev), windows("test", data.test)
    if not train_set:
        raise StageError(f"fine-tuning {spec.name} seed {spec.seed}: the training data holds no sentence")
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    layout = {"train_windows": len(train_set), "batch_size": cfg.batch_size, "steps_per_epoch": steps_per_epoch,
              "total_steps": total_steps, "labels": labels}  # fmt: skip

    # ---- model, optimiser, schedule
    model = build_model(spec.location, labels, spec.seed, cfg.dropout, cfg.head_hidden, spec.init_seed).to(device)
    reinit_top_blocks(model.base_model, cfg.reinit_top_layers)  # drawn after the head, from the same seeded RNG stream
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.999), eps=1e-8, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(cfg.warmup_ratio * total_steps), total_steps))
    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None, "bad_epochs": 0, "stopped_early": False,
                             "train_time_s": 0.0, "history": []}  # fmt: skip
    torch.manual_seed(spec.seed)  # dropout

    # ---- resume: everything an exact continuation needs
    ckpt_dir, best_dir = work_dir / "checkpoints", work_dir / BEST_DIR
    latest = ckpt.latest_checkpoint(ckpt_dir)
    resumed_at: int | None = None
    if latest is not None and cfg.checkpoints:
        state = ckpt.resume(latest, layout, model, optimizer, scheduler, work_dir)
        resumed_at = state["step"]
        log.info("resuming %s seed %d from %s (step %d of %d)", spec.name, spec.seed, latest, resumed_at, total_steps)
    _prune_best(best_dir, state["best_step"])  # best weights a killed run wrote after its last checkpoint
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in state["history"]))

    def record(row: dict[str, Any]) -> None:
        row = {"run": spec.name, "seed": spec.seed, **row}
        state["history"].append(row)
        with open(work_dir / METRICS, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def save(step: int) -> None:
        ckpt.save_checkpoint(
            ckpt_dir, step,
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": ckpt.rng_state(), "layout": layout, "state": state},
            keep=1,
        )  # fmt: skip

    # ---- the loop
    model.train()
    step = state["step"]
    pending_loss, pending_steps, pending_windows, pending_time = 0.0, 0, 0, 0.0
    while True:
        # 1. learning rate: LambdaLR set it for this step when it was last stepped
        lr = scheduler.get_last_lr()[0]
        epoch_end = step > 0 and step % steps_per_epoch == 0

        # 2. at each epoch's end: dev F1, the best weights, early stopping; then a checkpoint
        if step != resumed_at and epoch_end and dev_set:
            pred = predict_words(model, dev_set, [len(s.tokens) for s in data.dev], pad_id, cfg.eval_batch_size)
            dev = score(data.dev, tags_of(pred, labels))
            record({"kind": "dev", "step": step, "epoch": step // steps_per_epoch, "loss": pred.loss, "f1": dev["f1"],
                    "precision": dev["precision"], "recall": dev["recall"]})  # fmt: skip
            key = (dev["f1"], -(pred.loss or 0.0))  # a better F1, or the same F1 at a lower dev loss
            if state["best"] is None or key > tuple(state["best"]):
                state.update(best=list(key), best_step=step, bad_epochs=0)
                ckpt.save_atomic(model.state_dict(), best_dir / f"step_{step:08d}.pt")
            else:
                state["bad_epochs"] += 1
                state["stopped_early"] = cfg.patience is not None and state["bad_epochs"] >= cfg.patience and step < total_steps
        done = step == total_steps or state["stopped_early"]
        if step != resumed_at and step > 0 and (epoch_end or done or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):
            if cfg.checkpoints:
                save(step)
            _prune_best(best_dir, state["best_step"])  # only now: the checkpoint refers to the new best weights
        if done:
            break

        # 3. forward, loss, backward on this step's windows (a seeded permutation per epoch: the data position is the step)
        t0 = time.perf_counter()
        epoch, within = divmod(step, steps_per_epoch)
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(train_set))
        batch = collate([train_set[i] for i in order[within * cfg.batch_size : (within + 1) * cfg.batch_size]], pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, L)
        loss = token_loss(logits, batch["labels"])
        loss.backward()  # type: ignore[no-untyped-call]

        # 4. clip, step, zero
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["step"] = step
        loss_value = loss.item()
        if not math.isfinite(loss_value):  # NaN weights now: stop before they reach a checkpoint or the best weights
            raise StageError(f"fine-tuning {spec.name} seed {spec.seed}: the training loss is {loss_value} at step {step} of {total_steps}; "
                             f"training stopped, its last checkpoint kept (a diverging run: try lower learning rates or gradient clipping)")  # fmt: skip
        pending_loss += loss_value
        pending_steps += 1
        pending_windows += len(batch["input_ids"])
        pending_time += time.perf_counter() - t0

        # 5. log
        if step % cfg.log_every == 0 or step % steps_per_epoch == 0:
            state["train_time_s"] += pending_time
            record({"kind": "train", "step": step, "total_steps": total_steps, "epoch": step / steps_per_epoch,
                    "loss": pending_loss / pending_steps, "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm),
                    "windows_per_s": pending_windows / max(pending_time, 1e-9)})  # fmt: skip
            progress.update(step, total_steps, f"{spec.name} seed {spec.seed}: loss {pending_loss / pending_steps:.4f}")
            pending_loss, pending_steps, pending_windows, pending_time = 0.0, 0, 0, 0.0

    # ---- the selected weights, scored on test
    if state["best_step"] is not None:
        model.load_state_dict(ckpt.load(best_dir / f"step_{state['best_step']:08d}.pt"))
        selected = state["best_step"]
    else:  # no dev set: the last weights
        selected = step
        ckpt.save_atomic(model.state_dict(), best_dir / f"step_{step:08d}.pt")
    test = None
    if test_set:
        pred = predict_words(model, test_set, [len(s.tokens) for s in data.test], pad_id, cfg.eval_batch_size)
        test = score(data.test, tags_of(pred, labels)) | {"loss": pred.loss}
    dev_rows = [r for r in state["history"] if r["kind"] == "dev"]
    best_dev = next((r for r in dev_rows if r["step"] == state["best_step"]), None)
    summary = {
        "name": spec.name,
        "seed": spec.seed,
        "encoder": spec.location,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": step / steps_per_epoch,
        "stopped_early": state["stopped_early"],
        "selected_step": selected,
        "weights": f"{BEST_DIR}/step_{selected:08d}.pt",
        "dev_f1": None if best_dev is None else best_dev["f1"],
        "dev_loss": None if best_dev is None else best_dev["loss"],
        "test": test,
        "train_time_s": round(state["train_time_s"], 3),
        "wall_s_this_process": round(time.time() - started, 3),
        "resumed_from_step": resumed_at,
        "device": str(device),
        "windows": {split: c.as_dict() for split, c in counts.items()},
    }
    _write_json_atomic(work_dir / SUMMARY, summary)
    for path in ckpt.list_checkpoints(ckpt_dir):  # finished: the training state is no longer needed
        path.unlink()
    progress.update(total_steps, total_steps, f"{spec.name} seed {spec.seed}: done")
    return summary


def load_selected(spec: RunSpec, labels: Sequence[str], work_dir: Path, summary: dict[str, Any], cfg: TrainingConfig) -> Any:
    """The run's selected weights in a fresh model (CPU)."""
    model = build_model(spec.location, labels, spec.seed, cfg.dropout, cfg.head_hidden, spec.init_seed)
    model.load_state_dict(ckpt.load(Path(work_dir) / summary["weights"]))
    return model.eval()


def _prune_best(best_dir: Path, keep: int | None) -> None:
    """Remove every best-weights file but the one of step ``keep``."""
    for path in ckpt.list_checkpoints(best_dir):
        if keep is None or path.name != f"step_{keep:08d}.pt":
            path.unlink()


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(payload, indent=2))
    os.replace(part, path)
