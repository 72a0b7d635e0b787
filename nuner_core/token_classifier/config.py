"""How a token classifier is trained: the optimisation, the windows, the head, how it runs.

Not a stage config: the ``finetune`` stage builds one from its own config
(``FinetuneConfig.training()``), the evaluation's protocol from its grid's settings.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from nuner_core.basemodel import Float, Int, StrictModel


class TrainingConfig(StrictModel):
    # --- optimisation
    epochs: Int = Field(default=20, ge=1)  # passes over the training set (fewer when early stopping ends a run)
    lr: Float = Field(default=5e-5, gt=0)  # AdamW peak learning rate of the encoder
    head_lr: Float = Field(default=1e-3, gt=0)  # AdamW peak learning rate of the freshly initialised head
    weight_decay: Float = Field(default=0.01, ge=0)  # AdamW decoupled weight decay (encoder matrices and the head)
    warmup_ratio: Float = Field(default=0.1, ge=0, lt=1)  # linear warm-up share of all steps, then linear decay to 0
    layer_decay: Float = Field(default=1.0, gt=0, le=1)  # encoder layer i of L (embeddings 0) learns at lr * layer_decay ** (L - i); 1: one rate
    reinit_top_layers: Int = Field(default=0, ge=0)  # the encoder's top this many transformer layers drawn afresh before training
    batch_size: Int = Field(default=8, ge=1)  # windows per optimiser step
    grad_clip: Float | None = Field(default=1.0, gt=0)  # clip the global gradient norm; None: no clipping
    patience: Int | None = Field(default=5, ge=1)  # stop after this many epochs without a better dev F1; None: never
    # --- the model
    head_hidden: Int | None = Field(default=None, ge=1)  # None: a linear head (a plain transformers model); else Linear-GELU-Linear of this width
    dropout: Float | None = Field(default=None, ge=0, lt=1)  # head dropout; None: the encoder config's classifier dropout (linear head only)
    max_length: Int = Field(default=256, ge=8)  # sub-tokens per window, special tokens included; longer sentences span windows
    stride: Int = Field(default=64, ge=0)  # sub-tokens of context shared by consecutive windows of a long sentence
    # --- how it runs
    device: str = "auto"  # auto: cuda when available, else cpu
    eval_batch_size: Int = Field(default=32, ge=1)  # windows per forward when predicting
    checkpoints: bool = True  # the training state after every epoch (and every checkpoint_every steps): a killed run resumes
    checkpoint_every: Int | None = Field(default=None, ge=1)  # steps between extra checkpoints
    log_every: Int = Field(default=5, ge=1)  # steps between metrics.jsonl rows
    num_threads: Int | None = Field(default=None, ge=1)  # torch CPU threads; None: torch's default

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if 2 * self.stride >= self.max_length - 4:
            raise ValueError(f"stride {self.stride} must be less than half of max_length {self.max_length} (minus special tokens)")
        if self.head_hidden is not None and self.dropout is None:
            raise ValueError("a two-layer head (head_hidden) needs its dropout")
        return self
