"""Zero-shot NER with the kept two-encoder model: any label names, no labelled data.

    from nuner_core.tagging import ZeroShotTagger
    tagger = ZeroShotTagger.from_pretrained("data/pretrain/<key>")
    tagger.predict(["Book a table at Nobu for Friday"], ["restaurant", "day"])

Modules: ``words`` (what a word is), ``settings`` (what a model directory is), ``model`` (the
tagger), ``decode`` (entities from word scores), ``windows`` (long texts), ``calibrate`` (the
threshold from the pre-training validation split), ``export`` (a model directory with a model
card), ``documents`` (files in and out for ``nuner tag``).

Names are imported on first use (PEP 562): ``from nuner_core.tagging import parse_labels``
or ``check_model_dir`` does not load torch, so a command line fails fast on bad input and
flow planning stays quick; ``ZeroShotTagger`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "calibrate": ("THRESHOLDS", "Calibration", "CurvePoint", "calibrate_threshold"),
    "decode": ("Entity", "assign", "check_threshold", "iob2"),
    "documents": ("Document", "DocumentError", "TagSummary", "iter_documents", "parse_labels", "read_documents",
                  "read_label_file", "tag_documents", "iter_files"),
    "export": ("CARD_FILE", "ModelCard", "export_model", "render_model_card"),
    "model": ("TagStats", "ZeroShotTagger"),
    "settings": ("DEFAULT_THRESHOLD", "DualEncoderSettings", "LabelError", "ModelDirectoryError", "check_model_dir",
                 "model_identity", "write_threshold"),
    "words": ("join_words", "segment_words"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the names, for type checkers and IDEs (never executed)
    from nuner_core.tagging.calibrate import THRESHOLDS, Calibration, CurvePoint, calibrate_threshold  # noqa: F401
    from nuner_core.tagging.decode import Entity, assign, check_threshold, iob2  # noqa: F401
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
    from nuner_core.tagging.export import CARD_FILE, ModelCard, export_model, render_model_card  # noqa: F401
    from nuner_core.tagging.model import TagStats, ZeroShotTagger  # noqa: F401
    from nuner_core.tagging.settings import (  # noqa: F401
        DEFAULT_THRESHOLD,
        DualEncoderSettings,
        LabelError,
        ModelDirectoryError,
        check_model_dir,
        model_identity,
        write_threshold,
    )
    from nuner_core.tagging.words import join_words, segment_words  # noqa: F401
