"""The training loop: one function, read top to bottom, in nanoGPT's order.

    setup: data, model, optimiser, schedule; resume from the latest checkpoint if there is one
    loop:  1 learning rate   (the schedule, stepped once per optimiser step)
           2 evaluate / save (validation loss, best weights, a step-numbered checkpoint)
           3 micro-steps     (forward, loss, backward; gradients synced on the last one only)
           4 clip, step, zero
           5 log             (loss, lr, tokens/s, memory -> metrics.jsonl, progress)
    export: text_encoder/ and concept_encoder/ with save_pretrained and their tokenizers

The same function runs in one process or in each of torchrun's processes (DDP); only rank 0
writes files. Every file of a run lives in ``work_dir`` (checkpoints, best weights,
metrics.jsonl, summary.json) except the exported model directories in ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nuner_core import checkpoint as ckpt
from nuner_core.devices import autocast as bf16_autocast
from nuner_core.devices import pad_id as pad_id_of
from nuner_core.devices import resolve_device, uses_bf16
from nuner_core.dual_encoder.annotated import load_annotated
from nuner_core.dual_encoder.pretrain_artifact import CONCEPT_ENCODER, DUAL_ENCODER_FILE, TEXT_ENCODER
from nuner_core.pretraining import distributed
from nuner_core.pretraining.build import build_model
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.controls import destroy
from nuner_core.pretraining.data import (
    build_vocab,
    encode,
    epoch_micro_batches,
    eval_micro_batches,
    make_layout,
)
from nuner_core.pretraining.loss import concept_bce
from nuner_core.pretraining.targets import collate
from nuner_core.schedule import linear_schedule
from nuner_core.stage_api import LogProgress, Progress, StageError
from nuner_core.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST = "best.pt"


def param_groups(model: torch.nn.Module, cfg: PretrainConfig) -> list[dict[str, Any]]:
    """Weight decay on matrices only; the logit bias b gets its own learning rate and no decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    bias: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (bias if name == "logit_bias" else decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if bias:
        groups.append({"params": bias, "weight_decay": 0.0, "lr": cfg.bias_lr})
    return groups


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CUDA and, from torch 2.4 on, on CPU."""
    fused = device.type == "cuda" or (device.type == "cpu" and tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4))
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def pick_device(cfg: PretrainConfig, d: distributed.Dist) -> torch.device:
    device = resolve_device(cfg.device, d.local_rank if d.enabled else None)
    if device.type == "cuda" and device.index is not None:  # a DDP rank's own GPU; set_device refuses a bare "cuda" (ValueError)
        torch.cuda.set_device(device)
    return device


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return float(psutil.Process().memory_info().rss) / 2**20


def train(
    cfg: PretrainConfig,
    data_path: Path,
    work_dir: Path,
    out_dir: Path,
    control: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train one encoder pair (the real one, or a control) and export it; returns the run summary."""
    started = time.time()
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    progress = progress or LogProgress("pretrain")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    d = distributed.setup(resolve_device(cfg.device).type)
    device = pick_device(cfg, d)
    bf16 = uses_bf16(cfg.precision, device)
    autocast = bf16_autocast(device, bf16)

    # ---- data: read, (destroy for a control), tokenise once, lay out micro-batches
    data = load_annotated(Path(data_path))
    if control:
        data = destroy(data, control, cfg.seed)
    tokenizer = load_tokenizer(cfg.base_model)
    concept_tokenizer = load_tokenizer(cfg.concept_model) if cfg.concept_model else tokenizer
    vocab = build_vocab(concept_tokenizer, [data.train, data.validation], cfg.max_concept_length)
    train_set = encode(tokenizer, data.train, vocab, cfg.max_length)
    val_set = encode(tokenizer, data.validation, vocab, cfg.max_length)
    pad_id, concept_pad_id = pad_id_of(tokenizer), pad_id_of(concept_tokenizer)
    layout = make_layout(len(train_set), cfg.batch_size, cfg.micro_batch_size, d.world)
    lengths = train_set.lengths
    total_steps = layout.steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    eval_every = cfg.eval_every or layout.steps_per_epoch
    val_batches = eval_micro_batches(val_set.lengths, layout.micro_batch_size, d.rank, d.world)

    # ---- model, optimiser, schedule (same seed on every rank: identical initial weights)
    torch.manual_seed(cfg.seed)
    model, counts = build_model(cfg, "sdpa")
    model.to(device)
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(cfg.warmup_ratio * total_steps), total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling; kept for fp16 and uniform checkpoints
    state: dict[str, Any] = {"step": 0, "tokens": 0, "train_time_s": 0.0, "best_val": math.inf, "best_step": None, "history": []}
    torch.manual_seed(cfg.seed + d.rank)  # dropout differs per rank

    # ---- resume: everything an exact continuation needs
    ckpt_dir = work_dir / "checkpoints"
    latest = ckpt.latest_checkpoint(ckpt_dir)
    resumed_at: int | None = None
    if latest is not None:
        saved = ckpt.load(latest)
        if saved["layout"] != vars(layout) | {"world": saved["layout"]["world"]} or saved["total_steps"] != total_steps:
            raise StageError(
                f"{latest}: written for a different data layout {saved['layout']} / {saved['total_steps']} steps; "
                f"now {vars(layout)} / {total_steps}; delete {ckpt_dir} to start over"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"][d.rank % len(saved["rng"])])
        state = saved["state"]
        resumed_at = state["step"]
        log.info("resuming %s from %s (step %d of %d)", control or "main run", latest, resumed_at, total_steps)
    if d.master:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in state["history"]))

    ddp: DDP | None = None  # the model wrapped for data parallelism; forward through it when there is one
    if cfg.compile:  # in place: the state dict keeps its keys, the concept groups stay plain Python
        model.text_encoder.compile(dynamic=True)
        model.concept_encoder.compile(dynamic=True)
    if d.enabled:  # buffers (position ids) are constants: nothing to broadcast before each forward
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    params = [p for p in model.parameters() if p.requires_grad]

    def record(row: dict[str, Any]) -> None:
        state["history"].append(row)
        if d.master:
            with open(work_dir / METRICS, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    @torch.no_grad()
    def validation_loss() -> float | None:
        """Mean BCE over every validation entry; each rank its share, no collective but the sum."""
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of loss x entries, entries]
        for idx in val_batches:
            batch = collate(val_set, idx, vocab, pad_id, concept_pad_id).to(device)
            with autocast:
                logits = model(batch.text_ids, batch.text_mask, batch.concept_ids, batch.concept_mask, batch.concept_groups)
            n = batch.token_mask.sum() * batch.concept_valid.sum()
            total += torch.stack([concept_bce(logits, batch.targets, batch.token_mask, batch.concept_valid) * n, n.to(total)])
        distributed.all_sum(total, d)
        model.train()
        return None if total[1] == 0 else float(total[0] / total[1])

    def save(step: int) -> None:
        rngs = distributed.all_gather_objects(ckpt.rng_state(), d)
        if d.master:
            ckpt.save_checkpoint(
                ckpt_dir,
                step,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rngs,
                    "layout": vars(layout),
                    "total_steps": total_steps,
                    "state": state,
                },
                keep=cfg.keep_checkpoints,
            )
        distributed.barrier(d)

    # ---- the loop
    model.train()
    step = state["step"]
    epoch_cache: tuple[int, list[np.ndarray]] = (-1, [])
    pending = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of step losses, steps] since the last row
    pending_tokens, pending_time = 0, 0.0
    first_bad = torch.zeros((), dtype=torch.long, device=device)  # the first step with a non-finite loss (0: none); its row stops the run
    while True:
        # 1. learning rate: LambdaLR set it for this step when it was last stepped
        lr = scheduler.get_last_lr()[0]
        last = step == total_steps

        # 2. evaluate, keep the best weights, checkpoint (not again at the step we resumed from)
        if step != resumed_at and (step % eval_every == 0 or last) and len(val_set):
            val = validation_loss()
            record({"kind": "val", "step": step, "epoch": step / layout.steps_per_epoch, "loss": val})
            if val is not None and val < state["best_val"]:
                state["best_val"], state["best_step"] = val, step
                if d.master:
                    ckpt.save_atomic(model.state_dict(), work_dir / BEST)
        if step != resumed_at and step > 0 and (step % cfg.checkpoint_every == 0 or last):
            save(step)
        if last:
            break

        # 3. micro-steps: this rank's share of the step's micro-batches
        t0 = time.perf_counter()
        epoch, within = divmod(step, layout.steps_per_epoch)
        if epoch_cache[0] != epoch:
            epoch_cache = (epoch, epoch_micro_batches(lengths, layout, cfg.bucket_batches, cfg.seed, epoch))
        group = epoch_cache[1][within * layout.group : (within + 1) * layout.group]
        mine = group[d.rank :: d.world]  # (accum,) micro-batches of sentence indices
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        for micro, idx in enumerate(mine):
            batch = collate(train_set, idx, vocab, pad_id, concept_pad_id).to(device)
            sync = micro == len(mine) - 1
            with ddp.no_sync() if ddp is not None and not sync else nullcontext():
                with autocast:
                    logits = (ddp or model)(batch.text_ids, batch.text_mask, batch.concept_ids, batch.concept_mask, batch.concept_groups)  # (B, T, C)
                loss = concept_bce(logits, batch.targets, batch.token_mask, batch.concept_valid) / len(mine)
                torch.autograd.backward(loss)
            step_loss += loss.detach()
            pending_tokens += batch.num_tokens

        # 4. clip, step, zero
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["step"] = step
        pending += torch.stack([step_loss, torch.ones_like(step_loss)])
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(step_loss), step, first_bad)  # on the device: no sync per step
        pending_time += time.perf_counter() - t0

        # 5. log: mean over ranks and steps since the last row
        if step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or step == total_steps:
            if device.type == "cuda":  # the GPU may still be working on queued steps: count that time too
                t1 = time.perf_counter()
                torch.cuda.synchronize(device)
                pending_time += time.perf_counter() - t1
            sums = distributed.all_sum(torch.cat([pending, torch.tensor([pending_tokens], dtype=torch.float64, device=device)]), d)
            loss_mean = float(sums[0] / sums[1])
            if not math.isfinite(loss_mean):  # checked before every checkpoint: NaN weights never reach one
                at = int(first_bad) or f"{step} or before"  # under DDP another rank may have seen it first
                raise StageError(f"pre-training {control or 'main run'}: the training loss is {loss_mean} at step {at} of {total_steps}; training "
                                 f"stopped, its last checkpoint kept (a diverging run: try a lower pretrain.lr, or pretrain.grad_clip)")  # fmt: skip
            tokens = int(sums[2])
            state["tokens"] += tokens
            state["train_time_s"] += pending_time
            row = {
                "kind": "train",
                "step": step,
                "total_steps": total_steps,
                "epoch": step / layout.steps_per_epoch,
                "loss": loss_mean,
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "logit_bias": model.logit_bias.item(),
                "tokens": state["tokens"],
                "tokens_per_s": tokens / max(pending_time, 1e-9),
                "memory_mb": memory_mb(device),
            }
            record(row)
            progress.update(step, total_steps, f"loss {loss_mean:.4f} · {row['tokens_per_s']:,.0f} tok/s")
            pending.zero_()
            pending_tokens, pending_time = 0, 0.0

    # ---- export (rank 0): the best (lowest validation loss) or the last weights
    if cfg.export == "best" and state["best_step"] is not None and (work_dir / BEST).is_file():
        model.load_state_dict(ckpt.load(work_dir / BEST))
        exported_step = state["best_step"]
    else:
        exported_step = step
    train_rows = [r for r in state["history"] if r["kind"] == "train"]
    val_rows = [r for r in state["history"] if r["kind"] == "val" and r["loss"] is not None]
    summary = {
        "control": control,
        "steps": step,
        "epochs": cfg.epochs if not cfg.max_steps else round(step / layout.steps_per_epoch, 3),
        "steps_per_epoch": layout.steps_per_epoch,
        "exported_step": exported_step,
        "tokens_seen": state["tokens"],
        "train_time_s": round(state["train_time_s"], 3),
        "wall_s_this_process": round(time.time() - started, 3),
        "tokens_per_s": state["tokens"] / max(state["train_time_s"], 1e-9),
        "final_train_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_val_loss": val_rows[-1]["loss"] if val_rows else None,
        "best_val_loss": None if state["best_step"] is None else state["best_val"],
        "best_step": state["best_step"],
        "logit_bias": model.logit_bias.item(),
        "world_size": d.world,
        "micro_batch_size": layout.micro_batch_size,
        "grad_accum": layout.accum,
        "device": str(device),
        "bf16": bf16,
        "resumed_from_step": resumed_at,
        "sentences": {"train": len(train_set), "validation": len(val_set)},
        "concepts": len(vocab.names),
        "dropped": dict(data.dropped),
        "counts": {
            "train_sentences_truncated": train_set.truncated,
            "validation_sentences_truncated": val_set.truncated,
            "spans_cut_by_truncation": train_set.spans_cut + val_set.spans_cut,
            "concept_names_truncated": vocab.truncated,
            "train_sentences_skipped_per_epoch": layout.skipped_per_epoch,
        },
        **counts,
    }
    if d.master:
        for name, encoder, tok in (
            (TEXT_ENCODER, model.text_encoder, tokenizer),
            (CONCEPT_ENCODER, model.concept_encoder, concept_tokenizer),
        ):
            encoder.save_pretrained(out_dir / name)
            tok.save_pretrained(out_dir / name)
        (out_dir / DUAL_ENCODER_FILE).write_text(
            json.dumps(
                {"similarity": cfg.similarity, "temperature": cfg.temperature, "logit_bias": model.logit_bias.item(), "pooling": "mean",
                 "max_concept_length": cfg.max_concept_length},
                indent=2,
            )
        )
        (work_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    distributed.barrier(d)
    distributed.teardown(d)
    return summary
