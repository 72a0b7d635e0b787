"""Evaluate stage: every encoder on the same few-shot support sets of the same benchmarks.

Writes ``results.parquet`` (one row per encoder, data set, protocol, k, seed, with per-type
scores), ``support_sets.parquet`` (the sampled sentences every encoder saw), ``summary.md``
and ``f1_vs_k.png`` (``f1_vs_k_finetune.png`` too when that protocol ran). Features and
support sets live in a cache shared across runs (``<data root>/cache/evaluate`` unless
configured), so a rerun with a new benchmark or encoder computes only what is new.

With ``evaluate.llms``, each LLM tags the test sentences in context (``llm.py``) through
the annotate stage's client and response cache (``<data root>/cache/llm-responses``):
``llm_answers.parquet`` holds every answer, the summary sets F1 beside cost and time per
1,000 test sentences (``compare.py``), and an LLM run the budget stopped (or with failed
requests) is published *incomplete*: its answered sentences scored, the next run of the
stage asking only for the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from nuner_core.devices import device_name
from nuner_core.dual_encoder.pretrain_artifact import read_outputs
from nuner_core.evaluation.benchmarks import Benchmark, resolve_spec, spec_fingerprint
from nuner_core.evaluation.compare import comparison, encoder_speed
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.evaluation.encoders import EncoderRef, encoders_for_run, identity
from nuner_core.evaluation.features import EncodeStats
from nuner_core.evaluation.frozen import ProbeTimings
from nuner_core.evaluation.harness import Grid, Scores, ZeroShotScores, grids, load_benchmarks, score_encoders, score_zero_shot, unique_encoders
from nuner_core.evaluation.llm import LLMScores, answers_schema, score_llms
from nuner_core.evaluation.report import llm_section, plot_f1_vs_k, plot_f1_vs_threshold, write_summary
from nuner_core.evaluation.results import headline, results_frame, shortfalls, write_support_sets
from nuner_core.evaluation.sampling import UNITS
from nuner_core.evaluation.timing import TimingStore
from nuner_core.paths import expand_path
from nuner_core.stage_api import Inputs, Report, StageContext, StageError, StageResult
from nuner_core.store import INCOMPLETE

CODE_VERSION = "1"
log = logging.getLogger(__name__)


def fingerprint(config: EvaluateConfig) -> object:
    """Identity of the configured inputs: benchmark file contents and local encoders' files. Never raises."""
    benchmarks = []
    for item in config.benchmarks:
        try:
            benchmarks.append(spec_fingerprint(resolve_spec(item)))
        except StageError:
            benchmarks.append(f"unknown:{item}")
    encoders = []
    for spec in config.encoders:
        ref = EncoderRef(spec.name, spec.model, "config", spec.random_init, spec.init_seed)
        try:
            encoders.append(identity(ref))
        except (StageError, ValueError, OSError) as exc:
            encoders.append(f"unresolved:{spec.model}:{type(exc).__name__}")
    return {"benchmarks": benchmarks, "encoders": encoders}


def upstream(config: EvaluateConfig) -> tuple[str, ...]:
    """The pretrain artifact is read (when there is one) only if its encoders are evaluated."""
    return ("pretrain",) if config.use_pretrain else ()


def describe(config: EvaluateConfig, inputs: Inputs) -> str:
    who = ("pretrain encoders + " if config.use_pretrain and "pretrain" in inputs else "") + f"{len(config.encoders)} configured encoder(s)"
    if config.llms:
        who += f" + {len(config.llms)} LLM(s)"
    grids = []
    if config.frozen.enabled:
        grids.append(f"frozen {len(config.frozen.ks)} k x {config.frozen.seeds}")
    if config.finetune.enabled:
        grids.append(f"finetune {len(config.finetune.ks)} k x {config.finetune.seeds}")
    if config.zero_shot.enabled and config.use_pretrain and "pretrain" in inputs:
        grids.append("zero-shot")
    if config.llms:
        grids.append(f"llm {len(config.llm.ks or config.frozen.ks)} k x {config.llm.seeds}")
    return f"evaluate · {who} · {len(config.benchmarks)} benchmark(s) · {', '.join(grids) or 'no protocol'}"


def cache_root(config: EvaluateConfig, ctx: StageContext[EvaluateConfig]) -> Path:
    if config.cache_dir:
        return Path(expand_path(config.cache_dir))
    return ctx.cache_dir / "evaluate"


