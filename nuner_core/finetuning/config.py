"""Finetune stage config: the user's labelled data, which encoders, and how to train them.

The product is a ``transformers`` token classifier (whole encoder + linear head, IOB2 labels)
trained from the NuNER encoder, scored beside the same fine-tuning of its base encoder; or, with
``method: dual_encoder``, the zero-shot tagger itself adapted to the user's labels (``adapt``).
Fields declared with ``run_only`` change how the stage runs, not what it produces.

The dual-encoder fields (``method``, ``retention_benchmarks``, ``adapt``) came after token-classifier
artifacts existed: they are left out of the config's dump, and so of the artifact key, while
``method`` is ``token_classifier`` (they do nothing then), so those artifacts keep their keys.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from nuner_core.basemodel import Float, Int, StrictModel, added, run_only
from nuner_core.token_classifier.config import TrainingConfig


class FilesData(StrictModel):
    kind: Literal["files"] = "files"
    train: str  # labelled training file: CoNLL/BIO, or JSON lines {"text", "entities": [{"start", "end", "label"}]}
    dev: str | None = None  # early stopping and model selection on its entity F1; None: all epochs, last weights
    test: str | None = None  # scored once at the end with the selected weights; None: no test score
    format: Literal["auto", "conll", "jsonl"] = "auto"  # auto: *.jsonl and *.json are JSON lines, anything else CoNLL/BIO


class BenchmarkData(StrictModel):
    kind: Literal["benchmark"] = "benchmark"
    name: str  # a registry benchmark (nuner_core.evaluation.benchmarks.REGISTRY), e.g. mit_restaurant
    k: Int = Field(default=16, ge=1)  # entity mentions per type of the k~2k support set that becomes the training set
    sampling_seed: Int = 0  # which support set (the evaluation's sampling index, base seed 0: the same sentences)
    dev_size: Int = Field(default=200, ge=1)  # dev sentences drawn from the pool, outside the support set
    test_size: Int | None = Field(default=500, ge=1)  # seeded subsample of the test split; None: all of it
    subsample_seed: Int = 0  # seed of the dev and test subsamples


DataSource = Annotated[Union[FilesData, BenchmarkData], Field(discriminator="kind")]


class AdaptConfig(StrictModel):
    """``method: dual_encoder`` only: continue the pre-training objective on the user's spans, with replay."""

    replay_share: Float = Field(default=0.5, ge=0, lt=1)  # share of each batch drawn from the pretrain dataset's training sentences
    replay_pool: Int | None = Field(default=20_000, ge=1)  # a seeded sample of that many pretrain sentences to replay from; None: all
    negatives: Int = Field(default=16, ge=0)  # pretrain concepts sampled per batch as extra negatives (besides the data set's other labels)
    freeze_layers: Int = Field(default=0, ge=0)  # text encoder: embeddings + this many bottom layers frozen (0: all trained)
    bias_lr: Float = Field(default=1e-2, gt=0)  # AdamW learning rate of the logit bias b (pre-training's)
    retention_test_size: Int | None = Field(default=300, ge=1)  # test sentences per retention benchmark (seeded subsample); None: all


