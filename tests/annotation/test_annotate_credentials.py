"""Credentials in annotate.base_url: shown nowhere, stored nowhere, and never replacing the configured key."""

from __future__ import annotations

import logging

import pytest
from annotate_helpers import KEY, KEY_ENV, make_config, sentence, write_sentences

from nuner_core.annotation import stage
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.config import PipelineConfig
from nuner_core.pipeline import PlannedStage, run_stage, title
from nuner_core.redaction import redact_url
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactStore, open_store

PASSWORD = "hunter2-PASSWORD-in-url"
QUERY_SECRET = "qs-SECRET-in-query"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:pw-secret@host:8000/v1", "http://***@host:8000/v1"),
        ("http://sk-key-as-user@host/v1", "http://***@host/v1"),
        ("https://proxy/v1?api-key=abc123&deployment=x", "https://proxy/v1?api-key=***&deployment=x"),
        ("https://proxy/v1?key=abc&access_token=t0k&sig=s1g&x=", "https://proxy/v1?key=***&access_token=***&sig=***&x="),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("http://[::1/v1", "http://***"),  # cannot be taken apart: nothing after the scheme is shown
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def _corpus(store: ArtifactStore, n: int):
    with store.publish("corpus", "corpus-test", {"stage": "corpus", "rows": {"sentences": n}}) as out:
        write_sentences(out / "sentences.parquet", [sentence(i) for i in range(n)])
    return store.lookup("corpus", "corpus-test")


def test_credentials_in_base_url_are_redacted_everywhere_and_the_key_is_sent_as_bearer(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server()  # accepts only "Authorization: Bearer <KEY>"
    url = f"http://someone:{PASSWORD}@127.0.0.1:{srv.port}/v1?api-key={QUERY_SECRET}"
    store = open_store(tmp_path / "data")
    corpus = _corpus(store, 6)
    config = PipelineConfig(profile="test", annotate=make_config(url))
    step = PlannedStage("annotate", "annotate-test", config)
    caplog.set_level(logging.DEBUG)
    ref = run_stage(step, {"corpus": corpus}, store)

    # Authenticated as configured: the Bearer key (httpx would have sent the userinfo as Basic
    # auth instead), and the query parameter the URL carries is sent with every request.
    assert ref.manifest()["rows"] == {"sentences": 6, "responses": 6}
    assert {r.auth for r in srv.records()} == {f"Bearer {KEY}"}
    assert {r.target for r in srv.records()} == {f"/v1/chat/completions?api-key={QUERY_SECRET}"}
    assert "has credentials in it; they are not sent" in caplog.text

    # A run that fails: the 401 message names the endpoint.
    bad = server(api_key="sk-another-key")
    bad_url = f"http://someone:{PASSWORD}@127.0.0.1:{bad.port}/v1?api-key={QUERY_SECRET}"
    bad_config = PipelineConfig(profile="test", annotate=make_config(bad_url, cache_dir=str(tmp_path / "other-cache")))
    with pytest.raises(StageError) as err:
        run_stage(PlannedStage("annotate", "k2", bad_config), {"corpus": corpus}, store)
    assert "401" in str(err.value) and f"127.0.0.1:{bad.port}" in str(err.value)

    places = {
        "stage error": str(err.value), "log": caplog.text, "task-run name": title(step, {"corpus": corpus}),
        "planned step": repr(step), "config json": config.model_dump_json(), "config dump": str(config.model_dump()),
        "describe": stage.describe(config.annotate, {"corpus": corpus}),
    }
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("latin-1")
    for secret in (PASSWORD, QUERY_SECRET):
        assert [where for where, text in places.items() if secret in text] == []
    assert "http://***@127.0.0.1" in places["task-run name"] and "api-key=***" in ref.manifest()["config"]["base_url"]


def test_without_a_key_userinfo_is_the_configured_auth(server, sentences, annotate):
    srv = server(api_key=None)
    url = f"http://someone:{PASSWORD}@127.0.0.1:{srv.port}/v1"
    result, _ = annotate(make_config(url, api_key_env=None), sentences(2), environ={})
    assert result.stats.answered == 2
    assert {r.auth.split(" ")[0] for r in srv.records()} == {"Basic"}  # what a URL with userinfo means


def test_a_saved_config_has_lost_its_credentials_and_says_so(server, sentences, annotate):
    srv = server()
    saved = make_config(f"http://someone:{PASSWORD}@127.0.0.1:{srv.port}/v1").model_dump_json()
    assert PASSWORD not in saved
    with pytest.raises(StageError, match=r"holds \*\*\* where a credential was"):
        annotate(AnnotateConfig.model_validate_json(saved), sentences(2))
    assert srv.request_count == 0


def test_nuner_run_passes_url_credentials_to_the_flow_outside_its_parameters(monkeypatch):
    """Flow parameters land in Prefect's database: the CLI redacts them and hands the URL over in the environment."""
    from flows.cli import _hide_url_credentials
    from nuner_core.annotation.config import ENDPOINT_ENV

    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    url = "http://user:hunter2-secret@127.0.0.1:9/v1?api-key=abcdef123"
    params = _hide_url_credentials({"annotate.base_url": url, "corpus.seed": 1})
    assert "hunter2" not in str(params) and "abcdef123" not in str(params) and params["corpus.seed"] == 1
    rebuilt = AnnotateConfig(base_url=params["annotate.base_url"])  # what the flow builds from its parameters
    assert rebuilt.endpoint() == url
    monkeypatch.setenv(ENDPOINT_ENV, "http://other:pw@10.0.0.1/v1")  # a URL for another endpoint is never used
    assert "hunter2" not in (AnnotateConfig(base_url=params["annotate.base_url"]).endpoint() or "")
    assert _hide_url_credentials({"annotate.base_url": "http://127.0.0.1:9/v1"}) == {"annotate.base_url": "http://127.0.0.1:9/v1"}
