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
from typing import Any, Callable

import polars as pl

from nuner_core.paths import expand_path
from nuner_core.evaluation import finetune as finetune_protocol
from nuner_core.evaluation import frozen as frozen_protocol
from nuner_core.evaluation.benchmarks import Benchmark, load_benchmark, resolve_spec, spec_fingerprint
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.evaluation.encoders import EncoderRef, encoders_for_run, identity, load_encoder, localise, resolve_device
from nuner_core.evaluation.features import EncodeStats, FeatureCache, cached_features, encode_words
from nuner_core.evaluation.report import plot_f1_vs_k, write_summary
from nuner_core.evaluation.sampling import SupportSet, support_sets
from nuner_core.stage_api import Report, StageContext, StageError, StageResult

CODE_VERSION = "1"
log = logging.getLogger(__name__)

PER_TYPE = pl.List(pl.Struct({"type": pl.String, "precision": pl.Float64, "recall": pl.Float64, "f1": pl.Float64,
                              "support": pl.Int64, "predicted": pl.Int64}))
SHORTFALL = pl.List(pl.Struct({"type": pl.String, "found": pl.Int64}))


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


def describe(config: EvaluateConfig, inputs: dict) -> str:
    who = ("pretrain encoders + " if config.use_pretrain and "pretrain" in inputs else "") + f"{len(config.encoders)} configured encoder(s)"
    grids = []
    if config.frozen.enabled:
        grids.append(f"frozen {len(config.frozen.ks)} k x {config.frozen.seeds}")
    if config.finetune.enabled:
        grids.append(f"finetune {len(config.finetune.ks)} k x {config.finetune.seeds}")
    return f"evaluate · {who} · {len(config.benchmarks)} benchmark(s) · {', '.join(grids) or 'no protocol'}"


def cache_root(config: EvaluateConfig, ctx: StageContext) -> Path:
    if config.cache_dir:
        return Path(expand_path(config.cache_dir))
    return ctx.cache_dir / "evaluate"


def grids(config: EvaluateConfig) -> dict[str, list[tuple[int, int]]]:
    out = {}
    if config.frozen.enabled:
        out["frozen"] = [(k, s) for k in config.frozen.ks for s in range(config.frozen.seeds)]
    if config.finetune.enabled:
        out["finetune"] = [(k, s) for k in config.finetune.ks for s in range(config.finetune.seeds)]
    if not out:
        raise StageError("evaluate: both protocols are disabled (frozen.enabled and finetune.enabled are false)")
    return out


class LazyEncoder:
    """Loads the model only when a feature is missing from the cache."""

    def __init__(self, ref: EncoderRef, device: str):
        self.ref = ref
        self.device = device
        self._loaded: tuple[Any, Any] | None = None

    def encode_fn(self, layers: tuple[int, ...], max_length: int, batch_tokens: int) -> Callable:
        def encode(sentences, stats: EncodeStats):
            if self._loaded is None:
                self._loaded = load_encoder(self.ref, self.device)
            model, tokenizer = self._loaded
            return encode_words(model, tokenizer, sentences, layers, max_length, batch_tokens, stats)

        return encode


def load_benchmarks(
    config: EvaluateConfig, sampled: list[tuple[int, int]], cache: Path
) -> tuple[list[Benchmark], dict[str, dict[tuple[int, int], SupportSet]], int]:
    """Every benchmark, its support sets for every sampled (k, seed), and how many came from the cache."""
    benches: list[Benchmark] = []
    supports: dict[str, dict[tuple[int, int], SupportSet]] = {}
    hits = 0
    for item in config.benchmarks:
        bench = load_benchmark(resolve_spec(item), config.max_test_sentences, config.test_seed)
        benches.append(bench)
        supports[bench.name], found = support_sets(
            bench.pool.sentences, bench.pool.fingerprint, bench.types, sampled,
            config.sampling.seed, config.sampling.max_attempts, cache,
        )
        hits += found
    return benches, supports, hits


