"""One dual-encoder adaptation run (one starting pair, one seed): pre-training's objective on the user's spans, with replay.

    setup: the pair (a tagger directory, or a base encoder as both encoders), examples, vocabulary,
           optimiser (pre-training's parameter groups) and schedule; resume from the latest checkpoint
    loop:  1 learning rate   2 at each epoch's end: dev loss, best weights, early stopping; a checkpoint
           3 forward, pre-training's loss (``concept_bce``), backward   4 clip, step, zero   5 log
    end:   the selected weights (lowest dev loss; the last without dev) as a tagger whose threshold is
           re-calibrated on the **dev split only**, scored on test

Files, resume and kill-safety are the token-classifier run's (``token_classifier.train``):
``checkpoints/step_*.pt``, ``best/step_*.pt``, ``metrics.jsonl``, ``summary.json`` written last.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from nuner_core import checkpoint as ckpt
from nuner_core.devices import pad_id as pad_id_of
from nuner_core.devices import resolve_device
from nuner_core.dual_encoder.annotated import Example
from nuner_core.dual_encoder.model import DualEncoder, load_encoder
from nuner_core.finetuning.adapt_data import AdaptData, dev_batches, prepare, step_batch, step_plan
from nuner_core.finetuning.config import FinetuneConfig
from nuner_core.models import resolve_model
from nuner_core.pretraining.objective import Batch, PretrainConfig, concept_bce, freeze, freeze_unused_pooler, make_optimizer
from nuner_core.schedule import linear_schedule
from nuner_core.stage_api import LogProgress, Progress, StageError
from nuner_core.tagging import DualEncoderSettings
from nuner_core.token_classifier.train import BEST_DIR, METRICS, SUMMARY, _prune_best, _write_json_atomic
from nuner_core.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from nuner_core.tagging import ZeroShotTagger

log = logging.getLogger(__name__)

BASE_BIAS_INIT = PretrainConfig.model_fields["bias_init"].default  # a base pair starts as pre-training starts


@dataclass(frozen=True)
class PairSpec:
    name: str  # "nuner" or "base"
    source: str  # a tagger directory ("tagger"), or an encoder reference used as both encoders ("encoder")
    kind: Literal["tagger", "encoder"]
    seed: int


@dataclass
class Pair:
    model: DualEncoder
    tokenizer: Any
    concept_tokenizer: Any
    settings: DualEncoderSettings  # the starting settings (threshold: the starting one, if any)


def load_pair(spec: PairSpec, like: DualEncoderSettings | None = None) -> Pair:
    """The starting pair: a tagger directory as saved, or a base encoder as both encoders with ``like``'s similarity and tau."""
    if spec.kind == "tagger":
        from nuner_core.tagging import ZeroShotTagger

        tagger = ZeroShotTagger.from_pretrained(spec.source, device="cpu")
        return Pair(tagger.model, tagger.tokenizer, tagger.concept_tokenizer, tagger.settings)
    if like is None:
        raise ValueError("a base pair takes its similarity and temperature from the adapted tagger's settings")
    location = resolve_model(spec.source)
    model = DualEncoder(load_encoder(location), load_encoder(location), like.similarity, like.temperature, True, BASE_BIAS_INIT)
    tokenizer = load_tokenizer(location)
    settings = DualEncoderSettings(like.similarity, like.temperature, BASE_BIAS_INIT, max_concept_length=like.max_concept_length)
    return Pair(model, tokenizer, tokenizer, settings)


def as_tagger(pair: Pair, threshold: float | None, device: torch.device) -> ZeroShotTagger:
    """The pair's current weights as a tagger (in memory), with ``threshold`` and the learned bias."""
    from nuner_core.tagging import ZeroShotTagger

    settings = replace(pair.settings, logit_bias=float(pair.model.logit_bias.item()), threshold=threshold)
    return ZeroShotTagger(pair.model, pair.tokenizer, pair.concept_tokenizer, settings, device=device)


def _optimizer(pair: Pair, cfg: FinetuneConfig, device: torch.device) -> torch.optim.AdamW:
    """Pre-training's AdamW and parameter groups (decay on matrices; the bias its own rate), at this config's rates."""
    recipe = PretrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, bias_lr=cfg.adapt.bias_lr)
    return make_optimizer(pair.model, recipe, device)


