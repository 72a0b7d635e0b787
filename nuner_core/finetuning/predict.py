"""Tag raw text with a fine-tuned model directory: the JSON-lines output of ``nuner tag``.

Input files are read as ``nuner tag`` reads them (``nuner_core.tagging.documents``: JSON lines
with ``text`` and an optional ``id``, or plain text, one document per line). One output line
per document::

    {"id": "...", "text": "...", "entities": [{"start": 0, "end": 5, "text": "Paris", "label": "city", "score": 0.97}]}

``start``/``end`` are character offsets into ``text`` (end exclusive); ``score`` is the mean,
over the entity's words, of the probability of each word's predicted tag. Words are
``nuner tag``'s (``nuner_core.text.words``: the segmentation the model was trained with, named
in its ``nuner_finetune.json``); a text longer than one window is covered by overlapping windows
(``nuner_core.text.windows``), each word read from the window where it has the most context. Tags become entities the way ``transformers``' ``simple``
aggregation groups them: ``B-X`` opens an entity, ``I-X`` continues an ``X`` (or opens one after
anything else), ``O`` closes it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO, TypeVar

from nuner_core.stage_api import StageError
from nuner_core.text.words import SEGMENTATION, segment_words

log = logging.getLogger(__name__)

DEFAULT_STRIDE = 64
T = TypeVar("T")


def decode_entities(text: str, words: Sequence[tuple[int, int]], tags: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """Entities from word tags (``transformers``' simple grouping); see the module docstring."""
    entities: list[dict[str, Any]] = []
    current: tuple[str, int, int, list[float]] | None = None  # (type, first word, last word, word scores)

    def close() -> None:
        if current is not None:
            label, first, last, word_scores = current
            start, end = words[first][0], words[last][1]
            entities.append({"start": start, "end": end, "text": text[start:end], "label": label,
                             "score": round(sum(word_scores) / len(word_scores), 6)})  # fmt: skip

    for i, tag in enumerate(tags):
        if tag.startswith("I-") and current is not None and current[0] == tag[2:]:
            current = (current[0], current[1], i, current[3] + [scores[i]])
            continue
        close()
        current = (tag[2:], i, i, [scores[i]]) if tag[:2] in ("B-", "I-") else None
    close()
    return entities


@dataclass
class TaggerSettings:
    segmentation: str
    max_length: int
    stride: int


class Tagger:
    """A fine-tuned token classifier, loaded once, tagging batches of texts."""

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_size: int = 32):
        from transformers import AutoModelForTokenClassification

        from nuner_core.devices import pad_id, resolve_device
        from nuner_core.finetuning.export import SETTINGS_FILE
        from nuner_core.token_classifier.model import quiet_transformers
        from nuner_core.tokenizer import load_tokenizer

        path = Path(model_dir)
        if batch_size < 1:
            raise StageError(f"batch_size must be a positive number of windows, not {batch_size}")
        if not (path / "config.json").is_file():
            raise StageError(f"{path} is not a model directory (no config.json)")
        self.tokenizer = load_tokenizer(str(path), pre_split_words=True)
        with quiet_transformers():
            self.model = AutoModelForTokenClassification.from_pretrained(path).to(resolve_device(device)).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        bad = [label for label in self.labels if label != "O" and label[:2] not in ("B-", "I-")]
        if bad:
            raise StageError(f"{path}: labels {bad} are not IOB2 (O, B-<type>, I-<type>)")
        saved = json.loads((path / SETTINGS_FILE).read_text()) if (path / SETTINGS_FILE).is_file() else {}
        limit = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512)
        self.settings = TaggerSettings(
            str(saved.get("segmentation", "")), int(saved.get("max_length", limit)), int(saved.get("stride", DEFAULT_STRIDE))
        )
        if self.settings.segmentation != SEGMENTATION:  # a model trained before words were one thing: words may differ a little
            log.warning("%s was trained with word segmentation %r; reading text with %r", path, self.settings.segmentation or "unnamed", SEGMENTATION)
        self.pad_id = pad_id(self.tokenizer)
        self.batch_size = batch_size

    def tag(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Entities of every text."""
        from nuner_core.token_classifier.model import encode_windows, predict_words

        spans = [[(s, e) for s, e in segment_words(t).tolist()] for t in texts]
        words = [[t[s:e] for s, e in w] for t, w in zip(texts, spans)]
        windows = encode_windows(self.tokenizer, words, self.settings.max_length, self.settings.stride)
        pred = predict_words(self.model, windows, [len(w) for w in words], self.pad_id, self.batch_size)
        out = []
        for text, offsets, ids, scores in zip(texts, spans, pred.label_ids, pred.scores):
            tags = [self.labels[i] if i >= 0 else "O" for i in ids]
            out.append(decode_entities(text, offsets, tags, scores))
        return out


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_files(
    model_dir: str | Path, inputs: Sequence[str | Path], output: str | Path | TextIO, device: str = "auto", batch_size: int = 32,
    documents_per_chunk: int = 256, skip_bad: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Tag every document of ``inputs`` (read as ``nuner tag`` reads them) into ``output``, JSON lines in input order.

    ``output`` is a path (written to a temporary file and renamed into place when complete) or an
    open text stream. Returns counts: documents, blank lines skipped, bad lines skipped (``skip_bad``:
    a line that is not a readable document is counted and left out instead of failing the run),
    entities, entities per label.
    """
    from nuner_core.tagging.documents import Document, ReadStats, iter_documents

    started = time.perf_counter()
    tagger = Tagger(model_dir, device, batch_size)
    labels: Counter[str] = Counter()
    stats = ReadStats()
    documents = 0

    def all_documents() -> Iterator[Document]:
        for path in inputs:
            yield from iter_documents(path, stats=stats, skip_bad=skip_bad)

    def write(out: TextIO) -> None:
        nonlocal documents
        for chunk in _batches(all_documents(), documents_per_chunk):
            for doc, entities in zip(chunk, tagger.tag([d.text for d in chunk])):
                out.write(json.dumps({"id": doc.id, "text": doc.text, "entities": entities}, ensure_ascii=False) + "\n")
                labels.update(e["label"] for e in entities)
                documents += 1

    if isinstance(output, (str, Path)):
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                write(fh)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        write(output)
    return {"documents": documents, "blank_lines": stats.blank_lines, "bad_lines": stats.bad_lines, "entities": sum(labels.values()),
            "per_label": dict(sorted(labels.items())), "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