def run(ctx: StageContext) -> StageResult:
    config: EvaluateConfig = ctx.config  # type: ignore[assignment]
    started = time.perf_counter()
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    cache = cache_root(config, ctx)
    plan = grids(config)
    sampled = sorted({cell for grid in plan.values() for cell in grid})
    benches, supports, support_hits = load_benchmarks(config, sampled, cache)
    selected = set(config.finetune.benchmarks or [b.name for b in benches])

    refs, base = encoders_for_run(config, ctx.inputs.get("pretrain"))
    encoders, merged = _unique(refs)
    base = merged.get(base, base)

    rows: list[dict[str, Any]] = []
    stats = EncodeStats()
    timings = frozen_protocol.ProbeTimings()
    finetune_s = 0.0
    layers = config.frozen.layer_indices
    device = resolve_device(config.device)
    total = len(encoders) * len(benches)
    done = 0
    for ref, encoder_id in encoders:
        lazy = LazyEncoder(ref, device)
        encode = lazy.encode_fn(layers, config.max_length, config.batch_tokens)
        for bench in benches:
            found = supports[bench.name]
            if "frozen" in plan:
                needed = sorted({i for cell in plan["frozen"] for i in found[cell].indices})
                pool = cached_features(FeatureCache(cache, encoder_id, bench.pool.fingerprint, layers, config.max_length),
                                       [s.tokens for s in bench.pool.sentences], needed, encode, stats)
                test_ids = range(len(bench.test.sentences))
                test_map = cached_features(FeatureCache(cache, encoder_id, bench.test.fingerprint, layers, config.max_length),
                                           [s.tokens for s in bench.test.sentences], test_ids, encode, stats)
                new = frozen_protocol.run_grid(bench, found, plan["frozen"], pool, [test_map[i] for i in test_ids],
                                               config.frozen, timings)
                rows += [_row(r, "frozen", ref, encoder_id, base, bench, found) for r in new]
            if "finetune" in plan and bench.name in selected:
                t0 = time.perf_counter()
                new = finetune_protocol.finetune_rows(ref, bench, found, plan["finetune"], config.finetune, config.max_length,
                                                      device)
                finetune_s += time.perf_counter() - t0
                rows += [_row(r, "finetune", ref, encoder_id, base, bench, found) for r in new]
            done += 1
            ctx.progress.update(done, total, f"{ref.name} on {bench.name}")

    results = _results_frame(rows)
    results.write_parquet(ctx.out_dir / "results.parquet")
    support_rows = _write_support_sets(ctx.out_dir / "support_sets.parquet", benches, supports, sampled)
    shortfalls = _shortfalls(benches, supports, sampled)
    encoder_info = [
        {"name": r.name, "reference": r.reference, "origin": r.origin, "random_init": r.random_init,
         "init_seed": r.init_seed, "identity": eid}
        for r, eid in encoders
    ]
    bench_info = [b.describe() for b in benches]
    wall = time.perf_counter() - started
    notes = [
        f"Grid: {', '.join(f'{p} k in {sorted({k for k, _ in g})} x {len({s for _, s in g})} samplings' for p, g in plan.items())}; "
        f"support sets by greedy k~2k sampling (Ding et al. 2021), base seed {config.sampling.seed}, shared by all encoders.",
        f"Frozen features: first sub-token of each word, layers {list(layers)} (hidden_states indices); "
        f"probe: L-BFGS, {config.frozen.max_iter} iterations, l2 {config.frozen.l2}.",
        f"Time: {wall:.0f} s in all; encoding {stats.seconds:.0f} s ({stats.sentences:,} sentences encoded, "
        f"{stats.cached_sentences:,} read from the cache {cache}); probes {timings.fit_s:.1f} s for {timings.fits} fits"
        + (f"; fine-tuning {finetune_s:.0f} s" if "finetune" in plan else "") + ".",
    ]
    if merged:
        notes.append("Merged duplicates (same weights): " + ", ".join(f"{a} -> {b}" for a, b in merged.items()) + ".")
    summary = write_summary(ctx.out_dir / "summary.md", results, base, encoder_info, bench_info, shortfalls, notes)
    reports = [Report("markdown", "evaluate-results", "Few-shot NER: mean ± std per data set and k", summary)]
    for protocol in plan:
        name = "f1_vs_k.png" if protocol == "frozen" or "frozen" not in plan else f"f1_vs_k_{protocol}.png"
        plot_f1_vs_k(ctx.out_dir / name, results, protocol, base, [b.name for b in benches])
        reports.append(Report("image", f"evaluate-f1-vs-k-{protocol}", f"F1 vs k ({protocol})", name))

    return StageResult(
        rows={"results": results.height, "support_sets": support_rows},
        dropped={
            "words_truncated_zero_features": stats.words_truncated,
            "words_without_subtoken_zero_features": stats.words_without_subtoken,
        },
        headline=_headline(results, base),
        extra={
            "evaluate": {
                "base": base,
                "encoders": encoder_info,
                "merged_encoders": merged,
                "benchmarks": bench_info,
                "shortfalls": shortfalls,
                "cache_dir": str(cache),
                "device": device,
                "support_sets_from_cache": support_hits,
                "timings": {"wall_s": round(wall, 2), "encode_s": round(stats.seconds, 2), "probe_s": round(timings.fit_s, 2),
                            "finetune_s": round(finetune_s, 2)},
                "encoding": asdict(stats),
            }
        },
        reports=reports,
    )