def batch_loss(model: DualEncoder, batch: Batch) -> torch.Tensor:
    logits = model(batch.text_ids, batch.text_mask, batch.concept_ids, batch.concept_mask, batch.concept_groups)  # (B, T, C)
    return concept_bce(logits, batch.targets, batch.token_mask, batch.concept_valid)


@torch.no_grad()
def mean_loss(model: DualEncoder, batches: list[Batch], device: torch.device) -> float | None:
    """Mean BCE over every (token, concept) entry of ``batches``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        n = int(batch.token_mask.sum()) * int(batch.concept_valid.sum())
        total += float(batch_loss(model, batch.to(device))) * n
        count += n
    model.train(was_training)
    return total / count if count else None


def adapt_run(cfg: FinetuneConfig, spec: PairSpec, train: list[Example], dev: list[Example], replay: list[Example],
              label_names: list[str], work_dir: Path, progress: Progress | None = None,
              like: DualEncoderSettings | None = None) -> tuple[dict[str, Any], Pair]:  # fmt: skip
    """Adapt ``spec``'s pair (resuming if a checkpoint exists); returns the summary and the pair with its selected weights."""
    work_dir = Path(work_dir)
    started = time.time()
    progress = progress or LogProgress(f"finetune {spec.name} seed {spec.seed}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    pair = load_pair(spec, like)
    freeze(pair.model.text_encoder, cfg.adapt.freeze_layers)
    freeze_unused_pooler(pair.model.text_encoder)
    freeze_unused_pooler(pair.model.concept_encoder)
    pair.model.to(device)
    if (work_dir / SUMMARY).is_file():  # finished before: its selected weights
        finished: dict[str, Any] = json.loads((work_dir / SUMMARY).read_text())
        pair.model.load_state_dict(ckpt.load(work_dir / finished["weights"]))
        return finished, pair

    data = prepare(pair.tokenizer, pair.concept_tokenizer, train, dev, replay, label_names, cfg.max_length, pair.settings.max_concept_length)
    plan = step_plan(data.n_user, len(data.train) - data.n_user, cfg.batch_size, cfg.adapt.replay_share, cfg.adapt.negatives, spec.seed)
    total_steps = plan.steps_per_epoch * cfg.epochs
    layout = {"user": data.n_user, "replay_pool": len(data.train) - data.n_user, "batch_size": cfg.batch_size, "replay": plan.replay,
              "steps_per_epoch": plan.steps_per_epoch, "total_steps": total_steps, "labels": label_names}  # fmt: skip
    pad_id, concept_pad_id = pad_id_of(pair.tokenizer), pad_id_of(pair.concept_tokenizer)
    dev_set = dev_batches(data, cfg.eval_batch_size, pad_id, concept_pad_id) if dev else []

    torch.manual_seed(spec.seed)
    optimizer = _optimizer(pair, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(cfg.warmup_ratio * total_steps), total_steps))
    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None, "bad_epochs": 0, "stopped_early": False, "train_time_s": 0.0,
                             "history": []}  # fmt: skip
    ckpt_dir, best_dir = work_dir / "checkpoints", work_dir / BEST_DIR
    latest = ckpt.latest_checkpoint(ckpt_dir)
    resumed_at: int | None = None
    if latest is not None:
        state = ckpt.resume(latest, layout, pair.model, optimizer, scheduler, work_dir)
        resumed_at = state["step"]
        log.info("resuming %s seed %d from %s (step %d of %d)", spec.name, spec.seed, latest, resumed_at, total_steps)
    _prune_best(best_dir, state["best_step"])
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in state["history"]))
    state = _loop(cfg, spec, pair, data, plan, dev_set, optimizer, scheduler, state, resumed_at, layout, work_dir, progress, device)

    step = state["step"]
    selected = state["best_step"] if state["best_step"] is not None else step
    if state["best_step"] is None:  # no dev set: the last weights
        ckpt.save_atomic(pair.model.state_dict(), best_dir / f"step_{step:08d}.pt")
    pair.model.load_state_dict(ckpt.load(best_dir / f"step_{selected:08d}.pt"))
    summary = {
        "name": spec.name, "seed": spec.seed, "start": spec.source, "steps": step, "total_steps": total_steps,
        "steps_per_epoch": plan.steps_per_epoch, "epochs_run": step / plan.steps_per_epoch, "stopped_early": state["stopped_early"],
        "selected_step": selected, "weights": f"{BEST_DIR}/step_{selected:08d}.pt",
        "dev_loss": None if state["best"] is None else state["best"], "replay_per_batch": plan.replay,
        "user_per_batch": plan.layout.micro_batch_size, "replay_pool": layout["replay_pool"], "concepts": len(data.vocab.names),
        "train_time_s": round(state["train_time_s"], 3), "wall_s_this_process": round(time.time() - started, 3),
        "resumed_from_step": resumed_at, "device": str(device), "logit_bias": float(pair.model.logit_bias.item()),
    }  # fmt: skip
    _write_json_atomic(work_dir / SUMMARY, summary)
    for path in ckpt.list_checkpoints(ckpt_dir):
        path.unlink()
    progress.update(total_steps, total_steps, f"{spec.name} seed {spec.seed}: done")
    return summary, pair


