"""Annotate stage: ask an LLM for the entities and concepts of every corpus sentence.

Input: the corpus artifact's ``sentences.parquet``. Output: ``responses.parquet`` (see
``output.py``). Answers live in the response cache shared across runs (see ``cache.py``),
which is what makes a killed or budget-stopped run resumable at the grain of a sentence.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nuner_core.annotation.annotate import run_annotation
from nuner_core.annotation.cache_import import resolve_cache_dir
from nuner_core.annotation.cache_sync import ARTIFACT_FILE, SEGMENTS, AnswerJournal, save_answers
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.prompt import load_template
from nuner_core.annotation.result import AnnotationResult
from nuner_core.hashing import file_sha256
from nuner_core.paths import expand_path
from nuner_core.stage_api import Inputs, Report, StageContext, StageResult
from nuner_core.store import INCOMPLETE

CODE_VERSION = "1"
SENTENCES = "sentences.parquet"


def fingerprint(config: AnnotateConfig) -> object:
    """The prompt's text and the content of the file of recorded answers, beyond their names."""
    template = load_template(config.prompt_template)
    imported = None
    if config.import_responses:
        file = Path(expand_path(config.import_responses))
        imported = file_sha256(file) if file.is_file() else f"missing:{file.name}"
    return {"prompt": hashlib.sha256(template.text.encode()).hexdigest(), "import_responses": imported}


def describe(config: AnnotateConfig, inputs: Inputs) -> str:
    parts = ["annotate", config.model]
    corpus = inputs.get("corpus")
    if corpus is not None:
        sentences = (corpus.manifest().get("rows") or {}).get("sentences")
        if sentences:
            parts.append(f"{sentences:,} sentences")
    parts.append("offline" if config.offline else (config.base_url or "api.openai.com"))  # base_url is redacted (config.py)
    return " · ".join(parts)


def run(ctx: StageContext[AnnotateConfig]) -> StageResult:
    config = ctx.config
    cache_dir = resolve_cache_dir(config, ctx.cache_dir)
    sentences = ctx.inputs["corpus"].dir / SENTENCES
    # The answers so far also go to the work directory as segments (kept on the store when it is
    # remote, so a run killed here resumes elsewhere without paying twice): see cache_sync.py.
    with AnswerJournal(cache_dir, ctx.work_dir / SEGMENTS) as journal:
        result = run_annotation(config, sentences, ctx.out_dir, cache_dir=cache_dir, work_dir=ctx.work_dir, progress=ctx.progress)
    saved = save_answers(cache_dir, sentences, config, ctx.out_dir / ARTIFACT_FILE)  # importable on any worker
    out = stage_result(config, result)
    out.extra["response_cache"] = {"file": ARTIFACT_FILE, "answers": saved, "imported_from_work_dir": journal.imported.added}
    return out


def stage_result(config: AnnotateConfig, result: AnnotationResult) -> StageResult:
    s = result.stats
    summary = result.summary()
    failed = result.failed
    headline = {
        "sentences": result.total,
        "from_cache": s.cache_hits + s.shared,
        "requests": s.requests,
        "retries": summary["retries"],
        "failed": failed,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cost_usd": round(s.cost_usd, 4),
        "wall_s": round(result.wall_s, 2),
        "requests_per_s": round(result.requests_per_s, 3),
    }
    table = [{"what": k.replace("_", " "), "value": v} for k, v in summary.items() if not isinstance(v, dict)]
    table += [{"what": f"retries: {k}", "value": v} for k, v in summary["retries_by_reason"].items()]
    table += [{"what": f"failed: {k}", "value": v} for k, v in result.failed_by_reason().items()]
    reports = [Report("table", "annotate-counts", "Annotation: cache, requests, retries, failures, cost", table)]
    extra = {"annotation": summary, "model": config.model, "prompt_version": result.prompt_version}
    if failed:
        # Not final: the runner reruns the stage, which asks for exactly these (the rest is cached).
        reasons = result.failed_by_reason()
        extra[INCOMPLETE] = {
            "count": failed,
            "by_reason": reasons,
            "note": f"{failed:,} of {result.total:,} sentences have no answer (response null, reason in 'error'); "
                    f"the next run of the annotate stage asks for exactly these again",
        }
        headline["failed_by_reason"] = ", ".join(f"{k}: {v:,}" for k, v in reasons.items())
        lines = [f"**{failed:,} of {result.total:,} sentences failed** and have no answer: the dataset stage leaves "
                 f"them out (they are not read as \"no entity\"), and the next run of the annotate stage asks for "
                 f"exactly these again, paying only for them.", "", "| reason | sentences |", "| --- | --- |"]
        lines += [f"| {k} | {v:,} |" for k, v in reasons.items()]
        reports.append(Report("markdown", "annotate-failed", "Annotation: failed sentences", "\n".join(lines)))
    return StageResult(
        rows={"sentences": result.total, "responses": result.total - failed},
        dropped={},  # no sentence is dropped: a failed one keeps its row, with response null and the error
        headline=headline,
        extra=extra,
        reports=reports,
    )
