"""A zero-shot model a user can hand on: both encoders, their tokenizers, the settings, and a model card.

``export_model(source, dest, ...)`` copies ``text_encoder/`` and ``concept_encoder/`` (their
top-level files: what ``save_pretrained`` wrote, not checkpoints or plots) from a pretrain
artifact (or one of its ``controls/<name>/``, or another export), writes ``dual_encoder.json``
with the threshold, and a ``README.md`` in the Hugging Face model-card convention (YAML front
matter, then what it is, how it was trained, on what, evaluation figures when known, usage).
The directory is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nuner_core.hashing import file_sha256
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError
from nuner_core.tagging.decode import check_threshold
from nuner_core.tagging.onnx_backend import ONNX_FILES, ONNX_SETTINGS, SCORER
from nuner_core.tagging.settings import ENCODERS, SETTINGS_FILE, DualEncoderSettings, check_model_dir

CARD_FILE = "README.md"
ONNX_NAMES = frozenset({ONNX_SETTINGS, SCORER, *(f for files in ONNX_FILES.values() for f in files.values())})  # with onnx=True
EXPORTED_NAMES = frozenset({*ENCODERS, SETTINGS_FILE, CARD_FILE, *ONNX_NAMES})  # everything export_model writes


class ExportDestinationError(StageError, ValueError):
    """A destination that export_model must not write or replace; the message says why."""


@dataclass(frozen=True)
class ModelCard:
    """What the card says; every field optional but the name. Unknown figures are left out, not invented."""

    name: str = "NuNER zero-shot tagger"
    base_model: str | None = None  # the text encoder pre-training started from, e.g. "roberta-base"
    concept_model: str | None = None  # the concept encoder's base, when it differs
    language: str | None = "en"
    license: str | None = None
    training_data: str | None = None  # one line, e.g. "1,639 C4 sentences annotated by gpt-4o-mini (2,023 concepts)"
    training: dict[str, Any] = field(default_factory=dict)  # e.g. steps, epochs, lr, batch size, final validation loss
    evaluation: list[dict[str, Any]] = field(default_factory=list)  # rows: dataset, protocol, metric, value, (threshold, note)
    calibration: dict[str, Any] | None = None  # Calibration.as_dict() or its headline: threshold, f1, sentences
    notes: str | None = None  # limitations, in prose
    example_text: str = "Tim Cook presented the new iPhone in Cupertino on Tuesday."
    example_labels: tuple[str, ...] = ("person", "company", "product", "city")


def render_model_card(card: ModelCard, settings: DualEncoderSettings, model_path: str = "path/to/this/model") -> str:
    """The README.md text."""
    front: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "token-classification",
                             "tags": ["ner", "zero-shot", "nuner", "dual-encoder"]}  # fmt: skip
    if card.language:
        front["language"] = card.language
    if card.license:
        front["license"] = card.license
    if card.base_model:
        front["base_model"] = card.base_model
    labels = ", ".join(card.example_labels)
    out = ["---", yaml.safe_dump(front, sort_keys=True).strip(), "---", "", f"# {card.name}", ""]
    out += [
        "A zero-shot named-entity tagger for **any label names**: a text encoder and a concept encoder",
        "pre-trained together, NuNER-style (Bogdanov et al., 2024), on text an LLM annotated freely with",
        "entity concepts. A word is a `label` with probability",
        f"p = sigmoid({'tau * cos(h_word, c_label) + b' if settings.similarity == 'cosine' else 'h_word . c_label / tau + b'}),",
        "where h_word is the text encoder's last hidden state at the word's first sub-token and c_label the",
        "mean of the concept encoder's last hidden states over the label name's tokens (special tokens",
        f"included); here tau = {settings.temperature:g} and b = {settings.logit_bias:.4f}. Each word takes its best",
        "label when p reaches the threshold, and adjacent words with the same label form one entity.",
        "",
        "## Usage",
        "",
        "```python",
        "from nuner_core.tagging import ZeroShotTagger",
        f'tagger = ZeroShotTagger.from_pretrained("{model_path}")',
        f"print(tagger.predict([{card.example_text!r}], [{', '.join(repr(x) for x in card.example_labels)}]))",
        "```",
        "",
        f'From the command line: `nuner tag --model {model_path} --labels "{labels}" input.txt`',
        "(plain text, one document per line, or JSON lines with a `text` field; writes JSON lines of entities).",
        "",
        "Without this package: load `text_encoder/` and `concept_encoder/` with `transformers.AutoModel`",
        "and their tokenizers, and apply the formula above with the values in `dual_encoder.json`.",
        "",
        "## Training",
        "",
    ]
    if card.base_model:
        bases = f"`{card.base_model}`" + (f" (concept encoder: `{card.concept_model}`)" if card.concept_model else " (both encoders)")
        out.append(f"- Base model: {bases}")
    if card.training_data:
        out.append(f"- Data: {card.training_data}")
    out.append(f"- Objective: binary cross-entropy of every (token, concept) pair, {settings.similarity} similarity, "
               f"temperature {settings.temperature:g}, learned bias (final value {settings.logit_bias:.4f})")  # fmt: skip
    out += [f"- {key.replace('_', ' ').capitalize()}: {_fmt(value)}" for key, value in card.training.items()]
    out += ["", "## Threshold", ""]
    if settings.threshold is None:
        out.append("No calibrated threshold is stored; the tagger's default is used unless one is given.")
    else:
        out.append(f"Stored threshold: **{settings.threshold:g}**.")
        cal = card.calibration or {}
        if cal:
            out.append(
                f"It maximises word-level micro-F1 over (word, concept) pairs on {cal.get('sentences', '?'):,} held-out "
                f"sentences of the pre-training data (the LLM's own annotations, label set: {cal.get('label_set', 'sentence')}); "
                f"F1 there: {_fmt(cal.get('f1'))}."
                if isinstance(cal.get("sentences"), int) else f"Calibration: {_fmt({k: v for k, v in cal.items() if k != 'per_concept'})}"
            )
    out += ["", "Per label (matched ignoring case, `_` and `-`): `nuner tag --threshold 0.05,person=0.1,date=0.03` or",
            "`tagger.predict(texts, labels, thresholds={\"person\": 0.1})`; labels not named keep the threshold above."]
    own = (card.calibration or {}).get("per_concept") or {}
    if own:
        out += ["", "Each frequent validation concept's own optimum (a starting point for per-label thresholds, not applied "
                "unless given): " + ", ".join(f"{concept} {x:g}" for concept, x in own.items()) + "."]
    out += ["", "## Evaluation", ""]
    if card.evaluation:
        columns = list(dict.fromkeys(k for row in card.evaluation for k in row))
        out.append("| " + " | ".join(columns) + " |")
        out.append("| " + " | ".join("---" for _ in columns) + " |")
        out += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in card.evaluation]
    else:
        out.append("Not evaluated yet.")
    if card.notes:
        out += ["", "## Limitations", "", card.notes]
    return "\n".join(out).rstrip() + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def export_model(
    source: str | Path,
    dest: str | Path,
    *,
    threshold: float | None = None,
    card: ModelCard | None = None,
    overwrite: bool = False,
    onnx: bool = False,
    int8: bool = False,
) -> Path:
    """Write a self-contained zero-shot model directory at ``dest``; returns it.

    ``threshold`` None keeps the source's stored threshold (if any). ``dest`` must not exist
    unless ``overwrite``, and then only an exported model is replaced (see ``_check_destination``).
    ``onnx``: also both encoders as ONNX, ``int8`` with a quantised text encoder (``onnx_export``).
    """
    if int8 and not onnx:
        raise ValueError("int8 quantises the ONNX text encoder: pass onnx=True too (--onnx --int8)")
    src = Path(expand_path(str(source)))
    settings = check_model_dir(src)
    if threshold is not None:
        settings = replace(settings, threshold=check_threshold(threshold))
    dst = Path(expand_path(str(dest)))
    _check_destination(src, dst, overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for name in ENCODERS:
            (tmp / name).mkdir(parents=True)
            for file in sorted((src / name).iterdir()):
                if file.is_file():
                    shutil.copy2(file, tmp / name / file.name)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings.as_json(), indent=2) + "\n")
        (tmp / CARD_FILE).write_text(render_model_card(card or ModelCard(), settings, dst.name), encoding="utf-8")
        if onnx:
            from nuner_core.tagging.onnx_export import write_onnx  # torch: only when asked for

            write_onnx(tmp, int8)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dst


def onnx_exporter_version() -> str:
    """A hash of the ONNX exporter's source (``onnx_export.py``): a cached export made by other code is stale."""
    return file_sha256(Path(__file__).with_name("onnx_export.py"))[:16]


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Replacing ``dst`` removes it whole: a destination that holds the source (``... data
    --overwrite`` would take the store and its paid response cache along) or lies inside it is
    refused, and an existing one is replaced only when it is what an export writes, nothing more."""
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src or real_src.is_relative_to(real_dst):
        raise ExportDestinationError(f"{dst} contains the source {src}: choose a new directory for the exported model")
    if real_dst.is_relative_to(real_src):
        raise ExportDestinationError(f"{dst} lies inside the source {src}: choose a directory outside it")
    if not dst.exists() and not dst.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    extra = sorted(p.name for p in dst.iterdir() if p.name not in EXPORTED_NAMES) if dst.is_dir() and not dst.is_symlink() else []
    try:
        is_model = dst.is_dir() and not dst.is_symlink() and not extra and check_model_dir(dst) is not None
    except StageError:
        is_model = False
    if not is_model:
        held = f" (it holds {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''})" if extra else ""
        raise ExportDestinationError(f"{dst} exists and is not an exported model{held}: overwrite replaces only a model "
                                     "directory export-model wrote; choose a new directory")  # fmt: skip