class FinetuneConfig(StrictModel):
    # dual_encoder: adapt the zero-shot tagger (see adapt)
    method: Literal["token_classifier", "dual_encoder"] = added("token_classifier", legacy="token_classifier")
    # --- data
    data: DataSource | None = None  # the labelled data; None: not configured (the stage refuses to run)
    span_repair: Literal["snap", "reject"] = "snap"  # JSON-lines spans off word boundaries: snapped to the words they touch, or rejected (counted either way)
    # --- encoders
    encoder: str | None = None  # start from: None = the pretrain artifact's text encoder; else a local directory, pypi:<package> or hub id
    compare_base: bool = True  # also fine-tune the base encoder on the same data and seeds, scored beside it
    base: str | None = None  # that base: None = the pretrain artifact's base_model (must be set when encoder is)
    # --- optimisation
    seeds: tuple[Int, ...] = (0, 1, 2)  # one run per seed and encoder: head initialisation, dropout, batch order
    epochs: Int = Field(default=20, ge=1)  # passes over the training set (fewer when early stopping ends a run)
    lr: Float = Field(default=1e-4, gt=0)  # AdamW peak learning rate of the encoder (5e-5 until issue 23: NuNER fell behind its base at it)
    head_lr: Float = Field(default=1e-3, gt=0)  # AdamW peak learning rate of the freshly initialised classifier head
    weight_decay: Float = Field(default=0.01, ge=0)  # AdamW decoupled weight decay (matrices only)
    warmup_ratio: Float = Field(default=0.1, ge=0, lt=1)  # linear warm-up share of all steps, then linear decay to 0
    layer_decay: Float = added(1.0, legacy=1.0, gt=0, le=1)  # encoder layer i of L (embeddings 0) learns at lr * layer_decay ** (L - i); 1: one rate
    reinit_top_layers: Int = added(0, legacy=0, ge=0)  # the encoder's top this many transformer layers drawn afresh before training
    batch_size: Int = Field(default=8, ge=1)  # windows (sentences, or parts of long ones) per optimiser step
    grad_clip: Float | None = Field(default=1.0, gt=0)  # clip the global gradient norm; None: no clipping
    dropout: Float | None = Field(default=None, ge=0, lt=1)  # classifier dropout; None: the encoder config's
    patience: Int | None = Field(default=5, ge=1)  # stop after this many epochs without a better dev F1 (ties: lower dev loss); None: never
    max_length: Int = Field(default=256, ge=8)  # sub-tokens per window, special tokens included; longer sentences span windows
    stride: Int = Field(default=64, ge=0)  # sub-tokens of context shared by consecutive windows of a long sentence or text
    # --- dual_encoder only (added fields: out of the key at their defaults, so token-classifier keys stay what they were)
    # zero-shot F1 before/after on these; None: the evaluation's defaults but the training one
    retention_benchmarks: tuple[str, ...] | None = added(None, legacy=None)
    adapt: AdaptConfig = added(AdaptConfig(), legacy=AdaptConfig())
    # --- product
    export_onnx: bool = False  # also write model/model.onnx, checked against the PyTorch logits on test (or dev) sentences
    onnx_tolerance: Float = Field(default=1e-3, gt=0)  # largest absolute logit difference ONNX vs PyTorch accepted
    # --- how it runs (not part of the artifact key)
    device: str = run_only("auto")  # auto: cuda when available, else cpu
    eval_batch_size: Int = run_only(32, ge=1)  # windows per forward when predicting
    checkpoint_every: Int | None = run_only(None, ge=1)  # steps between extra checkpoints (one follows every epoch)
    log_every: Int = run_only(5, ge=1)  # steps between metrics.jsonl rows
    num_threads: Int | None = run_only(None, ge=1)  # torch CPU threads; None: torch's default

    def training(self) -> TrainingConfig:
        """How each run trains: this config's fields of the same names (a linear head, resumable runs)."""
        return TrainingConfig(**{name: getattr(self, name) for name in TrainingConfig.model_fields if name in type(self).model_fields})

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {list(self.seeds)} name a seed twice")
        if 2 * self.stride >= self.max_length - 4:
            raise ValueError(f"stride {self.stride} must be less than half of max_length {self.max_length} (minus special tokens)")
        if self.encoder is not None and self.compare_base and self.base is None:
            raise ValueError(
                "encoder is set, so the base to compare with cannot come from the pretrain artifact: "
                "set base (e.g. the encoder's base model) or compare_base=false"
            )
        if self.method == "dual_encoder" and self.export_onnx:
            raise ValueError("export_onnx is for the token classifier; export an adapted tagger with `nuner export-model --onnx`")
        return self
