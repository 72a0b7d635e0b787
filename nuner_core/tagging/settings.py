"""What a zero-shot model directory is, checked without loading torch (the CLI and flow planning use it).

A model directory (a pretrain artifact, each ``controls/<name>/`` inside it, or an exported
model) holds::

    text_encoder/      Hugging Face save_pretrained model + fast tokenizer (tokenizer.json)
    concept_encoder/   the same for the concept encoder
    dual_encoder.json  {"similarity": "cosine" | "dot", "temperature": tau, "logit_bias": b,
                        "pooling": "mean", optional "threshold": p, optional "max_concept_length": n}
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

from nuner_core.hashing import file_sha256, short_hash
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError
from nuner_core.tagging.labels import normalise_label

SETTINGS_FILE = "dual_encoder.json"
ENCODERS = ("text_encoder", "concept_encoder")
# Used when the model stores no calibrated threshold. The learned bias (about -5 after the
# demo's pre-training) keeps every probability small, so 0.5 finds nothing; on MIT Restaurant
# the demo's model scored token macro-F1 37 / 40 / 21 at 0.01 / 0.05 / 0.2.
DEFAULT_THRESHOLD = 0.05
DEFAULT_MAX_CONCEPT_LENGTH = 16  # PretrainConfig.max_concept_length's default
_IDENTITY_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin"}


class ModelDirectoryError(StageError):
    """A path that is not a zero-shot (two-encoder) model; the message names it and what is missing."""


class LabelError(StageError, ValueError):
    """An empty label list, or a label that is not a non-empty string."""


@dataclass(frozen=True)
class DualEncoderSettings:
    similarity: Literal["cosine", "dot"]
    temperature: float
    logit_bias: float
    pooling: str = "mean"
    threshold: float | None = None  # calibrated on the pre-training validation split, when known
    max_concept_length: int = DEFAULT_MAX_CONCEPT_LENGTH

    @classmethod
    def read(cls, path: Path) -> DualEncoderSettings:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirectoryError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ModelDirectoryError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        missing = [k for k in ("similarity", "temperature", "logit_bias") if k not in raw]
        if missing:
            raise ModelDirectoryError(f"{path}: missing {', '.join(missing)} (found {sorted(raw)})")
        problems = []
        if raw["similarity"] not in ("cosine", "dot"):
            problems.append(f"similarity must be 'cosine' or 'dot', not {raw['similarity']!r}")
        if not _is_number(raw["temperature"]) or raw["temperature"] <= 0:
            problems.append(f"temperature must be a positive number, not {raw['temperature']!r}")
        if not _is_number(raw["logit_bias"]):
            problems.append(f"logit_bias must be a number, not {raw['logit_bias']!r}")
        if raw.get("pooling", "mean") != "mean":
            problems.append(f"pooling {raw['pooling']!r} is not supported (only 'mean', what pre-training uses)")
        threshold = raw.get("threshold")
        if threshold is not None and (not _is_number(threshold) or not 0 <= threshold <= 1):
            problems.append(f"threshold must be a probability in [0, 1], not {threshold!r}")
        mcl = raw.get("max_concept_length", DEFAULT_MAX_CONCEPT_LENGTH)
        if not isinstance(mcl, int) or isinstance(mcl, bool) or mcl < 2:
            problems.append(f"max_concept_length must be an integer >= 2, not {mcl!r}")
        if problems:
            raise ModelDirectoryError(f"{path}: " + "; ".join(problems))
        return cls(raw["similarity"], float(raw["temperature"]), float(raw["logit_bias"]), "mean",
                   None if threshold is None else float(threshold), mcl)  # fmt: skip

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"similarity": self.similarity, "temperature": self.temperature, "logit_bias": self.logit_bias, "pooling": self.pooling}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.max_concept_length != DEFAULT_MAX_CONCEPT_LENGTH:
            out["max_concept_length"] = self.max_concept_length
        return out


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_model_dir(path: str | Path) -> DualEncoderSettings:
    """The settings of a zero-shot model directory, or a ModelDirectoryError naming what is missing."""
    root = Path(expand_path(str(path)))
    layout = f"a zero-shot model directory holds {', '.join(e + '/' for e in ENCODERS)} and {SETTINGS_FILE} (a pretrain artifact or an exported model)"
    if not root.exists():
        raise ModelDirectoryError(f"{root}: no such directory; {layout}")
    if not root.is_dir():
        raise ModelDirectoryError(f"{root}: not a directory; {layout}")
    missing = [
        f"{name}/{file}"
        for name in ENCODERS
        for file in ("config.json", "tokenizer.json")
        if not (root / name / file).is_file()
    ]
    if not (root / SETTINGS_FILE).is_file():
        missing.append(SETTINGS_FILE)
    if missing:
        hint = ""
        if (root / "config.json").is_file():
            hint = " (it looks like a single Hugging Face model: zero-shot tagging needs the two encoders the pretrain stage keeps)"
        elif (root / "text_encoder").is_dir() and not (root / "concept_encoder").is_dir():
            hint = " (it has a text encoder only: the concept encoder is what embeds label names)"
        raise ModelDirectoryError(f"{root}: not a zero-shot model, missing {', '.join(missing)}{hint}; {layout}")
    return DualEncoderSettings.read(root / SETTINGS_FILE)


def write_threshold(path: str | Path, threshold: float | None) -> DualEncoderSettings:
    """Store (or, with None, remove) the threshold in a model directory's settings file, atomically."""
    root = Path(expand_path(str(path)))
    settings = check_model_dir(root)
    if threshold is not None and not (_is_number(threshold) and 0 <= threshold <= 1):
        raise ValueError(f"threshold must be a probability in [0, 1], not {threshold!r}")
    raw = json.loads((root / SETTINGS_FILE).read_text(encoding="utf-8"))  # keep keys this version does not know
    raw.pop("threshold", None)
    if threshold is not None:
        raw["threshold"] = float(threshold)
    tmp = root / f".{SETTINGS_FILE}.tmp"
    tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / SETTINGS_FILE)
    return replace(settings, threshold=None if threshold is None else float(threshold))


