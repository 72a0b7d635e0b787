"""The pretrain stage: annotated sentences -> ``text_encoder/`` (the product), plus its controls.

Artifact layout::

    text_encoder/ concept_encoder/   save_pretrained models + tokenizers (load with AutoModel)
    dual_encoder.json                similarity, temperature, learned logit bias, pooling, max concept
                                     length, the zero-shot threshold (calibrated on the validation split)
    README.md                        the model card: the run directory is a zero-shot tagger (nuner tag)
    metrics.jsonl                    one row per logged step (train) and per evaluation (val)
    checkpoints/step_XXXXXXXX.pt     the final full training state (hard link to the work dir)
    loss_curve.png
    controls/<name>/...              the same for each control run (annotations destroyed)

Resumable work (step checkpoints, best weights) lives in ``ctx.work_dir``: rerunning a killed
stage continues from the last checkpoint of the run it was in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from nuner_core.dual_encoder.pretrain_artifact import CONCEPT_ENCODER, MAIN_RUN, encoder_dirs, run_dir, run_name
from nuner_core.jsonl import read_json_objects
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.stage_api import (
    Inputs,
    Progress,
    Report,
    StageContext,
    StageError,
    StageResult,
)

CODE_VERSION = "2"  # 2: each run directory is a zero-shot model (calibrated threshold, model card)
INPUT_FILE = "annotated.parquet"


def describe(config: PretrainConfig, inputs: Inputs) -> str:
    """Task-run title, e.g. ``pretrain · roberta-base · 1,484 sentences · cosine · 10 epochs + 1 control(s)``."""
    parts = ["pretrain", config.base_model]
    dataset = inputs.get("dataset")
    if dataset is not None:
        try:
            train = dataset.manifest().get("rows", {}).get("train")
        except (OSError, ValueError):  # not there yet or unreadable: the title is only a title
            train = None
        if isinstance(train, int):
            parts.append(f"{train:,} sentences")
    controls = f" + {len(config.controls)} control(s)" if config.controls else ""
    parts.append(f"{config.similarity} · {config.epochs} epochs{controls}")
    return " · ".join(parts)


class _RunProgress:
    """Maps run ``index`` of ``runs`` (main, then controls) onto one progress bar."""

    def __init__(self, inner: Progress, index: int, runs: int, name: str):
        self.inner, self.index, self.runs, self.name = inner, index, runs, name

    def update(self, done: int, total: int | None, note: str = "") -> None:
        if not total:
            self.inner.update(done, None, f"{self.name}: {note}")
            return
        self.inner.update(self.index * total + done, self.runs * total, f"{self.name} {done:,}/{total:,}: {note}")


def run(ctx: StageContext[PretrainConfig]) -> StageResult:
    # Imported here, not at the top: planning any run imports this module for its key
    # (CODE_VERSION, describe), and torch + transformers would add seconds to every plan.
    from nuner_core.pretraining.launch import run_training
    from nuner_core.pretraining.plots import loss_curve
    from nuner_core.pretraining.train import METRICS
    from nuner_core.pretraining.zero_shot_model import finish_zero_shot_model

    cfg = ctx.config
    if "dataset" not in ctx.inputs:
        raise StageError("the pretrain stage needs a dataset artifact (annotated.parquet)")
    data_path = ctx.inputs["dataset"].dir / INPUT_FILE
    runs = [(run_name(c), c, run_dir(c)) for c in (None, *cfg.controls)]
    summaries: dict[str, dict[str, Any]] = {}
    zero_shot: dict[str, dict[str, Any]] = {}  # run name -> its calibrated tagging threshold and F1
    histories: dict[str, list[dict[str, Any]]] = {}
    for index, (name, control, rel) in enumerate(runs):
        out = ctx.out_dir / rel if rel else ctx.out_dir
        work = ctx.work_dir / (rel or "main")
        out.mkdir(parents=True, exist_ok=True)
        summaries[name] = run_training(cfg, data_path, work, out, control, _RunProgress(ctx.progress, index, len(runs), name))
        shutil.copyfile(work / METRICS, out / METRICS)
        histories[name] = read_json_objects(out / METRICS)
        _link_final_checkpoint(work / "checkpoints", out / "checkpoints")
        zero_shot[name] = finish_zero_shot_model(out, data_path, summaries[name], cfg.base_model, ctx.inputs["dataset"].key)

    loss_curve(histories, ctx.out_dir / "loss_curve.png")
    concept_map = _concept_maps(cfg, ctx)
    main = summaries[MAIN_RUN]
    table = [
        {
            "run": name,
            "steps": s["steps"],
            "tokens_seen": s["tokens_seen"],
            "train_time_s": s["train_time_s"],
            "tokens_per_s": round(s["tokens_per_s"]),
            "final_train_loss": _round(s["final_train_loss"]),
            "final_val_loss": _round(s["final_val_loss"]),
            "best_val_loss": _round(s["best_val_loss"]),
            "exported_step": s["exported_step"],
        }
        for name, s in summaries.items()
    ]
    headline: dict[str, Any] = {
        "steps": main["steps"],
        "tokens_seen": main["tokens_seen"],
        "tokens_per_s": round(main["tokens_per_s"], 1),
        "train_time_s": main["train_time_s"],
        "final_train_loss": main["final_train_loss"],
        "final_val_loss": main["final_val_loss"],
        "best_val_loss": main["best_val_loss"],
        "logit_bias": main["logit_bias"],
    }
    for name, s in summaries.items():
        if name != MAIN_RUN:
            headline[f"{name}_final_val_loss"] = s["final_val_loss"]
    headline["zero_shot_threshold"] = zero_shot[MAIN_RUN]["threshold"]
    headline["zero_shot_validation_f1"] = zero_shot[MAIN_RUN]["f1"]
    return StageResult(
        rows={"train_sentences": main["sentences"]["train"], "validation_sentences": main["sentences"]["validation"], "concepts": main["concepts"]},
        dropped=main["dropped"],
        headline=headline,
        extra={
            "base_model": cfg.base_model,
            "encoders": encoder_dirs(cfg.controls),
            "counts": main["counts"],
            "runs": summaries,
            "zero_shot": zero_shot,
            "concept_map": concept_map,
        },
        reports=[
            Report("image", "pretrain-loss-curve", "Pre-training loss (train and validation)", "loss_curve.png"),
            Report("table", "pretrain-runs", "Pre-training runs (main and controls)", table),
            *(
                Report("image", f"pretrain-concept-map-{name}", f"Concept map ({'before' if name == 'base' else 'after'} pre-training, paper Figure 6)", file)
                for name, file in concept_map.get("files", {}).items()
            ),
        ],
    )


def _concept_maps(cfg: PretrainConfig, ctx: StageContext[PretrainConfig]) -> dict[str, Any]:
    """The concept maps (paper Figure 6) of the base and the trained concept encoder; an extra output."""
    if not cfg.concept_map:
        return {"skipped": "pretrain.concept_map is false"}
    from nuner_core.pretraining.concept_map import MapSettings, concept_maps

    ctx.progress.update(0, None, "drawing the concept maps")
    settings = MapSettings(max_concepts=cfg.concept_map_size, labels=cfg.concept_map_labels, seed=cfg.seed, max_length=cfg.max_concept_length)
    encoders = {"base": cfg.concept_model or cfg.base_model, "trained": str(ctx.out_dir / CONCEPT_ENCODER)}
    from nuner_core.devices import device_name

    device = device_name("auto") if cfg.device in ("auto", "cuda") else "cpu"  # the maps are cheap: never fail for want of a GPU
    return concept_maps(ctx.inputs["dataset"].dir / "concepts.parquet", encoders, ctx.out_dir, settings, device)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def _link_final_checkpoint(src_dir: Path, dst_dir: Path) -> None:
    """Put the final training state into the artifact without copying gigabytes (hard link)."""
    from nuner_core import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(src_dir)
    if latest is None:
        return
    dst_dir.mkdir(parents=True, exist_ok=True)
    target = dst_dir / latest.name
    try:
        os.link(latest, target)
    except OSError:  # another file system: copy
        shutil.copy2(latest, target)
