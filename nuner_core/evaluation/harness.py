"""The evaluation loop: every encoder (and LLM) on the same support sets of the same benchmarks.

``load_benchmarks`` samples the support sets once; ``score_encoders`` runs each protocol of
the grid for each encoder × benchmark and returns one row per (encoder, data set, protocol,
k, sampling). Features are read from the shared cache, and an encoder is loaded only when a
feature is missing, so a rerun that adds a benchmark or an encoder computes only what is new.
The LLMs' protocol lives in ``llm.py``; it reads the same support sets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nuner_core.evaluation import finetune as finetune_protocol
from nuner_core.evaluation import frozen as frozen_protocol
from nuner_core.evaluation.benchmarks import Benchmark, load_benchmark, resolve_spec
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.evaluation.encoders import EncoderRef, identity, load_encoder, localise
from nuner_core.evaluation.features import (
    EncodeStats,
    FeatureCache,
    cached_features,
    encode_words,
)
from nuner_core.evaluation.sampling import Supports, SupportSet, support_sets
from nuner_core.iob2.conll import mentions
from nuner_core.stage_api import Progress, StageError

log = logging.getLogger(__name__)

Grid = list[tuple[int, int]]  # (k, sampling index)
EncodeFn = Callable[[list[Sequence[str]], EncodeStats], list[np.ndarray]]  # sentences' words -> per sentence, word features


def grids(config: EvaluateConfig) -> dict[str, Grid]:
    """Per enabled protocol, its (k, sampling) cells (``llm``: when LLMs are configured)."""
    out = {}
    if config.frozen.enabled:
        out["frozen"] = [(k, s) for k in config.frozen.ks for s in range(config.frozen.seeds)]
    if config.finetune.enabled:
        out["finetune"] = [(k, s) for k in config.finetune.ks for s in range(config.finetune.seeds)]
    if config.llms:
        out["llm"] = [(k, s) for k in (config.llm.ks or config.frozen.ks) for s in range(config.llm.seeds)]
    if not out and not config.zero_shot.enabled:
        raise StageError("evaluate: every protocol is disabled (frozen.enabled, finetune.enabled and zero_shot.enabled "
                         "are false, and evaluate.llms is empty)")
    return out


def load_benchmarks(config: EvaluateConfig, sampled: Grid, cache: Path) -> tuple[list[Benchmark], Supports, int]:
    """Every benchmark, its support sets for every sampled (k, seed), and how many came from the cache."""
    benches: list[Benchmark] = []
    supports: Supports = {}
    hits = 0
    for item in config.benchmarks:
        bench = load_benchmark(resolve_spec(item), config.max_test_sentences, config.test_seed)
        benches.append(bench)
        supports[bench.name], found = support_sets(
            bench.pool.sentences, bench.pool.fingerprint, bench.types, sampled,
            config.sampling.seed, config.sampling.max_attempts, cache, config.sampling.method,
        )
        hits += found
    return benches, supports, hits


def unique_encoders(refs: list[EncoderRef]) -> tuple[list[tuple[EncoderRef, str]], dict[str, str]]:
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


class LazyEncoder:
    """Loads the model only when a feature is missing from the cache."""

    def __init__(self, ref: EncoderRef, device: str):
        self.ref = ref
        self.device = device
        self._loaded: tuple[Any, Any] | None = None

    def encode_fn(self, layers: tuple[int, ...], max_length: int, batch_tokens: int) -> EncodeFn:
        def encode(sentences: list[Sequence[str]], stats: EncodeStats) -> list[np.ndarray]:
            if self._loaded is None:
                self._loaded = load_encoder(self.ref, self.device)
            model, tokenizer = self._loaded
            return encode_words(model, tokenizer, sentences, layers, max_length, batch_tokens, stats)

        return encode


@dataclass
class Scores:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per encoder, data set, protocol, k, sampling
    encoding: EncodeStats = field(default_factory=EncodeStats)
    probes: frozen_protocol.ProbeTimings = field(default_factory=frozen_protocol.ProbeTimings)
    finetune_s: float = 0.0
    # Per (encoder, data set): its encoding and probe work, for the time per test sentence (the LLM comparison).
    encoding_by: dict[tuple[str, str], EncodeStats] = field(default_factory=dict)
    probes_by: dict[tuple[str, str], frozen_protocol.ProbeTimings] = field(default_factory=dict)
    # (encoder, data set, k, seed) -> the frozen probe's word predictions on the test set, for the cells LLMs answer.
    predictions: dict[tuple[str, str, int, int], Any] = field(default_factory=dict)


def score_encoders(
    config: EvaluateConfig,
    encoders: list[tuple[EncoderRef, str]],
    base: str,
    benches: list[Benchmark],
    supports: Supports,
    plan: dict[str, Grid],
    cache: Path,
    device: str,
    progress: Progress,
) -> Scores:
    """Run every protocol of ``plan`` for every encoder on every benchmark."""
    scores = Scores()
    layers = config.frozen.layer_indices
    selected = set(config.finetune.benchmarks or [b.name for b in benches])
    llm_cells = set(plan.get("llm", ()))
    llm_benches = set(config.llm.benchmarks or [b.name for b in benches])
    total = len(encoders) * len(benches)
    done = 0
    for ref, encoder_id in encoders:
        encode = LazyEncoder(ref, device).encode_fn(layers, config.max_length, config.batch_tokens)
        for bench in benches:
            found = supports[bench.name]
            if "frozen" in plan:
                mine = scores.encoding_by[(ref.name, bench.name)] = EncodeStats()
                probes = scores.probes_by[(ref.name, bench.name)] = frozen_protocol.ProbeTimings()
                needed = sorted({i for cell in plan["frozen"] for i in found[cell].indices})
                pool = cached_features(FeatureCache(cache, encoder_id, bench.pool.fingerprint, layers, config.max_length),
                                       [s.tokens for s in bench.pool.sentences], needed, encode, mine)
                test_ids = range(len(bench.test.sentences))
                test_map = cached_features(FeatureCache(cache, encoder_id, bench.test.fingerprint, layers, config.max_length),
                                           [s.tokens for s in bench.test.sentences], test_ids, encode, mine)
                kept: dict[tuple[int, int], Any] = {}
                new = frozen_protocol.run_grid(bench, found, plan["frozen"], pool, [test_map[i] for i in test_ids],
                                               config.frozen, probes, kept, llm_cells if bench.name in llm_benches else set())
                scores.predictions.update({(ref.name, bench.name, k, s): p for (k, s), p in kept.items()})
                scores.encoding.add(mine)
                scores.probes.fits += probes.fits
                scores.probes.fit_s += probes.fit_s
                scores.probes.per_fit += probes.per_fit
                scores.rows += [result_row(r, "frozen", ref, encoder_id, base, bench, found) for r in new]
            if "finetune" in plan and bench.name in selected:
                t0 = time.perf_counter()
                new = finetune_protocol.finetune_rows(ref, bench, found, plan["finetune"], config.finetune, config.max_length,
                                                      device)
                scores.finetune_s += time.perf_counter() - t0
                scores.rows += [result_row(r, "finetune", ref, encoder_id, base, bench, found) for r in new]
            done += 1
            progress.update(done, total, f"{ref.name} on {bench.name}")
    return scores


def result_row(r: dict[str, Any], protocol: str, ref: EncoderRef, encoder_id: str, base: str, bench: Benchmark,
               found: dict[tuple[int, int], SupportSet]) -> dict[str, Any]:
    """One row of ``results.parquet`` (schema: ``nuner_core.evaluation.results.RESULTS_SCHEMA``)."""
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
        "support_mentions": sum(len(mentions(bench.pool.sentences[i].tags)) for i in support.indices),
        "shortfall": [{"type": t, "found": n} for t, n in support.shortfall.items()],
        "test_sentences": len(bench.test.sentences),
        "fit_s": r["fit_s"],
    }


@dataclass
class ZeroShotScores:
    rows: list[dict[str, Any]] = field(default_factory=list)  # protocols zero_shot (token) and zero_shot_entity, k = 0
    thresholds: list[dict[str, Any]] = field(default_factory=list)  # per model x data set: the fixed threshold, the upper bounds
    curves: list[dict[str, Any]] = field(default_factory=list)  # per model x data set x threshold: both F1s (the plot)
    seconds: float = 0.0


def score_zero_shot(config: EvaluateConfig, models: dict[str, Path], benches: list[Benchmark], device: str,
                    progress: Progress, cache: Path | None = None) -> ZeroShotScores:
    """Every two-encoder model (name -> directory) on every benchmark's test set, from the type names alone.

    Once per backend of ``zero_shot.backends``: torch reads the directory itself; onnx and
    onnx-int8 an export of it made under ``cache`` (``onnx_export_dir``), reused across
    benchmarks and runs. A backend other than torch names its rows "<model> (<backend>)", so the
    tables show the backends side by side and the torch rows read as they always did.

    The threshold is fixed before any benchmark is read (the model's calibrated one, or
    ``zero_shot.threshold``); the best threshold on each test set is kept only as a labelled
    upper bound.
    """
    from nuner_core.tagging import ZeroShotTagger, model_identity

    out = ZeroShotScores()
    started = time.perf_counter()
    runs = [(name, path, backend) for name, path in models.items() for backend in config.zero_shot.backends]
    done = 0
    for name, path, backend in runs:
        identity_ = model_identity(path)
        if backend == "torch":
            tagger: Any = ZeroShotTagger.from_pretrained(path, device=device)
        else:
            tagger = ZeroShotTagger.from_pretrained(onnx_export_dir(path, identity_, cache), backend=backend,
                                                    device="cpu", threads=config.num_threads)  # onnxruntime's CPU build
            name, identity_ = f"{name} ({backend})", f"{identity_}-{backend}"
        for bench in benches:
            _zero_shot_bench(config, out, tagger, name, str(path), identity_, bench)
            done += 1
            progress.update(done, len(runs) * len(benches), f"zero-shot {name} on {bench.name}")
    out.seconds = time.perf_counter() - started
    return out


def onnx_export_dir(model: Path, identity_: str, cache: Path | None) -> Path:
    """The ONNX export (fp32 and int8) of the model directory ``model``, made once under ``cache`` and reused.

    Never inside ``model`` (a pretrain artifact is read-only). The directory is named by the
    model's identity and the exporter's source, so a retrained model or a changed exporter gets
    a fresh export; ``export_model`` writes it atomically (a temporary directory renamed into place).
    """
    from nuner_core.hashing import short_hash
    from nuner_core.tagging import export_model, onnx_exporter_version

    if cache is None:
        raise StageError("zero_shot.backends other than torch need a cache directory for the ONNX export")
    dest = cache / "zero_shot_onnx" / short_hash(f"{identity_}:{onnx_exporter_version()}")
    if not dest.is_dir():  # export_model renames a complete export into place: a directory there is whole
        log.info("exporting %s to ONNX (fp32 and int8) in %s", model, dest)
        export_model(model, dest, onnx=True, int8=True, overwrite=dest.exists())
    return dest


def _zero_shot_bench(config: EvaluateConfig, out: ZeroShotScores, tagger: Any, name: str, reference: str, identity_: str,
                     bench: Benchmark) -> None:
    """One model (on one backend) on one benchmark: its two result rows, its threshold row and its curve, into ``out``."""
    from nuner_core.evaluation.zero_shot import evaluate_zero_shot

    t0 = time.perf_counter()
    result = evaluate_zero_shot(tagger, bench.test.sentences, bench.types, mapping=config.zero_shot.labels.get(bench.name),
                                threshold=config.zero_shot.threshold, decoding=config.zero_shot.decoding)
    seconds = time.perf_counter() - t0
    for protocol, metric, value, per_type in (
        ("zero_shot", "token_macro_f1", result.score.token_macro_f1, result.score.token_scores),
        ("zero_shot_entity", "entity_micro_f1", result.score.entity_micro_f1, result.score.entity_scores),
    ):
        out.rows.append({
            "encoder": name, "encoder_ref": reference, "encoder_id": identity_, "is_base": False,
            "dataset": bench.name, "protocol": protocol, "k": 0, "seed": 0, "metric": metric, "value": value,
            "per_type": [asdict(s) for s in per_type], "support_sentences": 0, "support_mentions": 0,
            "shortfall": [], "test_sentences": len(bench.test.sentences), "fit_s": seconds,
        })
    out.thresholds.append({
        "model": name, "dataset": bench.name, "threshold": result.threshold, "source": result.threshold_source,
        "token_macro_f1": result.score.token_macro_f1, "entity_micro_f1": result.score.entity_micro_f1,
        "best_token_macro_f1": result.best_token.token_macro_f1, "best_token_threshold": result.best_token.threshold,
        "best_entity_micro_f1": result.best_entity.entity_micro_f1, "best_entity_threshold": result.best_entity.threshold,
        "labels": result.labels,
    })
    out.curves += [{"model": name, "dataset": bench.name, "threshold": p.threshold,
                    "token_macro_f1": p.token_macro_f1, "entity_micro_f1": p.entity_micro_f1} for p in result.curve]
