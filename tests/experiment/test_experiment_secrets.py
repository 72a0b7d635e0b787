"""URL credentials in an experiment (a fixed annotate.base_url, a swept evaluation LLM) and in `nuner run`'s
overrides reach the LLM that needs them, and no file, no printed line and no row of Prefect's database."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from experiment_helpers import write_experiment
from fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.slow

PASSWORD, TOKEN = "pw-SECRET-1b2c3d", "tok-SECRET-4e5f6a"
KEEP: list[io.StringIO] = []  # streams a log handler may still hold after the test


def prefect_files() -> list[Path]:
    """Prefect's database file(s) of the test server (its WAL too) and PREFECT_HOME (local results, logs)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    assert url is not None and "sqlite" in url.get_secret_value(), "the test server's database is a SQLite file"
    db = Path(url.get_secret_value().split("///", 1)[1])
    assert db.is_file(), db
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)] + list(Path(os.environ["PREFECT_HOME"]).rglob("*"))


def files_holding(secrets: tuple[str, ...], *roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_url_credentials_reach_the_llm_and_no_file_output_or_prefect_row(prefect_harness, data_dir, tmp_path, tiny):
    from flows.cli import main

    # What the commands print, Prefect's console log included. Not capsys: Prefect's log handler keeps the
    # stream it first saw, and capsys closes its stream after the test (a later test's logging would fail).
    out, err = io.StringIO(), io.StringIO()
    KEEP.extend((out, err))

    with FakeOpenAIServer(answer=lambda sentence: "person: none") as server:
        llm = {"name": "llm", "model": "m", "api_key_env": None, "max_in_flight": 4,
               "base_url": f"http://tester:{PASSWORD}@127.0.0.1:{server.port}/v1?api-key={TOKEN}"}
        overrides = {**tiny, "annotate.base_url": f"http://tester:{PASSWORD}@10.9.8.7/v1?token={TOKEN}",
                     "evaluate.llm.ks": [1], "evaluate.llm.max_test_sentences": 3}
        inputs = tmp_path / "inputs"  # the experiment file holds the secrets: it is the user's, not searched
        inputs.mkdir()
        file = write_experiment(inputs / "exp.yaml", overrides, {"evaluate.llms": [[llm]]})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["experiment", str(file)]) == 0
            asked = server.records()
            # `nuner run` with the LLM in an override: the evaluation answers from the cache, the URL redacted as a parameter
            sets = [f"--set={k}={json.dumps(v)}" for k, v in {**overrides, "evaluate.llms": [llm]}.items()]
            assert main(["run", "--stages", "evaluate", *sets]) == 0
    assert "experiment artifact:" in out.getvalue()
    assert asked and all(TOKEN in r.target and r.auth.startswith("Basic ") for r in asked)  # handed over, and used
    secrets = (PASSWORD, TOKEN)
    assert [s for s in secrets if s in out.getvalue() + err.getvalue()] == []
    searched = [data_dir, *(p for p in tmp_path.iterdir() if p != inputs), *prefect_files()]
    assert files_holding(("10.9.8.7/v1?token=***",), *prefect_files())  # the right database: the redacted parameter is there
    assert files_holding(secrets, *searched) == []


def test_a_config_error_inside_a_flow_logs_and_stores_no_url_credentials(prefect_harness, data_dir, tmp_path):
    """The error quoted the section's raw input, URL included, into the flow's log and state before the fix."""
    from flows.pipeline import nuner

    profile = tmp_path / "inputs" / "profile.yaml"  # the user's file: not searched
    profile.parent.mkdir()
    profile.write_text(f"annotate: {{base_url: 'http://me:{PASSWORD}@10.0.0.1/v1?key={TOKEN}', model: unpriced, "
                       f"offline: false, max_cost: 1.0}}\n")
    state = nuner(profile=str(profile), return_state=True)
    assert state.is_failed() and "max_cost is set" in (state.message or "")
    assert PASSWORD not in (state.message or "") and TOKEN not in (state.message or "")
    assert files_holding((PASSWORD, TOKEN), *prefect_files()) == []
