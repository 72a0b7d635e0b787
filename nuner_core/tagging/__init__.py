"""Zero-shot NER with the kept two-encoder model: any label names, no labelled data.

    from nuner_core.tagging import ZeroShotTagger
    tagger = ZeroShotTagger.from_pretrained("data/pretrain/<key>")
    tagger.predict(["Book a table at Nobu for Friday"], ["restaurant", "day"])

Modules: ``settings`` (what a model directory is), ``tagger`` (the tagger), ``plan`` (texts to
windows and batches), ``label_vectors`` (label names to concept vectors), ``scoring`` (the
logits), ``decode`` (entities from word scores), ``labels`` (the one label normalisation,
per-label thresholds), ``calibrate`` (the threshold from the pre-training validation split), ``export`` (a model directory with a model card),
``documents`` (files in and out for ``nuner tag``). Words and windows are
``nuner_core.text``'s, shared with ``nuner predict``.

Names are imported on first use (PEP 562): ``from nuner_core.tagging import parse_labels``
or ``check_model_dir`` does not load torch, so a command line fails fast on bad input and
flow planning stays quick; ``ZeroShotTagger`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "calibrate": ("Calibration", "CurvePoint", "calibrate_examples", "calibrate_threshold"),
    "decode": ("DECODINGS", "DEFAULT_DECODING", "THRESHOLDS", "Decoding", "Entity", "assign", "check_decoding", "check_threshold", "iob2", "iob2_runs",
               "runs", "span_runs"),
    "documents": ("Document", "DocumentError", "TagSummary", "iter_documents", "parse_labels", "read_documents",
                  "read_label_file", "tag_documents", "iter_files"),
    "export": ("CARD_FILE", "ModelCard", "export_model", "onnx_exporter_version", "render_model_card"),
    "labels": ("normalise_label",),
    "plan": ("TagStats",),
    "tagger": ("ZeroShotTagger",),
    "settings": ("DEFAULT_THRESHOLD", "SETTINGS_FILE", "DualEncoderSettings", "LabelError", "ModelDirectoryError", "check_model_dir",
                 "model_identity", "write_threshold"),
}  # fmt: skip
_MODULE_OF = {name: f"{__name__}.{module}" for module, names in _EXPORTS.items() for name in names}
_MODULE_OF |= {"join_words": "nuner_core.text.words", "segment_words": "nuner_core.text.words"}  # the one word segmentation
# A literal list, for type checkers; tests/tagging checks it against the table above.
__all__ = [
    "CARD_FILE", "DECODINGS", "DEFAULT_DECODING", "DEFAULT_THRESHOLD", "SETTINGS_FILE",
    "THRESHOLDS", "Calibration", "CurvePoint", "Decoding", "Document", "DocumentError",
    "DualEncoderSettings",
    "Entity", "LabelError", "ModelCard", "ModelDirectoryError", "TagStats", "TagSummary", "ZeroShotTagger", "assign",
    "calibrate_examples", "calibrate_threshold",
    "check_decoding", "check_model_dir", "check_threshold", "export_model", "iob2", "iob2_runs", "iter_documents", "iter_files",
    "join_words", "model_identity", "normalise_label", "onnx_exporter_version", "parse_labels", "read_documents", "read_label_file",
    "render_model_card", "runs",
    "segment_words", "span_runs", "tag_documents", "write_threshold",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the names, for type checkers and IDEs (never executed)
    from nuner_core.tagging.calibrate import Calibration, CurvePoint, calibrate_examples, calibrate_threshold  # noqa: F401
    from nuner_core.tagging.decode import (  # noqa: F401
        DECODINGS,
        DEFAULT_DECODING,
        THRESHOLDS,
        Decoding,
        Entity,
        assign,
        check_decoding,
        check_threshold,
        iob2,
        iob2_runs,
        runs,
        span_runs,
    )
    from nuner_core.tagging.documents import (  # noqa: F401
        Document,
        DocumentError,
        TagSummary,
        iter_documents,
        iter_files,
        parse_labels,
        read_documents,
        read_label_file,
        tag_documents,
    )
    from nuner_core.tagging.export import CARD_FILE, ModelCard, export_model, onnx_exporter_version, render_model_card  # noqa: F401
    from nuner_core.tagging.labels import normalise_label  # noqa: F401
    from nuner_core.tagging.plan import TagStats  # noqa: F401
    from nuner_core.tagging.settings import (  # noqa: F401
        DEFAULT_THRESHOLD,
        SETTINGS_FILE,
        DualEncoderSettings,
        LabelError,
        ModelDirectoryError,
        check_model_dir,
        model_identity,
        write_threshold,
    )
    from nuner_core.tagging.tagger import ZeroShotTagger  # noqa: F401
    from nuner_core.text.words import join_words, segment_words  # noqa: F401
