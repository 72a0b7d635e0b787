"""Tag stage: the user's files tagged zero-shot with the kept two-encoder model, for any label names.

Input: a zero-shot model (``tag.model``, else the pretrain artifact's main run) and the files
of ``tag.inputs``. Output: ``entities.jsonl`` (one line per document: ``id``, ``file``,
``text``, ``entities`` with ``start``, ``end``, ``text``, ``label``, ``score``) and the
counts per label. The key covers the model's weights, the labels, the threshold and the
input files' contents: the same request is never tagged twice.

With ``tag.shards`` N > 1 the documents are split into N shards (``tagging.shards``), each tagged
by a run of its own (``tag.shard`` set, keyed by its shard's documents); the sharded run's stage
gets their artifacts as inputs (``tag-shard-<i>``, from the flow) and merges them in input order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nuner_core.hashing import file_sha256
from nuner_core.paths import expand_path
from nuner_core.stage_api import Inputs, Report, StageContext, StageError, StageResult
from nuner_core.tagging.config import TagConfig

if TYPE_CHECKING:
    from nuner_core.tagging.documents import TagSummary

CODE_VERSION = "1"
OUTPUT = "entities.jsonl"


def in_full_run(config: TagConfig) -> bool:
    """A run of all stages tags only when there is something to tag."""
    return bool(config.inputs and config.labels)


def upstream(config: TagConfig) -> tuple[str, ...]:
    return () if config.model and not config.model.startswith("control-") else ("pretrain",)


def fingerprint(config: TagConfig) -> object:
    """The input files by content and, for a model given by path, its weights. Never raises (run reports)."""
    from nuner_core.tagging.settings import model_identity

    files = _shard_fingerprint(config) if config.shard is not None else [_file_fingerprint(item) for item in config.inputs]
    model = None
    if config.model and not config.model.startswith("control-"):
        try:
            model = model_identity(config.model)
        except StageError:
            model = f"unresolved:{config.model}"
    return {"inputs": files, "model": model}


def _file_fingerprint(item: str) -> object:
    path = Path(expand_path(item))
    return [path.name, file_sha256(path)] if path.is_file() else f"missing:{item}"


def _shard_fingerprint(config: TagConfig) -> object:
    """A shard run's input: its own documents (their count and hash), not the whole files."""
    from nuner_core.tagging.documents import DocumentError
    from nuner_core.tagging.shards import split

    assert config.shard is not None
    try:
        parts = split([expand_path(item) for item in config.inputs], config.shards, config.format, config.text_field)
    except (DocumentError, OSError) as exc:  # the run reports it
        return f"unreadable:{exc}"
    start, end = parts.bounds[config.shard]
    return {"documents": end - start, "sha256": parts.digests[config.shard]}


def describe(config: TagConfig, inputs: Inputs) -> str:
    threshold = f"threshold {config.threshold}" if config.threshold is not None else "calibrated threshold"
    shards = f" · shard {config.shard + 1} of {config.shards}" if config.shard is not None else (
        f" · {config.shards} shards" if config.shards > 1 else "")
    return f"tag · {len(config.labels)} label(s) · {len(config.inputs)} file(s) · {threshold}{shards}"


def model_dir(config: TagConfig, inputs: Inputs) -> Path:
    """The model directory this config tags with."""
    if config.model and not config.model.startswith("control-"):
        return Path(expand_path(config.model))
    from nuner_core.dual_encoder.pretrain_artifact import MAIN_RUN, read_outputs

    pretrain = inputs.get("pretrain")
    if pretrain is None:
        raise StageError("tag: no model: set tag.model to a zero-shot model directory, or run the pretrain stage first")
    outputs = read_outputs(pretrain.dir)
    run = config.model or MAIN_RUN
    if run not in outputs.dual_encoders:
        raise StageError(f"tag: the pretrain artifact {pretrain.key} has no two-encoder model {run!r}; "
                         f"it has {sorted(outputs.dual_encoders)}")
    return outputs.dual_encoders[run]


