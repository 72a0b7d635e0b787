"""Evaluate stage: every encoder on the same few-shot support sets of the same benchmarks.

Writes ``results.parquet`` (one row per encoder, data set, protocol, k, seed, with per-type
scores), ``support_sets.parquet`` (the sampled sentences every encoder saw), ``summary.md``
and ``f1_vs_k.png`` (``f1_vs_k_finetune.png`` too when that protocol ran). Features and
support sets live in a cache shared across runs (``<data root>/cache/evaluate`` unless
configured), so a rerun with a new benchmark or encoder computes only what is new.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import polars as pl

from nuner_core.evaluation.benchmarks import resolve_spec, spec_fingerprint
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.evaluation.encoders import EncoderRef, encoders_for_run, identity, resolve_device
from nuner_core.evaluation.harness import grids, load_benchmarks, score_encoders, score_zero_shot, unique_encoders
from nuner_core.evaluation.report import plot_f1_vs_k, plot_f1_vs_threshold, write_summary
from nuner_core.evaluation.results import headline, results_frame, shortfalls, write_support_sets
from nuner_core.paths import expand_path
from nuner_core.pretraining.outputs import read_outputs
from nuner_core.stage_api import Inputs, Report, StageContext, StageError, StageResult

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
    grids = []
    if config.frozen.enabled:
        grids.append(f"frozen {len(config.frozen.ks)} k x {config.frozen.seeds}")
    if config.finetune.enabled:
        grids.append(f"finetune {len(config.finetune.ks)} k x {config.finetune.seeds}")
    if config.zero_shot.enabled and config.use_pretrain and "pretrain" in inputs:
        grids.append("zero-shot")
    return f"evaluate · {who} · {len(config.benchmarks)} benchmark(s) · {', '.join(grids) or 'no protocol'}"


def cache_root(config: EvaluateConfig, ctx: StageContext) -> Path:
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
    refs, base = encoders_for_run(config, pretrain.dir if pretrain is not None else None)
    encoders, merged = unique_encoders(refs)
    base = merged.get(base, base)
    device = resolve_device(config.device)

    scores = score_encoders(config, encoders, base, benches, supports, plan, cache, device, ctx.progress)
    duals = read_outputs(pretrain.dir).dual_encoders if pretrain is not None and config.use_pretrain else {}
    zero = score_zero_shot(config, duals, benches, device, ctx.progress) if config.zero_shot.enabled and duals else None
    if not scores.rows and zero is None:
        raise StageError("evaluate: nothing to score: the only protocol enabled is zero_shot, and there is no pretrain "
                         "artifact with a two-encoder model")

    results = results_frame(scores.rows + (zero.rows if zero else []))
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
    stats, timings = scores.encoding, scores.probes
    notes = [
        f"Grid: {', '.join(f'{p} k in {sorted({k for k, _ in g})} x {len({s for _, s in g})} samplings' for p, g in plan.items())}; "
        f"support sets by greedy k~2k sampling (Ding et al. 2021), base seed {config.sampling.seed}, shared by all encoders.",
        f"Frozen features: first sub-token of each word, layers {list(config.frozen.layer_indices)} (hidden_states indices); "
        f"probe: L-BFGS, {config.frozen.max_iter} iterations, l2 {config.frozen.l2}.",
        f"Time: {wall:.0f} s in all; encoding {stats.seconds:.0f} s ({stats.sentences:,} sentences encoded, "
        f"{stats.cached_sentences:,} read from the cache {cache}); probes {timings.fit_s:.1f} s for {timings.fits} fits"
        + (f"; fine-tuning {scores.finetune_s:.0f} s" if "finetune" in plan else "") + ".",
    ]
    if merged:
        notes.append("Merged duplicates (same weights): " + ", ".join(f"{a} -> {b}" for a, b in merged.items()) + ".")
    if zero is not None:
        pl.DataFrame(zero.curves).write_parquet(ctx.out_dir / "zero_shot_thresholds.parquet")
        notes.append(f"Zero-shot (k = 0): {len(duals)} two-encoder model(s) tag each test set from its type names "
                     f"in {zero.seconds:.0f} s; the threshold is fixed before any benchmark is read.")
    summary = write_summary(ctx.out_dir / "summary.md", results, base, encoder_info, bench_info, short, notes,
                            zero.thresholds if zero else ())
    reports = [Report("markdown", "evaluate-results", "Few-shot NER: mean ± std per data set and k", summary)]
    for protocol in plan:
        name = "f1_vs_k.png" if protocol == "frozen" or "frozen" not in plan else f"f1_vs_k_{protocol}.png"
        plot_f1_vs_k(ctx.out_dir / name, results, protocol, base, [b.name for b in benches])
        reports.append(Report("image", f"evaluate-f1-vs-k-{protocol}", f"F1 vs k ({protocol})", name))
    if zero is not None:
        plot_f1_vs_threshold(ctx.out_dir / "f1_vs_threshold.png", zero.curves, zero.thresholds)
        reports.append(Report("image", "evaluate-zero-shot-threshold", "Zero-shot F1 vs threshold (test sets)",
                              "f1_vs_threshold.png"))

    return StageResult(
        rows={"results": results.height, "support_sets": support_rows},
        dropped={
            "words_truncated_zero_features": stats.words_truncated,
            "words_without_subtoken_zero_features": stats.words_without_subtoken,
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
                "timings": {"wall_s": round(wall, 2), "encode_s": round(stats.seconds, 2), "probe_s": round(timings.fit_s, 2),
                            "finetune_s": round(scores.finetune_s, 2), "zero_shot_s": round(zero.seconds, 2) if zero else 0.0},
                "zero_shot": zero.thresholds if zero else [],
                "encoding": asdict(stats),
            }
        },
        reports=reports,
    )
