"""Pre-training stage config: the two-encoder contrastive objective (NuNER paper §3.2-3.3).

Defaults are the paper's settings (roberta-base, lr 3e-5, batch 48, tau 5, bottom 6 of 12
layers frozen, 10 epochs, AdamW (0.9, 0.999, 1e-6), weight decay 0.01, linear schedule with
10% warm-up). Fields declared with ``run_only`` change how the stage runs (device, precision,
process count, micro-batching, logging), not what it learns.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nuner_core.basemodel import Float, Int, StrictModel, run_only

Similarity = Literal["cosine", "dot"]
Control = Literal["shuffle_concepts", "random_spans"]



class PretrainConfig(StrictModel):
    # --- model
    base_model: str = "roberta-base"  # text encoder: hub id, local directory or pypi:<package>
    concept_model: str | None = None  # concept encoder; None: the same base as the text encoder
    similarity: Similarity = "cosine"  # cosine: logit = tau * cos(h, c) + b; dot: logit = h.c / tau + b
    temperature: Float = Field(default=5.0, gt=0)  # the paper's tau
    learnable_bias: bool = True  # a learnable scalar logit bias b (SigLIP); False: b = 0, fixed
    bias_init: Float = -5.0  # initial b: strongly negative, the prior of a rare positive
    bias_lr: Float = Field(default=1e-2, gt=0)  # AdamW learning rate of b (one scalar: it can move fast)
    freeze_layers: Int = Field(default=6, ge=0)  # text encoder: embeddings + this many bottom layers frozen
    max_length: Int = Field(default=128, ge=8)  # text tokens per sentence; longer ones are truncated and counted
    max_concept_length: Int = Field(default=16, ge=2)  # tokens per concept name
    # --- optimisation
    lr: Float = Field(default=3e-5, gt=0)  # AdamW peak learning rate
    betas: tuple[Float, Float] = (0.9, 0.999)  # AdamW betas
    eps: Float = Field(default=1e-6, gt=0)  # AdamW epsilon
    weight_decay: Float = Field(default=0.01, ge=0)  # AdamW decoupled weight decay (not on biases, norms, b)
    warmup_ratio: Float = Field(default=0.1, ge=0, lt=1)  # linear warm-up share of all steps, then linear decay to 0
    batch_size: Int = Field(default=48, ge=1)  # sentences per optimiser step, over all processes
    epochs: Int = Field(default=10, ge=1)  # passes over the training split
    max_steps: Int | None = Field(default=None, ge=1)  # stop after this many optimiser steps (None: all epochs)
    grad_clip: Float | None = Field(default=1.0, gt=0)  # clip the global gradient norm; None: no clipping
    seed: Int = 0  # initialisation of b, data order, dropout
    bucket_batches: Int = Field(default=50, ge=1)  # length bucketing: sort windows of this many micro-batches
    # --- validation, checkpoints, product
    eval_every: Int | None = Field(default=None, ge=1)  # validation every N steps; None: every epoch
    export: Literal["best", "last"] = "best"  # which weights become text_encoder/: lowest validation loss or final
    controls: tuple[Control, ...] = ()  # extra runs on destroyed annotations, saved under controls/<name>/
    # --- how it runs (not part of the artifact key)
    device: str = run_only("auto")  # auto: cuda when available, else cpu
    # auto: bf16 on CUDA, fp32 on CPU. Out of the key on purpose, like `device`: the key names the
    # recipe, and "auto" would give one key to bf16 and fp32 runs anyway. The weights differ in the
    # last bits (as across GPU models); the manifest records which precision ran ("bf16").
    precision: Literal["auto", "bf16", "fp32"] = run_only("auto")
    compile: bool = run_only(False)  # torch.compile the model
    nproc: Int = run_only(1, ge=1)  # >1: the stage launches torchrun with this many processes
    micro_batch_size: Int | None = run_only(None, ge=1)  # per process forward; None: batch/nproc
    checkpoint_every: Int = run_only(200, ge=1)  # steps between resumable checkpoints
    keep_checkpoints: Int = run_only(2, ge=1)  # step checkpoints kept in the work dir
    log_every: Int = run_only(10, ge=1)  # steps between metrics.jsonl rows
    num_threads: Int | None = run_only(None, ge=1)  # CPU threads per process; None: torch's default
    # --- the concept map (paper Figure 6): an extra picture of the trained weights, so not part of the key
    concept_map: bool = run_only(True)  # draw the base and trained concept maps after training
    concept_map_size: Int = run_only(50_000, ge=1)  # most frequent concepts on the map
    concept_map_labels: Int = run_only(40, ge=0)  # most frequent concepts labelled on it

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if len(set(self.controls)) != len(self.controls):
            raise ValueError(f"controls {list(self.controls)} name a control twice")
        return self