def model_identity(path: str | Path) -> str:
    """A hash of what the model computes: the settings file and the top-level files of both encoders."""
    root = Path(expand_path(str(path)))
    check_model_dir(root)
    payload = [[SETTINGS_FILE, file_sha256(root / SETTINGS_FILE)]]
    for name in ENCODERS:
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix in _IDENTITY_SUFFIXES)
        payload += [[f"{name}/{p.name}", file_sha256(p)] for p in files]
    return short_hash(json.dumps(payload))


# Characters a label made only of would look empty: white space, and format (zero-width
# spaces and joiners, direction marks, soft hyphens) and control characters.
_INVISIBLE = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))


def _visible(label: str) -> bool:
    return any(not c.isspace() and unicodedata.category(c) not in _INVISIBLE for c in label)


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Labels stripped (as pre-training strips concept names), checked, duplicates dropped keeping the first.

    Two labels are duplicates when their ``normalise_label`` forms match (``Person`` and ``PERSON``).
    """
    if isinstance(labels, str):
        raise LabelError(f"labels must be a list of strings, not the string {labels!r} (see parse_labels)")
    out: dict[str, str] = {}  # normalised -> first spelling; ordered, constant-time look-up (tens of thousands of labels)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not _visible(label):
            raise LabelError(f"label {i} is {label!r}: every label must be a non-empty string "
                             "(white space and invisible characters such as zero-width spaces do not count)")  # fmt: skip
        if any(unicodedata.category(c) == "Cs" for c in label):
            raise LabelError(f"label {i} is {label!r}: it holds a lone surrogate, not valid Unicode text")
        out.setdefault(normalise_label(label), label.strip())
    if not out:
        raise LabelError("no labels: give at least one label name, e.g. ['person', 'dish', 'price']")
    return list(out.values())


def clean_and_keep(labels: Sequence[str], allow_empty: bool = False) -> list[str]:
    """Labels checked and stripped like ``clean_labels`` but kept as given (duplicates and all)."""
    if allow_empty and not isinstance(labels, str) and len(labels) == 0:
        return []
    clean_labels(labels)
    return [label.strip() for label in labels]
