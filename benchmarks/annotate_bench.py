"""Benchmark of the annotate stage against a local OpenAI-compatible server (about 2 minutes).

1. steady: 200 ms latency per request, limit 600 requests/min, 720 sentences (~72 s).
   limit_ratio = requests the server received in the one-minute window starting 5 s after
   the first request, divided by 600 (target >= 0.95); max_window_ratio = the most requests
   in any 10-second window [t, t + 10 s) over the whole run, divided by 100 (target <= 1).
2. faults: the same settings with 5% 429 (Retry-After: 1 s) and 2% 500 injected at random,
   300 sentences: every sentence must complete, each answered exactly once; its 10-second
   windows count towards max_window_ratio too (retries are rate-limited like the rest).
3. warm rerun: the steady run again on the warm cache: 0 requests, sentences per second.

Last line: ``annotate limit_ratio=<..> max_window_ratio=<..> cached_per_s=<..> requests_on_rerun=<..>``.
Run: ``.venv/bin/python benchmarks/annotate_bench.py`` (``--quick``: 20 seconds; ``--smoke``: a few seconds,
the targets not checked).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation.annotate import run_annotation
from nuner_core.annotation.config import AnnotateConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server is test support
from fake_openai import FakeOpenAIServer, Fault  # noqa: E402

LIMIT_RPM = 600
LATENCY_S = 0.2
KEY_ENV, KEY = "ANNOTATE_BENCH_KEY", "sk-bench-local"


def write_sentences(path: Path, n: int, tag: str) -> Path:
    texts = [f"{tag} sentence {i}: Marie Curie worked with radium at the University of Paris in {1890 + i % 40}." for i in range(n)]
    pq.write_table(pa.table({"id": [f"{tag}{i:06d}" for i in range(n)], "text": texts}), path)
    return path


def config_for(server: FakeOpenAIServer) -> AnnotateConfig:
    return AnnotateConfig(
        model="bench-model",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        requests_per_minute=LIMIT_RPM,
        tokens_per_minute=None,
        max_in_flight=16,
        request_timeout_s=10.0,
        backoff_initial_s=0.5,
        max_failed_share=0.0,
    )


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (not the targets' window lengths)")
    parser.add_argument("--smoke", action="store_true", help="seconds: the same path at tiny sizes, targets not checked")
    args = parser.parse_args()
    steady_n, fault_n, window_s, skip_s = (720, 300, 60.0, 5.0) if not args.quick else (150, 60, 10.0, 2.0)
    if args.smoke:
        steady_n, fault_n, window_s, skip_s = 24, 12, 1.0, 0.5
    logging.basicConfig(level=logging.WARNING)
    env = {KEY_ENV: KEY}
    per_10s = LIMIT_RPM / 6
    with tempfile.TemporaryDirectory(prefix="annotate-bench-") as tmp:
        root = Path(tmp)

        # 1. steady
        steady_file = write_sentences(root / "steady.parquet", steady_n, "st")
        with FakeOpenAIServer(latency_s=LATENCY_S, api_key=KEY) as server:
            (root / "steady").mkdir()
            result = run_annotation(config_for(server), steady_file, root / "steady", cache_dir=root / "cache", environ=env)
            times = sorted(r.t for r in server.records())
        start = times[0] + skip_s
        in_window = sum(1 for t in times if start <= t < start + window_s)
        limit_ratio = in_window / (LIMIT_RPM * window_s / 60)
        steady_window = max_in_window(times, 10.0) / per_10s
        print(f"steady: {steady_n} sentences, {result.stats.requests} requests in {result.wall_s:.1f} s; "
              f"{in_window} requests in the {window_s:.0f}-s window from +{skip_s:.0f} s -> {limit_ratio:.4f} of the limit; "
              f"max 10-s window {steady_window:.3f} of the limit", flush=True)

        # 2. faults
        fault_file = write_sentences(root / "faults.parquet", fault_n, "ft")
        faults = ((0.05, Fault.status_code(429, retry_after=1)), (0.02, Fault.status_code(500)))
        with FakeOpenAIServer(latency_s=LATENCY_S, api_key=KEY, random_faults=faults, seed=7) as server:
            (root / "faults").mkdir()
            fault_result = run_annotation(config_for(server), fault_file, root / "faults", cache_dir=root / "cache", environ=env)
            fault_times = [r.t for r in server.records()]
            answered = server.answered_per_sentence()
        table = pq.read_table(root / "faults" / "responses.parquet")
        complete = table.column("response").null_count == 0 and len(answered) == fault_n and set(answered.values()) == {1}
        fault_window = max_in_window(fault_times, 10.0) / per_10s
        print(f"faults: {fault_n} sentences, {fault_result.stats.requests} requests, retries {dict(fault_result.stats.retries)}, "
              f"failed {dict(fault_result.stats.failures) or 0}; every sentence answered exactly once: {complete}; "
              f"max 10-s window {fault_window:.3f} of the limit", flush=True)

        # 3. warm rerun of the steady run
        with FakeOpenAIServer(latency_s=LATENCY_S, api_key=KEY) as server:
            (root / "rerun").mkdir()
            started = time.perf_counter()
            rerun = run_annotation(config_for(server), steady_file, root / "rerun", cache_dir=root / "cache", environ=env)
            elapsed = time.perf_counter() - started
            requests_on_rerun = server.request_count
        cached_per_s = steady_n / elapsed
        print(f"warm rerun: {rerun.stats.cache_hits} of {steady_n} from the cache in {elapsed:.3f} s, "
              f"{requests_on_rerun} requests", flush=True)

    ok = limit_ratio >= 0.95 and max(steady_window, fault_window) <= 1.0 and complete and cached_per_s >= 5000 and requests_on_rerun == 0
    print("smoke: targets not checked" if args.smoke else "targets met" if ok else "TARGETS NOT MET", flush=True)
    print(f"annotate limit_ratio={limit_ratio:.4f} max_window_ratio={max(steady_window, fault_window):.3f} "
          f"cached_per_s={cached_per_s:.0f} requests_on_rerun={requests_on_rerun}")
    sys.exit(0 if ok or args.smoke else 1)


if __name__ == "__main__":
    main()
