"""How cost grows: each stage's own code at three sizes a decade apart, on seeded generated data.

For each stage and size, one process prepares the data (not timed) and a fresh process runs the
stage's code on it and reports its wall time and peak RSS (``ru_maxrss``: the interpreter and its
imports included, which is what a worker pays). Per stage: the fitted exponent of time against
size (least-squares slope in log-log over the three sizes) and the RSS growth (peak RSS at the
largest size / at the smallest). Goal: exponent <= 1.1 and RSS growth <= 1.5 everywhere.

    corpus      build_sentences (read, split, filter, de-duplicate, sample half) over generated JSON-lines documents
    annotate    run_annotation against the local fake server (no latency, limits that do not bind):
                the client, cache and writer per sentence; "annotate warm": the same again on the warm cache
    dataset     the dataset stage (parse, align, filter, split, write) over generated LLM answers, in batches
                of 1,000 answers (the default batch, 100,000, would hold every size here at once)
    tag         the tag stage over documents of mixed length (1 to 400 words), a tiny encoder from a config,
                10 labels, one torch thread (so the encoder does not hide the per-document overhead)
    store sync  publish + fetch (another machine's empty directory) of an artifact of N 1-KB files, moto's S3 API
    store ls/gc inventory.scan + plan_gc (what ``nuner store ls`` and ``gc`` do before printing) over N artifacts
    planning    plan(demo config, ["evaluate"]) with N artifacts of every upstream stage in the store

The issue's sizes a decade larger for corpus, annotate and dataset (10^4-10^6, 10^3-10^5) do not fit
15 minutes on 2 cores with the other stages; these are a decade smaller, still a decade apart.

    .venv/bin/python benchmarks/scale.py                  # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/scale.py --stages dataset,tag
    .venv/bin/python benchmarks/scale.py --smoke          # seconds: tiny sizes, all in this process (RSS meaningless)

Last line: ``worst_exponent=X (stage) worst_rss_growth=Y (stage)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake LLM server is test support
LABELS = ["person", "organization", "location", "date", "product", "event", "company", "city", "country", "money"]
KEY_ENV = "SCALE_BENCH_KEY"
DATASET_BATCH = 1000


# ----------------------------------------------------------------------------- data, prepared in a process of its own


def make_documents(path: Path, sentences: int, seed: int = 0) -> None:
    """JSON-lines web-like documents holding ``sentences`` sentences in all (corpus_bench's words and junk)."""
    from corpus_bench import WORDS

    rng = random.Random(seed)
    written, doc = 0, 0
    with path.open("w", encoding="utf-8") as fh:
        while written < sentences:
            parts = []
            for _ in range(min(rng.randint(3, 20), sentences - written)):
                words = rng.choices(WORDS, k=rng.randint(3, 40))
                parts.append(" ".join(words).capitalize() + rng.choice(".!?"))
            written += len(parts)
            fh.write(json.dumps({"id": f"doc{doc}", "text": " ".join(parts)}) + "\n")
            doc += 1


def make_tag_documents(path: Path, n: int, seed: int = 0) -> None:
    """``n`` documents of 1 to 400 words (log-uniform: most short, some past one window)."""
    from corpus_bench import WORDS

    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            words = rng.choices(WORDS, k=int(math.exp(rng.uniform(0, math.log(400)))))
            fh.write(json.dumps({"id": f"d{i}", "text": " ".join(words) + "."}) + "\n")


def make_dual_encoder(root: Path) -> Path:
    from _smoke import tiny_encoder

    for seed, name in enumerate(("text_encoder", "concept_encoder")):
        tiny_encoder(root / name, seed)
    (root / "dual_encoder.json").write_text(json.dumps({"similarity": "cosine", "temperature": 5.0, "logit_bias": -5.0, "pooling": "mean"}))
    return root


def publish_many(store_dir: Path, stages: list[str], per_stage: int) -> None:
    """``per_stage`` small artifacts of each stage in a local store (their creation times a second apart)."""
    from nuner_core.store import open_store

    clock = iter(range(10**9))
    store = open_store(store_dir, clock=lambda: 1.7e9 + next(clock))
    for stage in stages:
        for i in range(per_stage):
            with store.publish(stage, f"{random.Random(i).getrandbits(64):016x}", {"stage": stage}) as out:
                (out / "part.txt").write_text(f"{stage} {i}\n")


def prepare(stage: str, size: int, work: Path) -> None:
    if stage == "corpus":
        make_documents(work / "docs.jsonl", size)
    elif stage == "annotate":
        import pyarrow as pa
        import pyarrow.parquet as pq

        texts = [f"Sentence {i}: Marie Curie worked with radium at the University of Paris in {1890 + i % 40}." for i in range(size)]
        pq.write_table(pa.table({"id": [f"s{i:07d}" for i in range(size)], "text": texts}), work / "sentences.parquet")
    elif stage == "dataset":
        from dataset_bench import generate

        generate(work / "responses.parquet", size)
    elif stage == "tag":
        make_tag_documents(work / "docs.jsonl", size)
        make_dual_encoder(work / "model")
    elif stage == "store sync":
        (work / "src").mkdir()
        for i in range(size):
            (work / "src" / f"part-{i:05d}.bin").write_bytes(random.Random(i).randbytes(1000))
    elif stage == "store ls/gc":
        publish_many(work / "store", ["corpus", "annotate", "dataset", "pretrain", "evaluate"], size // 5)
    elif stage == "planning":
        publish_many(work / "store", ["corpus", "annotate", "dataset", "pretrain"], size)


# ----------------------------------------------------------------------------- the stages' code, timed in a fresh process


def measure(stage: str, size: int, work: Path) -> dict[str, float]:
    """Seconds of the stage's code on the prepared data (several figures for annotate: cold and warm)."""
    started = time.perf_counter()
    if stage == "corpus":
        from nuner_core.corpus.config import CorpusConfig, CorpusSource
        from nuner_core.corpus.stage import build_sentences

        build_sentences(CorpusConfig(sources=(CorpusSource(path=str(work / "docs.jsonl")),), num_sentences=max(1, size // 2)), work / "out.parquet")
    elif stage == "annotate":
        return measure_annotate(work)
    elif stage in ("dataset", "tag"):
        run_stage_module(stage, work)
    elif stage == "store sync":
        from nuner_core.store import open_store

        url = f"s3://{os.environ['SCALE_BUCKET']}/{work.name}"
        with open_store(url, local_dir=work / "a").publish("bench", "k1", {}) as out:
            for f in (work / "src").iterdir():
                os.link(f, out / f.name)
        assert open_store(url, local_dir=work / "b").lookup("bench", "k1") is not None
    elif stage == "store ls/gc":
        from nuner_core.registry import STAGE_NAMES
        from nuner_core.store import inventory, open_store

        store = open_store(work / "store")
        inventory.plan_gc(inventory.scan(store, STAGE_NAMES), now=store.clock())
    elif stage == "planning":
        from nuner_core.config import load_config
        from nuner_core.pipeline import plan
        from nuner_core.store import open_store

        plan(load_config("demo", {}), ["evaluate"], open_store(work / "store"))
    return {stage: time.perf_counter() - started}


def measure_annotate(work: Path) -> dict[str, float]:
    from nuner_core.annotation.annotate import run_annotation
    from nuner_core.annotation.config import AnnotateConfig

    config = AnnotateConfig(model="scale-model", base_url=os.environ["SCALE_LLM_URL"], api_key_env=KEY_ENV, requests_per_minute=10**8,
                            tokens_per_minute=None, max_in_flight=32, request_timeout_s=60.0, max_failed_share=0.0)  # fmt: skip
    out: dict[str, float] = {}
    for name, sub in (("annotate", "cold"), ("annotate warm", "warm")):
        (work / sub).mkdir()
        started = time.perf_counter()
        run_annotation(config, work / "sentences.parquet", work / sub, cache_dir=work / "cache", environ={KEY_ENV: "sk-scale"})
        out[name] = time.perf_counter() - started
    return out


def run_stage_module(stage: str, work: Path) -> None:
    """The stage's ``run`` as the runner calls it, on a StageContext of its own."""
    from nuner_core.stage_api import LogProgress, StageContext

    if stage == "dataset":
        from nuner_core.dataset import stage as module
        from nuner_core.dataset.config import DatasetConfig

        # Batches of 1,000 (the default, 100,000, would hold every size here in one batch): memory beyond a batch shows.
        config: object = DatasetConfig(path=str(work / "responses.parquet"), batch_size=DATASET_BATCH)
    else:
        import torch

        from nuner_core.tagging import stage as module  # type: ignore[no-redef]
        from nuner_core.tagging.config import TagConfig

        torch.set_num_threads(1)
        config = TagConfig(model=str(work / "model"), labels=tuple(LABELS), inputs=(str(work / "docs.jsonl"),), threshold=0.5, device="cpu")
    (work / "out").mkdir()
    module.run(StageContext(config=config, inputs={}, out_dir=work / "out", work_dir=work / "work", cache_dir=work / "cache",
                            progress=LogProgress(stage, every_s=1e9)))  # fmt: skip


# ----------------------------------------------------------------------------- the driver


FULL = {
    "corpus": (10**3, 10**4, 10**5),
    "annotate": (10**2, 10**3, 10**4),
    "dataset": (10**3, 10**4, 10**5),
    "tag": (10**2, 10**3, 10**4),
    "store sync": (10, 100, 1000),
    "store ls/gc": (10**2, 10**3, 10**4),
    "planning": (10, 100, 1000),
}
SMOKE = {"corpus": (10, 100, 1000), "annotate": (2, 20, 200), "dataset": (10, 100, 1000), "tag": (1, 10, 100),
         "store sync": (1, 10, 100), "store ls/gc": (5, 50, 500), "planning": (1, 10, 100)}  # fmt: skip


IMPORTS = {
    "corpus": ("nuner_core.corpus.stage", "datasets", "torch"),  # the stage streams local files through datasets
    "annotate": ("nuner_core.annotation.annotate",),
    "dataset": ("nuner_core.dataset.stage", "nuner_core.dataset.build"),
    "tag": ("torch", "nuner_core.tagging.tagger", "nuner_core.tagging.documents"),
    "store sync": ("nuner_core.store", "s3fs"),
    "store ls/gc": ("nuner_core.store.inventory", "nuner_core.registry"),
    "planning": ("nuner_core.pipeline", "nuner_core.config"),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(argv: list[str]) -> None:
    """``--prepare|--measure STAGE SIZE DIR``: one step in this process; --measure prints its figures as JSON."""
    mode, stage, size, work = argv[0], argv[1], int(argv[2]), Path(argv[3])
    if mode == "--prepare":
        prepare(stage, size, work)
        return
    for module in IMPORTS.get(stage, ()):  # imported before the clock starts: a fixed cost that would flatten the slope
        importlib.import_module(module)
    print(json.dumps({"seconds": measure(stage, size, work), "peak_rss_mb": peak_rss_mb()}))


def one_size(stage: str, size: int, work: Path, in_process: bool) -> dict:
    work.mkdir(parents=True)
    if in_process:  # --smoke: the same functions, no process of their own
        prepare(stage, size, work)
        return {"seconds": measure(stage, size, work), "peak_rss_mb": peak_rss_mb()}
    for mode in ("--prepare", "--measure"):
        done = subprocess.run([sys.executable, __file__, mode, stage, str(size), str(work)], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{stage} at {size:,}: {mode[2:]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-6)) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def moto_bucket() -> subprocess.Popen:
    """moto's S3 server on a free port, a bucket on it; the AWS_* variables (inherited by the children) point at it."""
    from s3_env import S3_ENV, start_moto

    proc, endpoint = start_moto()
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "SCALE_BUCKET": f"scale-{os.getpid()}"})
    import fsspec

    fsspec.filesystem("s3", use_listings_cache=False).mkdir(os.environ["SCALE_BUCKET"])
    return proc


def run_stage_sizes(stage: str, sizes: tuple[int, ...], root: Path, in_process: bool) -> list[tuple[str, float, float]]:
    """(name, exponent, RSS growth) of each figure the stage reports; prints a row per size."""
    runs = []
    for size in sizes:
        runs.append(one_size(stage, size, root / f"{stage.replace(' ', '-').replace('/', '-')}-{size}", in_process))
        figures = ", ".join(f"{name} {t:.3f} s ({size / max(t, 1e-9):,.0f}/s)" for name, t in runs[-1]["seconds"].items())
        print(f"  {stage} {size:>7,}: {figures}; peak RSS {runs[-1]['peak_rss_mb']:,.0f} MB", flush=True)
    growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    return [(name, slope(list(sizes), [r["seconds"][name] for r in runs]), growth) for name in runs[0]["seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(FULL), help=f"comma-separated, of: {', '.join(FULL)}")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny sizes, every step in this process (RSS growth meaningless)")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in FULL]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {list(FULL)}")
    sizes = SMOKE if args.smoke else FULL
    started = time.monotonic()
    rows: list[tuple[str, float, float]] = []
    moto = moto_bucket() if "store sync" in stages else None
    try:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
            for stage in stages:
                if stage == "annotate":
                    from fake_openai import FakeOpenAIServer

                    with FakeOpenAIServer(api_key="sk-scale") as server:  # in this process: its request log is not the client's RSS
                        os.environ["SCALE_LLM_URL"] = server.base_url
                        rows += run_stage_sizes(stage, sizes[stage], Path(tmp), args.smoke)
                else:
                    rows += run_stage_sizes(stage, sizes[stage], Path(tmp), args.smoke)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
    print(f"\n| stage | sizes | time exponent | RSS growth |  ({time.monotonic() - started:.0f} s in all)")
    print("| --- | --- | --- | --- |")
    for name, exponent, growth in rows:
        stage_sizes = sizes[name.removesuffix(" warm")]
        print(f"| {name} | {' / '.join(f'{s:,}' for s in stage_sizes)} | {exponent:.2f} | {growth:.2f} |")
    worst_e = max(rows, key=lambda r: r[1])
    worst_r = max(rows, key=lambda r: r[2])
    print(f"worst_exponent={worst_e[1]:.2f} ({worst_e[0]}) worst_rss_growth={worst_r[2]:.2f} ({worst_r[0]})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--prepare", "--measure"):
        child(sys.argv[1:])
    else:
        main()
