"""What a pretrain artifact holds: the typed contract for the stages and tools that read one.

Layout (see ``nuner_core.pretraining.stage``): the main run at the artifact's root and each
control run under ``controls/<name>/``; each run directory is a complete two-encoder model::

    text_encoder/  concept_encoder/  dual_encoder.json

The manifest records ``base_model`` and ``encoders`` (run name -> text encoder directory,
relative to the artifact); ``read_outputs`` is the one reader of those fields. A manifest may come
from a bucket whoever can write it chose, so each directory must be a plain relative name inside the
artifact (the store's own rule for names it reads, ``store.local_path``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nuner_core.stage_api import StageError
from nuner_core.store import MANIFEST, CorruptArtifact, local_path

MAIN_RUN = "nuner"
TEXT_ENCODER = "text_encoder"
CONCEPT_ENCODER = "concept_encoder"
DUAL_ENCODER_FILE = "dual_encoder.json"


def run_dir(control: str | None) -> str:
    """A run's directory relative to the artifact: ``""`` for the main run, ``controls/<name>`` for a control."""
    return f"controls/{control}" if control else ""


def run_name(control: str | None) -> str:
    return f"control-{control}" if control else MAIN_RUN


def encoder_dirs(controls: tuple[str, ...]) -> dict[str, str]:
    """What the manifest's ``encoders`` field records: run name -> text encoder directory."""
    return {run_name(c): str(Path(run_dir(c)) / TEXT_ENCODER) for c in (None, *controls)}


@dataclass(frozen=True)
class PretrainOutputs:
    key: str
    base_model: str  # the reference both encoders started from (hub id, local directory, pypi:<package>)
    text_encoders: dict[str, Path]  # run name ("nuner", "control-shuffle_concepts") -> text encoder directory
    dual_encoders: dict[str, Path]  # run name -> directory holding both encoders and dual_encoder.json


def read_outputs(artifact: Path) -> PretrainOutputs:
    """The encoders of a pretrain artifact directory; a clear error naming the manifest when it is not one."""
    manifest_path = artifact / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"{manifest_path}: not a readable pretrain manifest ({exc})") from None
    base = manifest.get("base_model")
    encoders = manifest.get("encoders")
    if not isinstance(base, str) or not isinstance(encoders, dict) or not encoders:
        raise StageError(
            f"{manifest_path}: a pretrain manifest must carry 'base_model' (a model reference) and 'encoders' "
            f"(name -> directory relative to the artifact); got base_model={base!r}, encoders={encoders!r}"
        )
    text: dict[str, Path] = {}
    dual: dict[str, Path] = {}
    for name, rel in encoders.items():
        try:
            path = local_path(artifact, rel)
        except CorruptArtifact as exc:
            raise StageError(f"{manifest_path}: encoder {name!r}: {exc}") from None
        if not (path / "config.json").is_file():
            raise StageError(f"{manifest_path}: encoder {name!r} points at {path}, which holds no config.json")
        text[name] = path
        if (path.parent / DUAL_ENCODER_FILE).is_file() and (path.parent / CONCEPT_ENCODER / "config.json").is_file():
            dual[name] = path.parent
    return PretrainOutputs(str(manifest.get("key", artifact.name)), base, text, dual)
