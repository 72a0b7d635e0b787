"""The stage contract: profiles, the demo's offline replay, the manifest, progress, and the key."""

from __future__ import annotations

import io
import json
import logging

import pyarrow.parquet as pq
import pytest
from annotate_helpers import KEY, KEY_ENV, MODEL, make_config, sentence, write_sentences
from fake_openai import Fault

from nuner_core.annotation import stage
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.config import PipelineConfig, load_config
from nuner_core.pipeline import PlannedStage, key_config, run_stage
from nuner_core.progress_bar import BarProgress, TeeProgress
from nuner_core.stage_api import StageError
from nuner_core.store import ArtifactStore, open_store


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None, str]] = []

    def update(self, done: int, total: int | None, note: str = "") -> None:
        self.calls.append((done, total, note))


def _corpus_artifact(store: ArtifactStore, texts: list[str]):
    """A stand-in corpus artifact (the corpus stage has its own tests)."""
    with store.publish("corpus", "corpus-test", {"stage": "corpus", "rows": {"sentences": len(texts)}}) as out:
        write_sentences(out / "sentences.parquet", texts)
    return store.lookup("corpus", "corpus-test")


def _annotate_step(config: PipelineConfig, key: str = "annotate-test") -> PlannedStage:
    return PlannedStage("annotate", key, config)


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_shipped_profiles_have_an_annotate_section(profile):
    config = load_config(profile).annotate
    assert isinstance(config, AnnotateConfig)
    if profile == "demo":
        assert (config.offline, config.api_key_env, config.import_responses) == (True, None, "${assets}/annotations.jsonl")
    else:
        assert config.model in config.prices and config.api_key_env == "OPENAI_API_KEY" and config.max_cost


def test_run_settings_are_not_part_of_the_artifact_key():
    keyed = key_config(AnnotateConfig())
    for name in ("base_url", "api_key_env", "requests_per_minute", "tokens_per_minute", "max_in_flight", "max_cost",
                 "max_requests", "offline", "cache_dir", "prices", "request_timeout_s"):
        assert name not in keyed
    for name in ("model", "temperature", "max_tokens", "prompt_template", "import_responses", "on_empty"):
        assert name in keyed


def test_budget_needs_a_price():
    with pytest.raises(ValueError, match="annotate.prices has no entry for model 'mystery'"):
        AnnotateConfig(model="mystery", max_cost=1.0, prices={})


def test_demo_replays_every_recorded_answer_from_the_cache(tmp_path, assets):
    """The done criterion: 1,662 of 1,662 from the cache, 0 requests, through the demo profile's config."""
    records = [json.loads(line) for line in (assets / "annotations.jsonl").read_text().splitlines()]
    store = open_store(tmp_path / "data")
    corpus = _corpus_artifact(store, [r["text"] for r in records])
    config = load_config("demo")
    progress = Recorder()
    ref = run_stage(_annotate_step(config), {"corpus": corpus}, store, progress)
    manifest = ref.manifest()
    assert manifest["headline"]["from_cache"] == manifest["headline"]["sentences"] == 1662
    assert manifest["headline"]["requests"] == 0 and manifest["annotation"]["import"]["added"] == 1662
    table = pq.read_table(ref.dir / "responses.parquet")
    assert table.column("response").to_pylist() == [r["response"] for r in records]
    assert set(table.column("model").to_pylist()) == {"recorded-nuner-llm"}
    assert table.column("from_cache").to_pylist() == [True] * 1662
    assert progress.calls[-1][:2] == (1662, 1662)
    assert (tmp_path / "data" / "cache" / "llm-responses").is_dir()  # the default cache location
    # A second run (another key) finds the file imported already and still makes no request.
    again = run_stage(_annotate_step(config, "annotate-again"), {"corpus": corpus}, store).manifest()
    assert again["annotation"]["import"]["skipped_already_imported"] and again["headline"]["requests"] == 0


