"""Each run of a pretrain artifact as a zero-shot tagger a user can hand on.

After training, every run directory (the main run and each control) already holds both
encoders and ``dual_encoder.json``; this adds what makes it a model: the tagging threshold,
calibrated on the dataset's validation split (the LLM's own held-out annotations, never a
benchmark), and a model card (``README.md``). ``nuner tag`` and the evaluation's
``zero_shot`` protocol read the threshold from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nuner_core.stage_api import Progress


def finish_zero_shot_model(
    run_dir: Path, annotated: Path, summary: dict[str, Any], base_model: str, dataset_key: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Calibrate and store the threshold, write the model card; return the calibration's headline."""
    from nuner_core.tagging import CARD_FILE, ModelCard, ZeroShotTagger, calibrate_threshold, render_model_card, write_threshold

    tagger = ZeroShotTagger.from_pretrained(run_dir)
    calibration = calibrate_threshold(tagger, annotated, progress=progress)
    settings = write_threshold(run_dir, calibration.threshold)
    headline = {
        "threshold": calibration.threshold,
        "f1": round(calibration.f1, 4),
        "precision": round(calibration.precision, 4),
        "recall": round(calibration.recall, 4),
        "validation_sentences": calibration.sentences,
        "labels": calibration.labels,
        "per_concept": calibration.per_concept,  # frequent concepts' own optima: a record, not used unless passed
    }
    sentences = summary["sentences"]
    card = ModelCard(
        base_model=base_model,
        training_data=(
            f"{sentences['train']:,} LLM-annotated sentences ({summary['concepts']:,} concepts) of dataset artifact "
            f"{dataset_key}; {sentences['validation']:,} held out for validation"
        ),
        training={
            "steps": summary["steps"],
            "tokens seen": summary["tokens_seen"],
            "final validation loss": summary["final_val_loss"],
            "learned logit bias": summary["logit_bias"],
        },
        calibration=headline,
        notes=(
            "The threshold maximises word-level F1 on the pre-training validation split: the LLM's own "
            "annotations, not a benchmark. Scores are small by design (the learned bias is strongly negative), "
            "so compare them with the threshold, not with 0.5."
        ),
    )
    # The usage example names no path: the directory is built under a temporary name and is meant to be moved.
    (run_dir / CARD_FILE).write_text(render_model_card(card, settings), encoding="utf-8")
    return headline
