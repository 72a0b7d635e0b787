"""Corpus stage throughput and memory on a synthetic web-text corpus.

Builds ~--mb MB of JSON lines (documents of paragraphs of sentences, with the junk a web
crawl has: short lines, long tokens, number soup, repeated boilerplate), then runs the
stage's core (read, split, filter, de-duplicate, sample) --repeats times, each in a fresh
process so that its peak RSS is its own. Prints the median sentences/s (sentences seen
per second of wall time) and the largest peak RSS.

    python benchmarks/corpus_bench.py --mb 100
    python benchmarks/corpus_bench.py --mb 10
    python benchmarks/corpus_bench.py --smoke     # seconds: 1 MB, 1,000 sampled, one run
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there one all we their can been has more if will would who so no about when what up out them "
    "market city river council company government research students energy water health music season players "
    "London Paris Microsoft Amazon Tuesday January Congress Europe Python Toyota Nile Beethoven NASA"
).split()


def make_corpus(path: Path, megabytes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    boilerplate = ["Share this post on Facebook and Twitter today.", "Posted by admin on 12/11/2006 - 6:21pm."]
    target = megabytes * 1_000_000
    written = 0
    with path.open("w", encoding="utf-8") as fh:
        doc = 0
        while written < target:
            paragraphs = []
            for _ in range(rng.randint(2, 6)):
                sentences = []
                for _ in range(rng.randint(1, 6)):
                    n = rng.randint(3, 40)
                    words = rng.choices(WORDS, k=n)
                    if rng.random() < 0.03:
                        words.append("https://example.org/" + "x" * 60)
                    sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
                if rng.random() < 0.1:
                    sentences.append(rng.choice(boilerplate))
                paragraphs.append(" ".join(sentences))
            line = json.dumps({"id": f"doc{doc}", "text": "\n".join(paragraphs)}) + "\n"
            fh.write(line)
            written += len(line)
            doc += 1


def run_once(corpus: Path, sample: int) -> dict:
    from nuner_core.corpus.config import CorpusConfig, CorpusSource
    from nuner_core.corpus.stage import build_sentences

    config = CorpusConfig(sources=(CorpusSource(path=str(corpus)),), num_sentences=sample)
    start = time.perf_counter()
    counts, kept = build_sentences(config, corpus.with_suffix(".out.parquet"))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "sentences_seen": counts.sentences_seen,
        "kept": kept,
        "sentences_per_s": counts.sentences_seen / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100, help="corpus size in MB")
    parser.add_argument("--sample", type=int, default=50_000, help="sentences to sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 MB, 1,000 sampled, one run")
    args = parser.parse_args()
    if args.smoke:
        args.mb, args.sample, args.repeats = 1, 1000, 1
    if args.child:
        print(json.dumps(run_once(Path(args.child), args.sample)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "web.jsonl"
        start = time.perf_counter()
        make_corpus(corpus, args.mb)
        print(f"built {corpus.stat().st_size / 1e6:.0f} MB corpus in {time.perf_counter() - start:.0f} s", flush=True)
        runs = []
        for i in range(args.repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(corpus), "--sample", str(args.sample)],
                capture_output=True, text=True, check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(
                f"run {i + 1}: {r['sentences_seen']:,} sentences seen, {r['kept']:,} kept, "
                f"{r['seconds']:.1f} s, {r['sentences_per_s']:,.0f} sentences/s, peak {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    median = statistics.median(r["sentences_per_s"] for r in runs)
    peak = max(r["peak_rss_mb"] for r in runs)
    print(f"corpus sentences_per_s={median:.0f} peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