def _loop(cfg: FinetuneConfig, spec: PairSpec, pair: Pair, data: AdaptData, plan: Any, dev_set: list[Batch], optimizer: torch.optim.Optimizer,
          scheduler: Any, state: dict[str, Any], resumed_at: int | None, layout: dict[str, Any], work_dir: Path, progress: Progress,
          device: torch.device) -> dict[str, Any]:  # fmt: skip
    """The training loop (the module docstring's steps 1-5); returns the final state."""
    model, ckpt_dir, best_dir = pair.model, work_dir / "checkpoints", work_dir / BEST_DIR
    steps_per_epoch, total_steps = plan.steps_per_epoch, layout["total_steps"]
    pad_id, concept_pad_id = pad_id_of(pair.tokenizer), pad_id_of(pair.concept_tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]

    def record(row: dict[str, Any]) -> None:
        row = {"run": spec.name, "seed": spec.seed, **row}
        state["history"].append(row)
        with open(work_dir / METRICS, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    model.train()
    step = state["step"]
    epoch_cache: tuple[int, list[np.ndarray]] = (-1, [])
    pending_loss, pending_steps, pending_time = 0.0, 0, 0.0
    while True:
        lr = scheduler.get_last_lr()[0]
        epoch_end = step > 0 and step % steps_per_epoch == 0
        if step != resumed_at and epoch_end and dev_set:
            dev_loss = mean_loss(model, dev_set, device)
            record({"kind": "dev", "step": step, "epoch": step // steps_per_epoch, "loss": dev_loss, "f1": None})
            if dev_loss is not None and (state["best"] is None or dev_loss < state["best"]):
                state.update(best=dev_loss, best_step=step, bad_epochs=0)
                ckpt.save_atomic(model.state_dict(), best_dir / f"step_{step:08d}.pt")
            else:
                state["bad_epochs"] += 1
                state["stopped_early"] = cfg.patience is not None and state["bad_epochs"] >= cfg.patience and step < total_steps
        done = step == total_steps or state["stopped_early"]
        if step != resumed_at and step > 0 and (epoch_end or done or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):
            ckpt.save_checkpoint(ckpt_dir, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                  "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(), "layout": layout,
                                                  "state": state}, keep=1)  # fmt: skip
            _prune_best(best_dir, state["best_step"])
        if done:
            return state

        t0 = time.perf_counter()
        epoch = step // steps_per_epoch
        if epoch_cache[0] != epoch:
            epoch_cache = (epoch, plan.user_batches(data.train.lengths[: data.n_user], epoch))
        batch = step_batch(data, plan, epoch_cache[1], step, pad_id, concept_pad_id).to(device)
        loss = batch_loss(model, batch)
        torch.autograd.backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["step"] = step
        value = loss.item()
        if not math.isfinite(value):
            raise StageError(f"adapting {spec.name} seed {spec.seed}: the training loss is {value} at step {step} of {total_steps}; "
                             "training stopped, its last checkpoint kept (try a lower finetune.lr)")  # fmt: skip
        pending_loss, pending_steps, pending_time = pending_loss + value, pending_steps + 1, pending_time + time.perf_counter() - t0
        if step % cfg.log_every == 0 or step % steps_per_epoch == 0:
            state["train_time_s"] += pending_time
            record({"kind": "train", "step": step, "total_steps": total_steps, "epoch": step / steps_per_epoch,
                    "loss": pending_loss / pending_steps, "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm)})  # fmt: skip
            progress.update(step, total_steps, f"{spec.name} seed {spec.seed}: loss {pending_loss / pending_steps:.4f}")
            pending_loss, pending_steps, pending_time = 0.0, 0, 0.0