def serve_hint(model: Path, labels: Sequence[str]) -> str:
    """The command that serves the model just used, and a request with these labels (the UI page shows it)."""
    body = json.dumps({"model": "nuner", "texts": ["..."], "labels": list(labels[:10])}).replace("'", "'\\''")  # inside '...' in a shell
    return (f"The same tagger as an HTTP service (API, `/docs`, a page):\n\n```bash\nnuner serve --model nuner={model}\n"
            f"curl -s localhost:8080/v1/tag -H 'content-type: application/json' -d '{body}'\n```\n")


def run(ctx: StageContext[TagConfig]) -> StageResult:
    from nuner_core.tagging.documents import iter_files, tag_documents
    from nuner_core.tagging.settings import check_model_dir
    from nuner_core.tagging.shards import shard_documents
    from nuner_core.tagging.tagger import ZeroShotTagger

    cfg = ctx.config
    if not cfg.labels:
        raise StageError("tag: no labels: set tag.labels, e.g. --set 'tag.labels=[person, dish, price]'")
    if not cfg.inputs:
        raise StageError("tag: no input files: set tag.inputs to plain-text or JSON-lines files")
    model = model_dir(cfg, ctx.inputs)
    check_model_dir(model)
    files = [Path(expand_path(item)) for item in cfg.inputs]
    for file in files:
        if not file.is_file():
            raise StageError(f"tag: input file {file} does not exist")
    if cfg.shards > 1 and cfg.shard is None:
        summary, threshold_source = _merge_shards(ctx)
    else:
        tagger = ZeroShotTagger.from_pretrained(model, device=cfg.device)
        if cfg.shard is None:
            total, documents = iter_files(files, cfg.format, cfg.text_field)
        else:  # reading the split parses every document: a bad line is named by every shard, as unsharded
            total, documents = shard_documents(files, cfg.shards, cfg.shard, cfg.format, cfg.text_field)
        summary = tag_documents(tagger, documents, cfg.labels, cfg.threshold, ctx.out_dir / OUTPUT, ctx.progress,
                                batch_size=cfg.batch_size, total=total, decoding=cfg.decoding)
        threshold_source = "given" if cfg.threshold is not None else tagger.threshold_source
    table = [{"label": label, "entities": n} for label, n in summary.per_label.items()]
    return StageResult(
        rows={"documents": summary.documents, "entities": summary.entities},
        headline={"documents": summary.documents, "entities": summary.entities, "words": summary.words,
                  "threshold": summary.threshold, "documents_per_s": round(summary.documents / max(summary.seconds, 1e-9), 1)},
        extra={"model": str(model), "threshold_source": threshold_source,
               "per_label": summary.per_label, "inputs": [str(f) for f in files]},
        reports=[Report("table", "tag-counts", "Zero-shot tagging: entities per label", table),
                 Report("markdown", "tag-serve", "Serve this model over HTTP", serve_hint(model, cfg.labels))],
    )


def _merge_shards(ctx: StageContext[TagConfig]) -> tuple[TagSummary, str]:
    """The shards' outputs (inputs ``tag-shard-<i>``) concatenated in input order, and their counts summed."""
    from nuner_core.tagging.documents import TagSummary
    from nuner_core.tagging.shards import input_name, merge

    cfg = ctx.config
    parts = [ctx.inputs.get(input_name(i)) for i in range(cfg.shards)]
    missing = [i for i, ref in enumerate(parts) if ref is None]
    if missing:
        raise StageError(f"tag.shards={cfg.shards}: the artifacts of shard(s) {missing} are not among the inputs; a sharded tag "
                         "stage runs through the nuner flow (nuner run), which tags each shard first")
    manifests = [ref.manifest() for ref in parts if ref is not None]
    summary = TagSummary(per_label={label: 0 for label in cfg.labels})
    for m in manifests:
        summary.documents += m["rows"]["documents"]
        summary.entities += m["rows"]["entities"]
        summary.words += m["headline"]["words"]
        summary.threshold = m["headline"]["threshold"]
        for label, n in m["per_label"].items():
            summary.per_label[label] += n
    merge([ref.dir / OUTPUT for ref in parts if ref is not None], ctx.out_dir / OUTPUT)
    # The shards' own run times summed (as if in turn): documents_per_s is per worker, not the sharded run's wall clock.
    summary.seconds = sum(float(m.get("timings", {}).get("wall_s", 0.0)) for m in manifests)
    return summary, str(manifests[0]["threshold_source"]) if manifests else "given"
