"""What ``nuner serve --model NAME=SOURCE`` serves: a zero-shot two-encoder tagger or a fine-tuned token classifier.

SOURCE is a directory (a pretrain run directory or an ``export-model`` copy: two encoders and
``dual_encoder.json``; or a finetune artifact's ``model/``: ``config.json`` of a token
classifier) or a store artifact: ``pretrain:latest``, ``pretrain:<key>``, ``finetune:latest``,
``finetune:<key>``, fetched through the store (``$NUNER_DATA_DIR``) like any stage input.
Each model is loaded once per process; requests share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError

Kind = Literal["zero_shot", "token_classifier"]
STORE_STAGES = ("pretrain", "finetune")
CARD_FILE = "README.md"  # both kinds write their model card here


class ModelSourceError(StageError, ValueError):
    """A ``NAME=SOURCE`` that names no servable model; the message says which and why."""


@dataclass
class ServedModel:
    """One loaded model and what ``GET /v1/models`` says of it."""

    name: str
    kind: Kind
    path: Path
    predictor: Any  # ZeroShotTagger | OnnxZeroShotTagger (kind zero_shot) or finetuning.predict.Tagger
    base_encoder: str | None = None
    labels: list[str] = field(default_factory=list)  # a classifier's entity types; empty for zero-shot (any label)
    card: str | None = None

    @property
    def threshold(self) -> float | None:
        return float(self.predictor.threshold) if self.kind == "zero_shot" else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "base_encoder": self.base_encoder, "threshold": self.threshold,
                "labels": self.labels, "card": self.card}  # fmt: skip


def parse_model_option(value: str) -> tuple[str, str]:
    """``NAME=SOURCE`` -> (name, source); a clear error for anything else."""
    name, sep, source = value.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise ModelSourceError(f"--model {value!r}: give NAME=DIR or NAME=pretrain:latest (e.g. nuner=data/pretrain/<key>)")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ModelSourceError(f"--model {value!r}: a model name is letters, digits, '-', '_' and '.' only")
    return name, source


def parse_model_options(values: Sequence[str]) -> dict[str, str]:
    """Every ``--model``; a name given twice is an error."""
    out: dict[str, str] = {}
    for value in values:
        name, source = parse_model_option(value)
        if name in out:
            raise ModelSourceError(f"--model: the name {name!r} is given twice")
        out[name] = source
    if not out:
        raise ModelSourceError("give at least one --model NAME=DIR")
    return out


def resolve_source(source: str) -> Path:
    """The local directory of a model source (a store artifact is fetched first)."""
    stage, sep, key = source.partition(":")
    if sep and stage in STORE_STAGES and "/" not in stage:
        return _from_store(stage, key)
    path = Path(expand_path(source))
    if not path.is_dir():
        raise ModelSourceError(f"{source}: no such model directory (or store artifact: pretrain:latest, finetune:<key>)")
    return path


def _from_store(stage: str, key: str) -> Path:
    from nuner_core.store import open_store

    store = open_store()
    ref = store.latest(stage) if key == "latest" else store.lookup(stage, key)
    if ref is None:
        raise ModelSourceError(f"{stage}:{key}: no such artifact in {store.location} (see: nuner store ls --stage {stage})")
    ref = store.fetch(ref)
    if stage == "finetune":
        return ref.dir / "model"
    from nuner_core.dual_encoder.pretrain_artifact import MAIN_RUN, read_outputs

    outputs = read_outputs(ref.dir)
    if MAIN_RUN not in outputs.dual_encoders:
        raise ModelSourceError(f"{stage}:{key}: the artifact {ref.key} keeps no two-encoder model (built before the concept encoder was kept?)")
    return outputs.dual_encoders[MAIN_RUN]


def model_kind(path: Path) -> Kind:
    from nuner_core.tagging.settings import SETTINGS_FILE

    if (path / SETTINGS_FILE).is_file():
        return "zero_shot"
    if (path / "config.json").is_file():
        return "token_classifier"
    raise ModelSourceError(f"{path}: neither a zero-shot model ({SETTINGS_FILE} with text_encoder/ and concept_encoder/) "
                           "nor a token classifier (config.json)")  # fmt: skip


def check_source(source: str) -> Path:
    """Everything checkable without loading weights: the directory exists and is one of the two kinds."""
    path = resolve_source(source)
    if model_kind(path) == "zero_shot":
        from nuner_core.tagging.settings import check_model_dir

        check_model_dir(path)
    return path


def load_model(
    name: str, source: str, *, backend: str = "torch", device: str = "auto", max_labels: int | None = None, threads: int | None = None
) -> ServedModel:
    """Load one model (see the module docstring); ``backend`` applies to zero-shot models, ``threads`` to onnxruntime's."""
    path = check_source(source)
    kind = model_kind(path)
    card = _card(path)
    if kind == "zero_shot":
        from nuner_core.tagging.tagger import ZeroShotTagger

        options: dict[str, Any] = {} if max_labels is None else {"max_labels": max_labels}
        if threads is not None and backend != "torch":
            options["threads"] = threads
        tagger = ZeroShotTagger.from_pretrained(path, device=device, backend=backend, **options)
        return ServedModel(name, kind, path, tagger, _base_encoder(card, path / "text_encoder"), [], card)
    from nuner_core.finetuning.predict import Tagger

    classifier = Tagger(path, device)
    types = list(dict.fromkeys(label[2:] for label in classifier.labels if label != "O"))
    return ServedModel(name, kind, path, classifier, _base_encoder(card, path), types, card)


def _card(path: Path) -> str | None:
    card = path / CARD_FILE
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


def _base_encoder(card: str | None, encoder: Path) -> str | None:
    """The card's ``base_model`` (its YAML front matter), else the encoder config's architecture."""
    if card and card.startswith("---"):
        try:
            front = yaml.safe_load(card.split("---", 2)[1])
        except yaml.YAMLError:
            front = None
        if isinstance(front, dict) and isinstance(front.get("base_model"), str):
            return str(front["base_model"])
    try:
        config = json.loads((encoder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("_name_or_path") or config.get("model_type")
    return str(value) if value else None
