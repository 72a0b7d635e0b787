"""tag.shards on two workers: ``nuner run --stages tag --set tag.shards=2 --deployment nuner/tag`` against a real
Prefect server with one process pool and two workers that run one flow at a time (tests/prefect_cluster.py, as the
experiment's two-worker test). Each shard is a run of ``nuner/tag``; the test checks from Prefect's records that the
two shard runs overlapped in time on different workers, and that the merged ``entities.jsonl`` is byte for byte
the one-shard run's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType
from prefect_cluster import POOL, RUN_TIMEOUT_S, WORKER_LABEL, running_cluster

pytestmark = pytest.mark.slow

WORDS = ["Alice", "Bob", "Marie", "pizza", "pasta", "bread", "Paris", "London", "Tokyo", "New York", "the", "a", "met", "ate"]


def _documents(path: Path, n: int) -> Path:
    """``n`` JSON-lines documents of 8 to 40 words (seeded), mixing the planted model's city, person and food words."""
    import random

    rng = random.Random(0)
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 40))) + "."}) + "\n"
                            for i in range(n)))  # fmt: skip
    return path


def test_two_shards_on_two_workers_merge_to_the_one_shard_output(tmp_path, planted_dir):
    docs = _documents(tmp_path / "docs.jsonl", 400)
    sets = ["--set", f"tag.model={planted_dir}", "--set", "tag.labels=[city, person, food]", "--set", f"tag.inputs=[{docs}]",
            "--set", "tag.threshold=0.5"]  # fmt: skip
    with running_cluster(tmp_path, ["tag"]) as cluster:

        def nuner_run(*args: str) -> tuple[dict, float]:
            started = time.monotonic()
            done = cluster.cli(sys.executable, "-m", "flows.cli", "run", "--stages", "tag", *sets, *args, "--json", timeout=RUN_TIMEOUT_S)
            return json.loads(done.stdout.splitlines()[-1]), time.monotonic() - started

        sharded, sharded_s = nuner_run("--set", "tag.shards=2", "--deployment", "nuner/tag")
        single, single_s = nuner_run()
        runs = [r for r, _ in cluster.pool_runs()]
        held = cluster.held(runs)

    assert [sharded[f"tag shard {i} of 2"]["state"] for i in (1, 2)] == ["Completed", "Completed"]
    merged, one = (Path(s["tag"]["path"]) / "entities.jsonl" for s in (sharded, single))
    assert merged.read_bytes() == one.read_bytes() and len(one.read_text().splitlines()) == 400

    # The two shard runs: runs of nuner/tag on the pool, at the same time, on different workers, in different processes.
    assert len(runs) == 2 and all(r.state_type == StateType.COMPLETED and r.work_pool_name == POOL for r in runs), runs
    (s0, e0), (s1, e1) = held
    assert s0 < e1 and s1 < e0, f"the two shard runs were not held at once: {s0}..{e0} and {s1}..{e1}"
    assert sorted(r.labels.get(WORKER_LABEL) for r in runs) == ["w1", "w2"], [dict(r.labels) for r in runs]
    assert all(r.infrastructure_pid for r in runs) and runs[0].infrastructure_pid != runs[1].infrastructure_pid
    overlap = (min(e0, e1) - max(s0, s1)).total_seconds()
    shard_s = sorted(round((e - s).total_seconds(), 1) for s, e in ((s0, e0), (s1, e1)))
    print(f"tag, 400 documents: 2 shards on 2 workers {sharded_s:.1f} s (shard runs held {shard_s} s, at once for {overlap:.1f} s); "
          f"one shard in process {single_s:.1f} s")  # fmt: skip