def test_demo_replays_through_the_real_corpus_stage(tmp_path):
    store = open_store(tmp_path / "data")
    config = load_config("demo")
    corpus = run_stage(PlannedStage("corpus", "corpus-real", config), {}, store)
    ref = run_stage(_annotate_step(config), {"corpus": corpus}, store)
    headline = ref.manifest()["headline"]
    assert headline["from_cache"] == headline["sentences"] == corpus.manifest()["rows"]["sentences"] == 1662
    assert headline["requests"] == 0


def test_manifest_counts_and_the_key_never_leaves_the_process(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server(script={sentence(1): [Fault.status_code(429, retry_after=0.01)]})
    store = open_store(tmp_path / "data")
    corpus = _corpus_artifact(store, [sentence(i) for i in range(12)])
    config = PipelineConfig(profile="test", annotate=make_config(srv.base_url, backoff_initial_s=0.01))
    step = _annotate_step(config)
    caplog.set_level(logging.DEBUG)
    progress = Recorder()
    ref = run_stage(step, {"corpus": corpus}, store, progress)
    manifest = ref.manifest()
    assert manifest["rows"] == {"sentences": 12, "responses": 12}
    assert manifest["annotation"]["retries_by_reason"] == {"rate_limited": 1}
    assert manifest["headline"]["requests"] == 13 and manifest["headline"]["cost_usd"] > 0
    assert manifest["annotation"]["prompt_tokens"] > 0 and manifest["headline"]["requests_per_s"] > 0
    note = progress.calls[-1][2]
    for text in ("requests/s", "ETA", "tokens", "$", "retries"):
        assert text in note

    # A rejected key: the endpoint echoes it back, the stage error must not.
    bad = server(api_key="sk-another-key")
    fresh = make_config(bad.base_url, cache_dir=str(tmp_path / "data" / "other-cache"))
    with pytest.raises(StageError) as err:
        run_stage(_annotate_step(PipelineConfig(profile="test", annotate=fresh), "k2"), {"corpus": corpus}, store)

    places = {"stage error": str(err.value), "log": caplog.text, "progress": repr(progress.calls), "planned step": repr(step),
              "config": config.model_dump_json()}
    for path in [*(tmp_path / "data").rglob("*")]:
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("latin-1")
    leaked = [where for where, text in places.items() if KEY in text]
    assert leaked == []
    assert "401" in str(err.value) and KEY_ENV in str(err.value)


def test_describe_and_fingerprint(tmp_path, assets):
    store = open_store(tmp_path / "data")
    corpus = _corpus_artifact(store, ["one two three four five six"])
    demo = load_config("demo").annotate
    assert stage.describe(demo, {"corpus": corpus}) == "annotate · recorded-nuner-llm · 1 sentences · offline"
    assert stage.describe(make_config("http://localhost:8000/v1"), {}) == f"annotate · {MODEL} · http://localhost:8000/v1"
    records = tmp_path / "recorded.jsonl"
    records.write_text('{"text": "a b", "response": "x"}\n')
    config = make_config(None, import_responses=str(records))
    before = stage.fingerprint(config)
    records.write_text('{"text": "a b", "response": "y"}\n')
    assert stage.fingerprint(config) != before  # new recorded answers, new artifact


def test_progress_bar_draws_on_a_terminal_and_logs_lines_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = BarProgress("annotate", stream=tty, width=10, every_s=0.0)
    bar.update(5, 10, "5.0 sentences/s")
    bar.update(10, 10, "done")
    assert "[#####.....] 5/10  50%" in tty.getvalue() and tty.getvalue().endswith("done\n")
    plain = io.StringIO()
    bar = BarProgress("annotate", stream=plain, width=4)
    bar.update(1, 4)
    bar.update(2, 4)  # within log_every_s: skipped
    bar.update(4, 4)
    assert plain.getvalue().splitlines() == ["annotate: [#...] 1/4  25%", "annotate: [####] 4/4 100%"]


def test_tee_progress_reports_to_every_target():
    first, second = Recorder(), Recorder()
    TeeProgress(first, second).update(3, 9, "note")
    assert first.calls == second.calls == [(3, 9, "note")]
