"""Chaos benchmark of the annotate stage: faults, kill -9, two runs at once, a cost cap, damaged files.

A fault-injecting OpenAI-compatible server on 127.0.0.1 (``tests/fake_openai.py``) answers
every scenario; it counts, per prompt, how many complete answers it sent. Each scenario
annotates 300 sentences into an artifact store of its own, through the annotate stage as
the runner builds it (``build`` below: look the artifact up with its content verified,
build it when it is missing or incomplete, reading the inputs through ``store.reading``).

(a) faults: 429 with Retry-After, 500, dropped connections, malformed JSON, answers after
    the client's timeout, empty and truncated answers, at random (about 25% of requests).
(b) kill -9: the stage runs in a process of its own, killed with SIGKILL at a random moment
    after its first request, 8 times; then a last run finishes.
(c) two runs at once: two processes on the same store and cache, the second started once
    the first has sent 20 requests.
(d) a cost cap: ``max_cost`` on gpt-4o-mini's list prices with the default ``max_tokens``,
    for about half of the sentences; spent / cap is what the run used of its budget.
(e) damage: 400 zero bytes written inside the corpus' ``sentences.parquet`` and inside
    ``responses.parquet`` (size unchanged), at three places each, one copy of the store per
    damage; found when the artifact is read as an input?

(f) secrets: ``nuner experiment`` (in a Prefect of its own) on a tiny experiment whose
    annotate.base_url and evaluation LLM carry a password and a query token, and
    ``nuner run`` with that LLM as an override; every file written, the Prefect
    database and the commands' output searched for them.

Last line: ``lost=N duplicate_paid=N concurrent_duplicate_paid=N budget_used_ratio=X corrupt_detected=N/M secrets_found=N outside_writes=N``
- lost: sentences without an answer in the final artifacts of (a), (b) and (c);
- duplicate_paid: prompts answered in full more than once in (a) and (b), an answer counting
  when the server wrote it completely to a live client (see (b)'s line for those written
  to a process already killed);
- concurrent_duplicate_paid: the same in (c);
- budget_used_ratio: (d)'s spend (from the server's usage reports and the price) / the cap;
- corrupt_detected: damaged files found, of those damaged in (e);
- secrets_found: (file or output, secret) pairs of (f) holding a secret in clear;
- outside_writes: (g) files that one object planted in a bucket made a worker write outside the
  store's directories: manifest names with ``../`` or absolute, a resumable-work object with
  ``../``, a pickled checkpoint resumed, a pickled Prefect cache record read (``outside_writes.py``,
  against moto's S3 API).
Goal: 0, 0, 0, >= 0.9, M/M, 0, 0. About two minutes on 2 cores.

Two ways an answer is paid twice that no client can prevent (the API has no idempotency):
SIGKILL lands in the millisecond between the client's receiving an answer and writing it to
its cache; or the server writes an answer to a process already killed, whose sockets the
kernel closes only after freeing its memory (a few milliseconds), so the server cannot
tell. (b) prints how many answers went to a dead process and counts only answers written
to a live one.

Run: ``.venv/bin/python benchmarks/chaos_annotate.py`` (``--seed N`` for other random moments; ``--smoke``:
40 sentences and 2 kills, (f) skipped and printed n/a: it starts Prefect twice, a minute on 2 cores, and
tests/experiment/test_experiment_secrets.py checks the same).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nuner_core.annotation import stage as annotate_stage
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.prompt import load_template
from nuner_core.stage_api import LogProgress, StageContext
from nuner_core.store import ArtifactRef, ArtifactStore, CorruptArtifact, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server is test support
from fake_openai import FakeOpenAIServer, Fault  # noqa: E402
from outside_writes import outside_writes  # noqa: E402  (beside this script: its directory is on the path)

N = 300
KILLS = 8
KEY_ENV, KEY = "CHAOS_BENCH_KEY", "sk-chaos-local"
CORPUS_KEY, ANNOTATE_KEY = "chaos-corpus", "chaos-annotate"
MODEL = "gpt-4o-mini"  # its list price is in the default price table: (d) spends real-looking dollars
FAULTS = (
    (0.05, Fault.status_code(429, retry_after=0.1)),
    (0.04, Fault.status_code(500)),
    (0.03, Fault.drop()),
    (0.03, Fault.malformed()),
    (0.02, Fault.slow(3.0)),  # after the client's 0.5 s timeout
    (0.04, Fault.empty()),
    (0.04, Fault.truncated()),
)
log = logging.getLogger("chaos")


# ----------------------------------------------------------------------------- the stage, as the runner builds it


def build(store: ArtifactStore, config: AnnotateConfig, corpus: ArtifactRef, own: dict | None = None) -> ArtifactRef:
    """Reuse the artifact if it is intact and final, else build it (an incomplete one asks only for what failed).

    ``own`` receives this run's summary (the artifact kept may be another run's).
    """
    existing = store.lookup("annotate", ANNOTATE_KEY, verify=True)
    if existing is not None and existing.incomplete is None:
        return existing
    manifest: dict[str, Any] = {"stage": "annotate", "key": ANNOTATE_KEY, "config": config.model_dump(mode="json")}
    inputs = {"corpus": corpus}
    with store.reading(inputs), store.publish("annotate", ANNOTATE_KEY, manifest) as out_dir:
        ctx = StageContext(config=config, inputs=inputs, out_dir=out_dir, work_dir=store.work_dir("annotate", ANNOTATE_KEY),
                           cache_dir=store.cache_dir, progress=LogProgress("annotate", every_s=3600))
        result = annotate_stage.run(ctx)
        manifest.update(rows=result.rows, headline=result.headline, **result.extra)
        if own is not None:
            own.update(result.extra["annotation"])
    ref = store.lookup("annotate", ANNOTATE_KEY)
    assert ref is not None
    return ref


def child(argv: list[str]) -> None:
    """``--child ROOT CONFIG_JSON``: one run of the stage in this process (to be killed, or run beside another)."""
    root, config_json = argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    store = open_store(Path(root))
    corpus = store.lookup("corpus", CORPUS_KEY)
    assert corpus is not None
    config = AnnotateConfig.model_validate_json(config_json)
    own: dict[str, Any] = {}
    ref = build(store, config, corpus, own)
    if ref.incomplete:  # a second round asks for the failed sentences only
        ref = build(store, config, corpus, own)
    print(json.dumps({k: own.get(k) for k in ("requests", "answered", "cache_hits", "from_other_run", "leases_taken_over")}))


# ----------------------------------------------------------------------------- scenarios


def texts() -> list[str]:
    cities = ["Paris", "Lagos", "Lima", "Osaka", "Quito", "Oslo", "Perth", "Cairo", "Dhaka", "Tunis"]
    people = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie", "Emmy Noether", "Srinivasa Ramanujan"]
    return [
        f"In {1850 + i % 150}, {people[i % len(people)]} gave lecture number {i} at the museum of {cities[i % len(cities)]}."
        for i in range(N)
    ]


def new_store(root: Path) -> tuple[ArtifactStore, ArtifactRef]:
    store = open_store(root)
    with store.publish("corpus", CORPUS_KEY, {"stage": "corpus"}) as out:
        pq.write_table(pa.table({"id": [f"c{i:04d}" for i in range(N)], "text": texts(),
                                 "doc_id": ["d"] * N, "source": ["chaos"] * N}), out / "sentences.parquet")
    corpus = store.lookup("corpus", CORPUS_KEY)
    assert corpus is not None
    return store, corpus


def config_for(server: FakeOpenAIServer, **overrides: Any) -> AnnotateConfig:
    values: dict[str, Any] = dict(
        model=MODEL, base_url=server.base_url, api_key_env=KEY_ENV, requests_per_minute=60_000, tokens_per_minute=None,
        max_in_flight=8, request_timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.5, retry_after_cap_s=1.0,
        max_failed_share=0.05, lease_s=5.0,
    )
    values.update(overrides)
    return AnnotateConfig(**values)


def spawn(root: Path, config: AnnotateConfig, log_file: Path) -> subprocess.Popen:
    with log_file.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, __file__, "--child", str(root), config.model_dump_json()],
            env={**os.environ, KEY_ENV: KEY}, stdout=subprocess.PIPE, stderr=err,
        )


def unanswered(ref: ArtifactRef) -> int:
    table = pq.read_table(ref.dir / "responses.parquet", columns=["response", "error"])
    return sum(1 for r, e in zip(table.column("response").to_pylist(), table.column("error").to_pylist()) if r is None or e)


def duplicates(server: FakeOpenAIServer) -> int:
    return sum(1 for n in server.answered_per_sentence().values() if n > 1)


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not get going")
        time.sleep(0.01)


def scenario_faults(root: Path, seed: int) -> tuple[int, int, ArtifactStore]:
    with FakeOpenAIServer(random_faults=FAULTS, seed=seed, api_key=KEY, latency_s=0.01) as server:
        store, corpus = new_store(root)
        config = config_for(server)
        ref = build(store, config, corpus)
        if ref.incomplete:
            ref = build(store, config, corpus)
        faulty = sum(1 for r in server.records() if r.fault != "ok")
        print(f"(a) faults: {server.request_count} requests, {faulty} with a fault; incomplete after the first round: "
              f"{(ref.manifest().get('annotation') or {}).get('failed', 0)}", flush=True)
        return unanswered(ref), duplicates(server), store


def scenario_kills(root: Path, rng: random.Random, seed: int) -> tuple[int, int]:
    faults = ((0.03, Fault.status_code(429, retry_after=0.1)), (0.03, Fault.status_code(500)))
    with FakeOpenAIServer(random_faults=faults, seed=seed + 1, api_key=KEY, latency_s=0.15) as server:
        store, corpus = new_store(root)
        config = config_for(server, max_in_flight=4)
        kills = 0
        dead: list[tuple[float, float]] = []  # (SIGKILL sent, next run started): no live client in between
        while kills < KILLS:
            before = server.request_count
            proc = spawn(root, config, root / "runs.log")
            if dead:
                dead[-1] = (dead[-1][0], time.monotonic())
            try:
                wait_for(lambda before=before, proc=proc: server.request_count > before or proc.poll() is not None)
                time.sleep(rng.uniform(0.0, 1.5))
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    dead.append((time.monotonic(), float("inf")))
                    kills += 1
                proc.wait()
            if proc.returncode == 0:
                break  # finished before its kill: more kills would need a slower server
        last = spawn(root, config, root / "runs.log")
        if dead:
            dead[-1] = (dead[-1][0], time.monotonic())
        out, _ = last.communicate(timeout=300)
        assert last.returncode == 0, (root / "runs.log").read_text()[-3000:]
        ref = store.lookup("annotate", ANNOTATE_KEY)
        assert ref is not None
        # An answer written after the SIGKILL reached no one: the process was dead, its sockets not
        # yet closed by the kernel (freeing a few hundred MB takes milliseconds). No client can keep
        # it; it is shown here, and not counted as answered.
        to_dead = [r for r in server.records() if r.answered and r.sent is not None
                   and any(start <= r.sent < end for start, end in dead)]
        answered = server.answered_per_sentence()
        for r in to_dead:
            answered[r.sentence] -= 1
        print(f"(b) kill -9: {kills} kills, then a run that finished: {server.request_count} requests, "
              f"{sum(answered.values())} complete answers to live runs for {len(+answered)} prompts "
              f"(and {len(to_dead)} written to a run already killed); the last run {out.decode().strip()}", flush=True)
        return unanswered(ref), sum(1 for n in answered.values() if n > 1)


def scenario_concurrent(root: Path) -> tuple[int, int]:
    with FakeOpenAIServer(api_key=KEY, latency_s=0.1) as server:
        store, _ = new_store(root)
        config = config_for(server)
        first = spawn(root, config, root / "first.log")
        wait_for(lambda: server.request_count >= 20)
        second = spawn(root, config, root / "second.log")
        outs = [p.communicate(timeout=300)[0].decode().strip() for p in (first, second)]
        assert first.returncode == 0 and second.returncode == 0, (root / "second.log").read_text()[-3000:]
        ref = store.lookup("annotate", ANNOTATE_KEY)
        assert ref is not None
        said = (root / "second.log").read_text()
        joined = "joins it" if "This run joins it" in said else "did not meet the first"
        print(f"(c) two runs: {server.request_count} requests for {N} sentences; the second {joined}; "
              f"first {outs[0]}, second {outs[1]}", flush=True)
        return unanswered(ref), duplicates(server)


def scenario_budget(root: Path) -> float:
    with FakeOpenAIServer(api_key=KEY, latency_s=0.01) as server:
        store, corpus = new_store(root)
        config = config_for(server)
        price = config.price()
        assert price is not None
        def cost(sentence: str) -> float:  # as the server reports usage: 4 characters a token
            prompt = load_template(None).messages(sentence)[-1]["content"]
            return price.cost(max(1, len(prompt) // 4), len(server.answer(sentence)) // 4)

        cap = round(cost(texts()[0]) * N / 2, 6)  # about half the sentences' worth: the cap must bind before the end
        try:
            build(store, config.model_copy(update={"max_cost": cap}), corpus)
            message = "no stop"
        except Exception as exc:  # the budget's StageError, with the spend
            message = str(exc)
        spent = sum(cost(r.sentence) for r in server.records() if r.answered)
        print(f"(d) cost cap ${cap:.6f}: {server.request_count} requests, spent ${spent:.6f} by the server's usage; "
              f"the stage said: {message[:220]}", flush=True)
        return spent / cap


def scenario_damage(source: ArtifactStore, scratch: Path) -> tuple[int, int]:
    detected = damaged = 0
    for stage, rel in (("corpus", "sentences.parquet"), ("annotate", "responses.parquet")):
        for where in (0.1, 0.5, 0.85):
            root = scratch / f"{stage}-{where}"
            shutil.copytree(source.root / stage, root / stage, ignore=shutil.ignore_patterns(".*"))
            store = open_store(root)
            key = CORPUS_KEY if stage == "corpus" else ANNOTATE_KEY
            ref = store.lookup(stage, key)
            assert ref is not None
            file = ref.dir / rel
            data = bytearray(file.read_bytes())
            at = int(len(data) * where)
            before = bytes(data[at:at + 400])
            data[at:at + 400] = bytes(len(before))
            if bytes(data[at:at + 400]) == before:
                continue  # already zeros there: not damage
            file.write_bytes(bytes(data))
            damaged += 1
            try:
                with store.reading({stage: ref}):
                    pq.read_table(file)  # what the next stage would do
            except CorruptArtifact as exc:
                detected += rel in str(exc) and f"rerun the {stage!r} stage" in str(exc)
            except Exception as exc:  # a reader's own error: not detected as damage
                print(f"(e) {stage}/{rel} at {where:.0%}: not detected, {type(exc).__name__}: {exc}", flush=True)
    print(f"(e) damage: {detected} of {damaged} same-size damaged files found before they were read", flush=True)
    return detected, damaged


def scenario_secrets(root: Path) -> int:
    """(f): the secrets' occurrences in every file under ``root`` (store, Prefect's home and database) and the output."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "experiment"))
    from experiment_helpers import make_tiny_bert, tiny_benchmark, tiny_overrides, write_experiment

    secrets = ("pw-CHAOS-SECRET-7a1c", "tok-CHAOS-SECRET-2b9d")
    assets = Path(os.environ.get("NUNER_ASSETS") or Path(__file__).resolve().parents[2] / "shared" / "assets")
    (root / "bench").mkdir(parents=True)
    overrides = tiny_overrides(make_tiny_bert(root / "model"), tiny_benchmark(root / "bench", assets))
    env = {**os.environ, "NUNER_DATA_DIR": str(root / "data"), "PREFECT_HOME": str(root / "prefect")}
    env.pop("PREFECT_API_URL", None)  # Prefect's ephemeral server: its database is under PREFECT_HOME
    with FakeOpenAIServer(answer=lambda sentence: "person: none") as server:
        llm = {"name": "llm", "model": "m", "api_key_env": None,
               "base_url": f"http://chaos:{secrets[0]}@127.0.0.1:{server.port}/v1?api-key={secrets[1]}"}
        overrides.update({"annotate.base_url": llm["base_url"].replace("127.0.0.1", "10.9.8.7"),
                          "evaluate.llm.ks": [1], "evaluate.llm.max_test_sentences": 3})
        file = write_experiment(root.parent / f"{root.name}-experiment.yaml", overrides, {"evaluate.llms": [[llm]]})
        sets = [f"--set={k}={json.dumps(v)}" for k, v in {**overrides, "evaluate.llms": [llm]}.items()]
        output = ""
        for command in (["experiment", str(file)], ["run", "--stages", "evaluate", *sets]):
            done = subprocess.run([sys.executable, "-m", "flows.cli", *command], env=env, capture_output=True, text=True,
                                  timeout=900, cwd=Path(__file__).resolve().parents[1])
            output += done.stdout + done.stderr
            assert done.returncode == 0, done.stderr[-3000:]
        asked = server.request_count
    found = [s for s in secrets if s in output]
    found += [f"{p}: {s}" for p in root.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes()]
    print(f"(f) secrets: {asked} requests to the LLM with its credentials; in clear in {found or 'no file and no output'}",
          flush=True)
    return len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="random faults and kill moments")
    parser.add_argument("--smoke", action="store_true", help="40 sentences, 2 kills, (f) skipped")
    args = parser.parse_args()
    if args.smoke:
        global N, KILLS
        N, KILLS = 40, 2
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    rng = random.Random(args.seed)
    os.environ[KEY_ENV] = KEY  # for the runs in this process; the child processes get it too
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-annotate-") as tmp:
        root = Path(tmp)
        lost_a, dup_a, faults_store = scenario_faults(root / "a", args.seed)
        lost_b, dup_b = scenario_kills(root / "b", rng, args.seed)
        lost_c, dup_c = scenario_concurrent(root / "c")
        ratio = scenario_budget(root / "d")
        detected, damaged = scenario_damage(faults_store, root / "e")
        secrets_found: int | str = "n/a" if args.smoke else scenario_secrets(root / "f")
        if args.smoke:
            print("(f) secrets: skipped by --smoke", flush=True)
    outside, per_probe = outside_writes()
    print(f"(g) bucket probes, files written outside the store: {per_probe}", flush=True)
    print(f"wall {time.monotonic() - started:.0f} s", flush=True)
    print(f"lost={lost_a + lost_b + lost_c} duplicate_paid={dup_a + dup_b} concurrent_duplicate_paid={dup_c} "
          f"budget_used_ratio={ratio:.3f} corrupt_detected={detected}/{damaged} secrets_found={secrets_found} outside_writes={outside}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