def run(ctx: StageContext[EvaluateConfig]) -> StageResult:
    config = ctx.config
    started = time.perf_counter()
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    cache = cache_root(config, ctx)
    plan = grids(config)
    sampled = sorted({cell for grid in plan.values() for cell in grid})
    benches, supports, support_hits = load_benchmarks(config, sampled, cache)
    pretrain = ctx.inputs.get("pretrain")
    encoders_wanted = bool(config.encoders) or (pretrain is not None and config.use_pretrain) or not config.llms
    if encoders_wanted:
        refs, base = encoders_for_run(config, pretrain.dir if pretrain is not None else None)
        encoders, merged = unique_encoders(refs)
        base = merged.get(base, base)
    else:  # only LLMs are compared
        encoders, merged, base = [], {}, config.llms[0].name
    device = device_name(config.device)
    timings = TimingStore(cache)

    scores = score_encoders(config, encoders, base, benches, supports, plan, cache, device, ctx.progress)
    duals = read_outputs(pretrain.dir).dual_encoders if pretrain is not None and config.use_pretrain else {}
    zero = score_zero_shot(config, duals, benches, device, ctx.progress, cache) if config.zero_shot.enabled and duals else None
    llm = (score_llms(config, benches, supports, plan["llm"], ctx.cache_dir / "llm-responses", timings, ctx.progress)
           if config.llms else None)
    if not scores.rows and zero is None and not (llm and llm.rows):
        raise StageError("evaluate: nothing to score: no encoder protocol ran, there is no pretrain artifact with a "
                         "two-encoder model for zero_shot, and no LLM answered any test sentence"
                         + (f" ({llm.llms[0]['stopped']})" if llm and llm.llms and llm.llms[0]["stopped"] else ""))

    results = results_frame(scores.rows + (zero.rows if zero else []) + (llm.rows if llm else []))
    results.write_parquet(ctx.out_dir / "results.parquet")
    support_rows = write_support_sets(ctx.out_dir / "support_sets.parquet", benches, supports, sampled)
    short = shortfalls(benches, supports, sampled)
    encoder_info = [
        {"name": r.name, "reference": r.reference, "origin": r.origin, "random_init": r.random_init,
         "init_seed": r.init_seed, "identity": eid}
        for r, eid in encoders
    ]
    bench_info = [b.describe() for b in benches]
    wall = time.perf_counter() - started
    stats, probe_timings = scores.encoding, scores.probes
    notes = _notes(config, plan, wall, stats, probe_timings, scores.finetune_s, cache, merged)
    if zero is not None:
        pl.DataFrame(zero.curves).write_parquet(ctx.out_dir / "zero_shot_thresholds.parquet")
        notes.append(f"Zero-shot (k = 0): {len(duals)} two-encoder model(s) tag each test set from its type names "
                     f"in {zero.seconds:.0f} s; the threshold is fixed before any benchmark is read.")
        if config.zero_shot.backends != ("torch",) or config.zero_shot.decoding != "words":
            notes.append(f"Zero-shot decoding: {config.zero_shot.decoding}; backends: {', '.join(config.zero_shot.backends)} "
                         "(a model on a backend other than torch is named \"<model> (<backend>)\"; ONNX exports under "
                         f"{cache / 'zero_shot_onnx'}).")
        assert pretrain is not None
        notes.append(f"Serve it over HTTP (API and a page): `nuner serve --model nuner=pretrain:{pretrain.key}`.")
    sections, extra_llm = ([], {}) if llm is None else _llm_comparison(ctx.out_dir, config, llm, scores, encoders, benches, device, timings, notes)
    summary = write_summary(ctx.out_dir / "summary.md", results, base, encoder_info, bench_info, short, notes,
                            zero.thresholds if zero else (), sections)
    reports = [Report("markdown", "evaluate-results", "Few-shot NER: mean ± std per data set and k", summary)]
    reports += _plots(ctx.out_dir, config, plan, results, base, benches, zero)

    incomplete = _incomplete(llm) if llm is not None and llm.incomplete else {}
    return StageResult(
        rows={"results": results.height, "support_sets": support_rows,
              **({"llm_answers": len(llm.answers)} if llm is not None else {})},
        dropped={
            "words_truncated_zero_features": stats.words_truncated,
            "words_without_subtoken_zero_features": stats.words_without_subtoken,
            **({f"llm_{name}": sum(m["parse"][name] for m in llm.llms)  # what the answer parser set aside
                for name in ("unparsable", "bad_lines", "not_in_sentence", "unknown_type", "overlapping", "extra_listings")}
               | {"llm_sentences_not_scored": sum(c["test_sentences"] - c["scored"] for c in llm.cells)}
               if llm is not None else {}),
        },
        headline=headline(results, base),
        extra={
            "evaluate": {
                "base": base,
                "encoders": encoder_info,
                "merged_encoders": merged,
                "benchmarks": bench_info,
                "shortfalls": short,
                "cache_dir": str(cache),
                "device": device,
                "support_sets_from_cache": support_hits,
                "timings": {"wall_s": round(wall, 2), "encode_s": round(stats.seconds, 2), "probe_s": round(probe_timings.fit_s, 2),
                            "finetune_s": round(scores.finetune_s, 2), "zero_shot_s": round(zero.seconds, 2) if zero else 0.0,
                            "llm_s": round(llm.seconds, 2) if llm else 0.0},
                "zero_shot": zero.thresholds if zero else [],
                "encoding": asdict(stats),
                **extra_llm,
            },
            **incomplete,
        },
        reports=reports,
    )


