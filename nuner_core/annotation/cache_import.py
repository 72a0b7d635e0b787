"""Load recorded ``{text, response}`` pairs into the response cache (``nuner cache import``).

Each line of a JSON-lines file is rendered with the configured prompt template and keyed
under the given model name and the configured sampling parameters: exactly the key the
stage looks up, so the stage then finds every recorded answer and makes no request. An
import is idempotent: a file already imported with the same model, prompt and sampling is
skipped at once (a marker records it), and an entry already in the cache is left alone
(``overwrite=True`` replaces it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nuner_core.annotation.cache import (
    KEY_VERSION,
    CachedAnswer,
    KeyMaker,
    ResponseCache,
)
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.prompt import load_template
from nuner_core.hashing import file_sha256
from nuner_core.jsonl import JsonLinesError, read_json_lines
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError
from nuner_core.store import open_store

log = logging.getLogger("nuner.annotate")
BATCH = 5_000  # entries per SQLite transaction


class ImportFileError(StageError):
    """A line of the file cannot be imported; the message names the file and line."""


@dataclass
class ImportStats:
    file: str
    model: str
    lines: int = 0
    added: int = 0  # new entries
    unchanged: int = 0  # the same answer was already cached
    kept_existing: int = 0  # a different answer was cached and kept (overwrite=False)
    replaced: int = 0  # a different answer was cached and replaced (overwrite=True)
    empty_responses: int = 0  # recorded answers that are empty ("no entity"), imported as such
    skipped_already_imported: bool = False  # the whole file was imported before with the same key material

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_cache_dir(config: AnnotateConfig, shared_cache: Path | None = None) -> Path:
    """``annotate.cache_dir`` if set, else ``llm-responses`` in the store's shared cache directory."""
    if config.cache_dir:
        return Path(expand_path(config.cache_dir))
    return (shared_cache if shared_cache is not None else open_store().cache_dir) / "llm-responses"


def import_responses(
    path: str | Path,
    *,
    model: str,
    config: AnnotateConfig | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> ImportStats:
    """Import a JSON-lines file of ``{"text": ..., "response": ...}`` records into the response cache.

    ``model`` is the model name the answers are filed under (the stage's ``annotate.model``);
    ``config`` supplies the prompt template, the sampling parameters and the cache location
    (default: ``AnnotateConfig()``); ``cache_dir`` overrides the location. Other fields of a
    record (``id``, ``source_url``...) are ignored. Raises ImportFileError naming file:line
    for a line that is not a JSON object with a string ``text`` and a string ``response``.
    """
    config = (config or AnnotateConfig()).model_copy(update={"model": model})
    file = Path(expand_path(str(path)))
    if not file.is_file():
        raise ImportFileError(f"cannot import {file}: no such file")
    template = load_template(config.prompt_template)
    sampling = config.sampling()
    digest = file_sha256(file)
    marker_material = json.dumps([KEY_VERSION, digest, model, template.text, sampling, overwrite], sort_keys=True)
    marker = "import:" + hashlib.sha256(marker_material.encode()).hexdigest()
    keys = KeyMaker(model, sampling)
    stats = ImportStats(file=str(file), model=model)
    with ResponseCache(Path(cache_dir) if cache_dir is not None else resolve_cache_dir(config)) as cache:
        if cache.has_marker(marker):
            stats.skipped_already_imported = True
            return stats
        pending: list[tuple[str, CachedAnswer]] = []
        try:
            for number, record in read_json_lines(file):
                stats.lines += 1
                text, response = _parse(record, file, number)
                stats.empty_responses += not response.strip()
                key = keys.key(template.messages(text))
                pending.append((key, CachedAnswer(response=response, source=f"import:{file.name}")))
                if len(pending) >= BATCH:
                    _write(cache, pending, stats, overwrite)
                    pending = []
        except (JsonLinesError, ImportFileError) as exc:  # the lines before the bad one are kept: a rerun finds them cached
            _write(cache, pending, stats, overwrite)
            raise ImportFileError(str(exc)) from None
        _write(cache, pending, stats, overwrite)
        cache.set_marker(marker, {"file": str(file), "sha256": digest, "model": model, "lines": stats.lines})
    log.info(
        "imported %s into the response cache for model %s: %d added, %d unchanged, %d kept, %d replaced",
        file, model, stats.added, stats.unchanged, stats.kept_existing, stats.replaced,
    )
    return stats


def _parse(record: dict[str, Any], file: Path, number: int) -> tuple[str, str]:
    text, response = record.get("text"), record.get("response")
    if not isinstance(text, str) or not text:
        raise ImportFileError(f"{file}:{number}: field 'text' must be a non-empty string")
    if not isinstance(response, str):
        raise ImportFileError(f"{file}:{number}: field 'response' must be a string (got {type(response).__name__})")
    return text, response


def _write(cache: ResponseCache, pending: list[tuple[str, CachedAnswer]], stats: ImportStats, overwrite: bool) -> None:
    with cache.transact():
        for key, answer in pending:
            existing = cache.get(key)
            if existing is None:
                stats.added += 1
            elif existing.response == answer.response:
                stats.unchanged += 1
                continue
            elif not overwrite:
                stats.kept_existing += 1
                continue
            else:
                stats.replaced += 1
            cache.put(key, answer)
