"""Benchmark of the dataset stage core: parse, align, filter, split, write.

Synthetic responses for ``--sentences`` sentences (default 1,000,000) with about 4.4 entity
lines each (the paper's ratio: 4.38M annotations for 1M sentences), in the messy shapes
LLMs produce (numbering, quotes, blank lines, prose, entities not in the sentence, wrong
case, ~5% non-ASCII sentences). Each repetition runs the whole stage (``stage.run``: read
responses.parquet, parse, align, filter, split, write the Parquet files and the plot) in a
fresh subprocess pinned to one core with one polars thread, so its peak RSS is the stage's
own. Last line: ``dataset sentences_per_s=<median> peak_rss_mb=<max>``.

    .venv/bin/python benchmarks/dataset_bench.py                      # 1M sentences, 3 repetitions
    .venv/bin/python benchmarks/dataset_bench.py --sentences 100000 --repeats 1
    .venv/bin/python benchmarks/dataset_bench.py --smoke      # seconds: 2,000 sentences, one run, a fresh file
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, n: int, seed: int = 0) -> dict[str, float]:
    """Write a responses.parquet with ``n`` synthetic sentences; returns its shape."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    syllables = ["ka", "ri", "to", "men", "sa", "lo", "ve", "dan", "por", "ti", "bel", "ston", "ar", "que", "lin"]
    vocab = np.array(
        ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(20_000)], dtype=object
    )
    vocab[:200] = [w.capitalize() for w in vocab[:200]]  # some capitalised names
    accented = np.array(["café", "Zürich", "naïve", "Ángel", "São", "Łódź"], dtype=object)
    # A heavy-tailed concept distribution; one concept in 97 is the paper's filtered "concept".
    concepts = np.array([f"kind {i}" if i % 97 else "concept" for i in range(1, 40_000)], dtype=object)
    concept_p = 1.0 / np.arange(1, len(concepts) + 1) ** 1.1
    concept_p /= concept_p.sum()

    n_words = rng.integers(8, 30, size=n)
    n_ents = rng.poisson(4.4, size=n)
    total = int(n_ents.sum())
    word_ids = rng.integers(0, len(vocab), size=int(n_words.sum()))
    accent_at = rng.random(n) < 0.05
    concept_ids = rng.choice(len(concepts), size=total, p=concept_p)
    ent_pos = rng.random(total)  # where the entity starts, as a share of the sentence
    ent_len = rng.integers(1, 4, size=total)
    kind = rng.random(total)  # < 0.03: not in the sentence, < 0.05: wrong case
    style = rng.random(total)  # < 0.1: numbered, < 0.15: quoted, no description
    noise = rng.random(n)  # < 0.02: prose first, < 0.04: trailing blank line
    failed = rng.random(n) < 0.002
    ids, texts, responses = [], [], []
    w = k = 0
    for i in range(n):
        words = list(vocab[word_ids[w : w + n_words[i]]])
        w += n_words[i]
        if accent_at[i]:
            words[i % len(words)] = accented[i % len(accented)]
        text = " ".join(words) + "."
        lines = []
        for j in range(n_ents[i]):
            a = int(ent_pos[k] * len(words))
            entity = " ".join(words[a : a + ent_len[k]])
            if kind[k] < 0.03:
                entity = "unseen thing"
            elif kind[k] < 0.05:
                entity = entity.upper()
            concept = concepts[concept_ids[k]]
            if style[k] < 0.1:
                lines.append(f"{j + 1}. {entity} <> {concept} <> a description of {entity}")
            elif style[k] < 0.15:
                lines.append(f'"{entity}" <> "{concept}"')
            else:
                lines.append(f"{entity} <> {concept} <> a description of {entity}")
            k += 1
        if noise[i] < 0.02:
            lines.insert(0, "Here are the entities I found:")
        elif noise[i] < 0.04:
            lines.append("")
        ids.append(f"b{i:08d}")
        texts.append(text)
        responses.append(None if failed[i] else "\n".join(lines))
    frame = pl.DataFrame({"id": ids, "text": texts, "response": responses}).with_columns(
        model=pl.lit("synthetic"),
        prompt_version=pl.lit("1"),
        prompt_tokens=pl.lit(0, pl.Int64),
        completion_tokens=pl.lit(0, pl.Int64),
        from_cache=pl.lit(False),
        error=pl.when(pl.col("response").is_null()).then(pl.lit("synthetic failure")).otherwise(None),
    )
    frame.write_parquet(path)
    return {"sentences": n, "lines_per_sentence": float(n_ents.mean())}


def worker(responses: Path, threads: int) -> None:
    """One repetition: run the stage on ``responses`` and print its timing as JSON."""
    from nuner_core.dataset.config import DatasetConfig
    from nuner_core.dataset.stage import run
    from nuner_core.stage_api import LogProgress, StageContext

    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        cfg = DatasetConfig(path=str(responses))
        ctx = StageContext(config=cfg, inputs={}, out_dir=out, work_dir=Path(tmp) / "work", cache_dir=Path(tmp) / "cache",
                           progress=LogProgress("dataset", every_s=1e9))
        started = time.perf_counter()
        result = run(ctx)
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = result.extra["counts"]
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "answers": counts["answers"],
                "lines": counts["lines"],
                "sentences": counts["sentences.kept"],
                "mentions": counts["mentions.kept"],
                "peak_rss_mb": peak_mb,
                "threads": threads,
                "phase_s": result.extra["phase_s"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="polars threads and CPU cores of each repetition")
    parser.add_argument("--data", type=Path, default=None, help="reuse/keep the synthetic responses.parquet here")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="seconds: 2,000 sentences, one run, generated afresh")
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.threads)
        return
    if args.smoke:
        args.sentences, args.repeats = 2000, 1
        args.data = args.data or Path(tempfile.mkdtemp(prefix="dataset-bench-smoke-")) / "responses.parquet"

    data = args.data or Path(tempfile.gettempdir()) / f"dataset-bench-{args.sentences}.parquet"
    if not data.is_file():
        started = time.perf_counter()
        shape = generate(data, args.sentences)
        print(f"generated {data} ({shape}) in {time.perf_counter() - started:.1f}s", flush=True)
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    cores = sorted(os.sched_getaffinity(0))[: args.threads]
    rates, peaks = [], []
    for rep in range(args.repeats):
        cmd = [sys.executable, __file__, "--worker", str(data), "--threads", str(args.threads)]
        if hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", ",".join(map(str, cores))] + cmd
        done = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        rate = stats["answers"] / stats["seconds"]
        rates.append(rate)
        peaks.append(stats["peak_rss_mb"])
        print(
            f"run {rep + 1}: {stats['answers']:,} answers, {stats['lines']:,} lines -> {stats['sentences']:,} sentences, "
            f"{stats['mentions']:,} mentions in {stats['seconds']:.1f}s = {rate:,.0f} sentences/s, "
            f"peak RSS {stats['peak_rss_mb']:,.0f} MB; phases (s): {stats['phase_s']}",
            flush=True,
        )
    if args.smoke:
        data.unlink()  # a smoke run's file is its own
    print(f"dataset sentences_per_s={statistics.median(rates):.0f} peak_rss_mb={max(peaks):.0f}")


if __name__ == "__main__":
    main()
