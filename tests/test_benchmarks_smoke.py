"""Every script in benchmarks/ runs: its ``--smoke`` (seconds, the same code path at tiny sizes) in a
subprocess, and its last line carries its figures as ``key=value`` pairs that parse.

The required keys are a subset: a benchmark may append fields at the end of its last line. A new
script in benchmarks/ needs a line in SMOKES (test_every_benchmark_has_a_smoke fails until then),
so no benchmark can stop running unnoticed. The runs start together, a few at a time (most of
their time is imports and waiting on local servers), so the module takes about a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NA = "n/a"  # a figure the smoke run cannot have (GLiNER skipped, ONNX absent): allowed where listed in MAY_BE_NA

# script -> the keys its last line must have
SMOKES: dict[str, tuple[str, ...]] = {
    "annotate_bench.py": ("limit_ratio", "max_window_ratio", "cached_per_s", "requests_on_rerun"),
    "chaos_annotate.py": ("lost", "duplicate_paid", "concurrent_duplicate_paid", "budget_used_ratio", "corrupt_detected",
                          "secrets_found", "outside_writes"),  # fmt: skip
    "corpus_bench.py": ("sentences_per_s", "peak_rss_mb"),
    "dataset_bench.py": ("sentences_per_s", "peak_rss_mb"),
    "evaluate_bench.py": ("grid_s", "encode_s", "probe_share", "naive_ratio"),
    "finetune_recipe_bench.py": ("runs", "groups", "best_mean_f1"),
    "evaluate_llm_bench.py": ("llm_entity_f1", "parse_loss", "cost_ratio", "rerun_requests"),
    "onnx_bench.py": ("torch_per_s", "onnx_per_s", "int8_per_s", "onnx_speedup", "int8_speedup"),
    "outside_writes.py": ("outside_writes",),
    "peer_tag_bench.py": ("speedup_10", "speedup_100", "speedup_1000", "onnx_speedup", "int8_speedup", "int8_f1_drop"),
    "pretrain_bench.py": ("tokens_per_s", "overhead_ratio"),
    "scale.py": ("worst_exponent", "worst_rss_growth"),
    "serve_bench.py": ("served_per_s", "offline_per_s", "batching_ratio", "p50_ms", "p99_ms", "errors", "bad_inputs_rejected"),
    "store_bench.py": ("publish_mb_s", "fetch_mb_s", "copy_mb_s"),
    "tag_bench.py": ("sentences_per_s", "overhead_ratio", "label_scaling"),
}
MAY_BE_NA = {
    "chaos_annotate.py": {"secrets_found"},  # (f) is skipped in smoke: it starts Prefect twice
    "peer_tag_bench.py": {"speedup_10", "speedup_100", "speedup_1000", "onnx_speedup", "int8_speedup", "int8_f1_drop"},
}
NOT_BENCHMARKS = {
    "_smoke.py": "the smoke runs' shared helpers",
    "zero_shot_f1.py": "needs a trained model; runs through peer_tag_bench.py --model",
    "gpu_check.py": "its --dry-run (the same code paths on CPU) runs in tests/test_gpu_check.py",
    "peer_gliner_worker.py": "GLiNER's half of peer_tag_bench.py, run inside .venv-peer/",
}
SLOWEST_FIRST = {"chaos_annotate.py": 3, "scale.py": 3, "peer_tag_bench.py": 2, "evaluate_llm_bench.py": 2, "pretrain_bench.py": 1}
TIMEOUT_S = 240
PARALLEL = 4

_runs: dict[str, Future[subprocess.CompletedProcess[str]]] = {}
_pool = ThreadPoolExecutor(max_workers=PARALLEL)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=BENCHMARKS.parent, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _start_all(request):
    """Start the selected smoke runs at once (PARALLEL at a time); each test waits for its own."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}  # fmt: skip
    for script in sorted(selected, key=lambda s: -SLOWEST_FIRST.get(s, 0)):
        _runs[script] = _pool.submit(_run, script)
    yield
    _pool.shutdown(wait=True, cancel_futures=True)


def fields(line: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in line.split() if "=" in token)


def parses(value: str, na_allowed: bool) -> bool:
    if na_allowed and value == NA:
        return True
    if re.fullmatch(r"\d+/\d+", value):  # a count of a total, e.g. corrupt_detected=6/6
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def test_fields_and_values_parse():
    line = "dataset sentences_per_s=938 peak_rss_mb=254 found=6/6 speedup=n/a"
    assert fields(line) == {"sentences_per_s": "938", "peak_rss_mb": "254", "found": "6/6", "speedup": "n/a"}
    assert parses("0.48", False) and parses("6/6", False) and parses("n/a", True)
    assert not parses("n/a", False) and not parses("fast", True) and not parses("", False)


def test_every_benchmark_has_a_smoke():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert sorted(scripts - set(SMOKES) - set(NOT_BENCHMARKS)) == [], "a benchmark without a smoke entry in SMOKES"
    assert sorted(set(SMOKES) - scripts) == [], "SMOKES names a script that is not there"


@pytest.mark.parametrize("script", sorted(SMOKES))
def test_smoke_run_ends_with_its_fields(script):
    done = _runs[script].result(timeout=TIMEOUT_S * len(SMOKES))
    assert done.returncode == 0, f"{script} --smoke failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script} --smoke printed nothing:\n{done.stderr[-2000:]}"
    found = fields(lines[-1])
    missing = [k for k in SMOKES[script] if k not in found]
    assert missing == [], f"{script}: the last line lacks {missing}: {lines[-1]!r}"
    bad = {k: found[k] for k in SMOKES[script] if not parses(found[k], k in MAY_BE_NA.get(script, set()))}
    assert bad == {}, f"{script}: values that do not parse: {bad} in {lines[-1]!r}"