def _notes(config: EvaluateConfig, plan: dict[str, Grid], wall: float, stats: EncodeStats,
           probe_timings: ProbeTimings, finetune_s: float, cache: Path, merged: dict[str, str]) -> list[str]:
    """The summary's notes on the protocol: the grid, the sampling, the features, the time spent."""
    method = ("greedy k~2k sampling (Ding et al. 2021): k entity mentions per type" if config.sampling.method == "k2k" else
              "greedy k_w~2k_w sampling (NuNER section 6): k entity words per type")
    notes = [
        f"Grid: {', '.join(f'{p} k in {sorted({k for k, _ in g})} x {len({s for _, s in g})} samplings' for p, g in plan.items())}; "
        f"support sets by {method}, base seed {config.sampling.seed}, shared by all encoders"
        + (" and LLMs." if config.llms else "."),
        f"Frozen features: first sub-token of each word, layers {list(config.frozen.layer_indices)} (hidden_states indices); "
        f"probe: L-BFGS, {config.frozen.max_iter} iterations, l2 {config.frozen.l2}.",
        f"Time: {wall:.0f} s in all; encoding {stats.seconds:.0f} s ({stats.sentences:,} sentences encoded, "
        f"{stats.cached_sentences:,} read from the cache {cache}); probes {probe_timings.fit_s:.1f} s for {probe_timings.fits} fits"
        + (f"; fine-tuning {finetune_s:.0f} s" if "finetune" in plan else "") + ".",
    ]
    if merged:
        notes.append("Merged duplicates (same weights): " + ", ".join(f"{a} -> {b}" for a, b in merged.items()) + ".")
    return notes


def _plots(out_dir: Path, config: EvaluateConfig, plan: dict[str, Grid], results: pl.DataFrame, base: str,
           benches: list[Benchmark], zero: ZeroShotScores | None) -> list[Report]:
    """F1 against k per protocol, and the zero-shot F1 against the threshold: the images and their reports."""
    reports = []
    k_label = "k (examples per entity type)" if config.sampling.method == "k2k" else "k_w (entity words per type)"
    for protocol in plan:
        if not results.filter(pl.col("protocol") == protocol).height:
            continue  # nothing scored (only LLMs configured, or an LLM stopped before its first answer)
        name = "f1_vs_k.png" if protocol == "frozen" or "frozen" not in plan else f"f1_vs_k_{protocol}.png"
        plot_f1_vs_k(out_dir / name, results, protocol, base, [b.name for b in benches], k_label)
        reports.append(Report("image", f"evaluate-f1-vs-k-{protocol}", f"F1 vs k ({protocol})", name))
    if zero is not None:
        plot_f1_vs_threshold(out_dir / "f1_vs_threshold.png", zero.curves, zero.thresholds)
        reports.append(Report("image", "evaluate-zero-shot-threshold", "Zero-shot F1 vs threshold (test sets)",
                              "f1_vs_threshold.png"))
    return reports


def _incomplete(llm: LLMScores) -> dict[str, Any]:
    """The manifest's note that LLM test sentences are still unscored: the next run asks for exactly these."""
    missing = sum(c["test_sentences"] - c["scored"] for c in llm.incomplete)
    stopped = [f"{m['name']}: {m['stopped']}" for m in llm.llms if m["stopped"]]
    incomplete = {INCOMPLETE: {
        "llm_sentences_not_scored": missing,
        "why": ("stopped by the budget (" + "; ".join(stopped) + ")" if stopped else
                "LLM requests failed or had no cached answer offline"),
        "rerun": "the next run of the stage asks only for these; raise max_cost / max_requests if the budget stopped it",
    }}
    log.warning("evaluate: %s LLM test sentence(s) not scored; the artifact is published incomplete: the next run "
                "of the stage asks for exactly these", f"{missing:,}")
    return incomplete


def _llm_comparison(out_dir: Path, config: EvaluateConfig, llm: LLMScores, scores: Scores, encoders: list[tuple[EncoderRef, str]],
                    benches: list[Benchmark], device: str, timings: TimingStore, notes: list[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """The LLMs beside the encoders (F1, cost, time): the summary's section and the manifest's part; adds a note."""
    pl.DataFrame(llm.answers, schema=answers_schema()).write_parquet(out_dir / "llm_answers.parquet")
    speed = encoder_speed(scores, encoders, benches, device, timings)
    compared = comparison(llm, scores, scores.rows + (llm.rows or []), benches, [r.name for r, _ in encoders], speed)
    scored = sum(c["scored"] for c in llm.cells)
    asked = sum(c["test_sentences"] for c in llm.cells)
    notes.append(f"LLMs in context: {', '.join(m['name'] for m in llm.llms)}; {scored:,} of {asked:,} test sentences "
                 f"(over every LLM, data set and sampling) answered and scored in {llm.seconds:.0f} s.")
    extra = {"llms": llm.llms, "llm_cells": llm.cells, "llm_comparison": compared, "encoder_speed":
             [{"encoder": e, "dataset": d, **v} for (e, d), v in speed.items()]}
    return [llm_section(compared, llm.llms, llm.cells, UNITS[config.sampling.method])], extra