def _unique(refs: list[EncoderRef]) -> tuple[list[tuple[EncoderRef, str]], dict[str, str]]:
    """Encoders with their identities; a later encoder with the same weights as an earlier one is merged into it."""
    kept: list[tuple[EncoderRef, str]] = []
    merged: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for ref in refs:
        ref = localise(ref)
        encoder_id = identity(ref)
        if encoder_id in by_identity:
            merged[ref.name] = by_identity[encoder_id]
            log.info("encoder %s has the same weights as %s: evaluated once, as %s", ref.name, merged[ref.name], merged[ref.name])
            continue
        by_identity[encoder_id] = ref.name
        kept.append((ref, encoder_id))
    return kept, merged


def _row(r: dict[str, Any], protocol: str, ref: EncoderRef, encoder_id: str, base: str, bench: Benchmark,
         found: dict[tuple[int, int], SupportSet]) -> dict[str, Any]:
    support = found[(r["k"], r["seed"])]
    return {
        "encoder": ref.name,
        "encoder_ref": ref.reference + (" (random init)" if ref.random_init else ""),
        "encoder_id": encoder_id,
        "is_base": ref.name == base,
        "dataset": bench.name,
        "protocol": protocol,
        "k": r["k"],
        "seed": r["seed"],
        "metric": r["metric"],
        "value": r["value"],
        "per_type": [asdict(s) for s in r["per_type"]],
        "support_sentences": len(support.indices),
        "support_mentions": sum(support.counts.values()),
        "shortfall": [{"type": t, "found": n} for t, n in support.shortfall.items()],
        "test_sentences": len(bench.test.sentences),
        "fit_s": r["fit_s"],
    }


def _results_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {
        "encoder": pl.String, "encoder_ref": pl.String, "encoder_id": pl.String, "is_base": pl.Boolean,
        "dataset": pl.String, "protocol": pl.String, "k": pl.Int64, "seed": pl.Int64, "metric": pl.String,
        "value": pl.Float64, "per_type": PER_TYPE, "support_sentences": pl.Int64, "support_mentions": pl.Int64,
        "shortfall": SHORTFALL, "test_sentences": pl.Int64, "fit_s": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def _write_support_sets(path: Path, benches: list[Benchmark], supports, grid) -> int:
    rows = []
    for bench in benches:
        for k, seed in grid:
            for position, index in enumerate(supports[bench.name][(k, seed)].indices):
                sentence = bench.pool.sentences[index]
                rows.append({"dataset": bench.name, "k": k, "seed": seed, "position": position, "pool_index": index,
                             "tokens": list(sentence.tokens), "tags": list(sentence.tags)})
    schema = {"dataset": pl.String, "k": pl.Int64, "seed": pl.Int64, "position": pl.Int64, "pool_index": pl.Int64,
              "tokens": pl.List(pl.String), "tags": pl.List(pl.String)}
    pl.DataFrame(rows, schema=schema).write_parquet(path)
    return len(rows)


def _shortfalls(benches: list[Benchmark], supports, grid) -> list[dict[str, Any]]:
    out = []
    for bench in benches:
        for k in sorted({k for k, _ in grid}):
            sets = [supports[bench.name][(kk, s)] for kk, s in grid if kk == k]
            short = [s for s in sets if s.shortfall]
            if not short:
                continue
            found: dict[str, list[int]] = {}
            for s in short:
                for t, n in s.shortfall.items():
                    found.setdefault(t, []).append(n)
            types = ", ".join(f"{t}: {min(v)}-{max(v)} in {len(v)}" for t, v in sorted(found.items()))
            out.append({"dataset": bench.name, "k": k, "samplings": len(sets), "samplings_short": len(short),
                        "types": types, "detail": {t: v for t, v in found.items()}})
    return out


def _headline(results: pl.DataFrame, base: str) -> dict[str, Any]:
    """Per protocol and encoder: F1 (%) averaged over data sets and samplings at each k, and the gap to the base."""
    out: dict[str, Any] = {}
    grouped = results.group_by(["protocol", "encoder", "k"]).agg(pl.col("value").mean() * 100).sort(["protocol", "encoder", "k"])
    means = {(r["protocol"], r["encoder"], r["k"]): r["value"] for r in grouped.iter_rows(named=True)}
    for (protocol, encoder, k), value in means.items():
        key = f"{protocol} {encoder} k={k}"
        out[key] = round(value, 2)
        if encoder != base and (protocol, base, k) in means:
            out[key + " vs base"] = round(value - means[(protocol, base, k)], 2)
    return out


