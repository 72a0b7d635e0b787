"""A sentence that failed is published as failed, never as an answer, and the next run asks for it alone."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
from annotate_helpers import KEY, KEY_ENV, make_config, sentence, write_sentences
from fake_openai import Fault

from nuner_core.annotation import stage
from nuner_core.config import PipelineConfig
from nuner_core.dataset.config import DatasetConfig
from nuner_core.dataset.stage import run as run_dataset
from nuner_core.pipeline import PlannedStage, run_stage
from nuner_core.stage_api import LogProgress, StageContext
from nuner_core.store import INCOMPLETE, open_store

N = 10
VICTIM = 3


def test_failed_sentence_is_recorded_as_failed_left_out_of_the_dataset_and_asked_again(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    # Three cut-off answers in a row: the sentence fails (on_truncated=retry, invalid_retries=2).
    srv = server(script={sentence(VICTIM): [Fault.truncated()] * 3})
    store = open_store(tmp_path / "data")
    with store.publish("corpus", "corpus-test", {"stage": "corpus", "rows": {"sentences": N}}) as out:
        write_sentences(out / "sentences.parquet", [sentence(i) for i in range(N)])
    corpus = store.lookup("corpus", "corpus-test")
    config = PipelineConfig(profile="test", annotate=make_config(srv.base_url, max_failed_share=0.2))
    step = PlannedStage("annotate", "annotate-test", config)

    caplog.set_level(logging.WARNING, logger="nuner.annotate")
    ref = run_stage(step, {"corpus": corpus}, store)
    requests_first = srv.request_count
    assert requests_first == N + 2  # the victim was asked three times

    # Recorded as failed, with the reason: not an empty answer.
    rows = pq.read_table(ref.dir / "responses.parquet").to_pylist()
    assert rows[VICTIM]["response"] is None and rows[VICTIM]["error"].startswith("truncated:")
    assert all(r["response"] for i, r in enumerate(rows) if i != VICTIM)
    # Said so: the manifest (summary, UI table and a report of its own), the log, and the store.
    manifest = ref.manifest()
    assert manifest[INCOMPLETE]["count"] == 1 and manifest[INCOMPLETE]["by_reason"] == {"truncated": 1}
    assert manifest["headline"]["failed"] == 1 and manifest["headline"]["failed_by_reason"] == "truncated: 1"
    assert manifest["rows"] == {"sentences": N, "responses": N - 1}
    assert "annotate-failed" in [r["key"] for r in manifest["reports"]]
    assert "1 of 10 sentences failed (truncated: 1)" in caplog.text
    assert ref.incomplete is not None and not store.is_final("annotate", "annotate-test")

    # The dataset stage leaves it out as a failed call, by reason, not as "the LLM found no entity".
    out = tmp_path / "dataset-out"
    out.mkdir()
    result = run_dataset(StageContext(config=DatasetConfig(validation_fraction=0.0), inputs={"annotate": ref}, out_dir=out,
                                      work_dir=tmp_path / "dw", cache_dir=tmp_path / "dc", progress=LogProgress("dataset")))
    counts = result.extra["counts"]
    assert counts["sentences.dropped.failed_response"] == 1 and counts["failed_response.truncated"] == 1
    assert counts.get("sentences.dropped.no_entities", 0) == 0

    # The runner builds a non-final artifact again (what run_stage does once it checks ref.incomplete):
    # the stage asks for the failed sentence only, and the complete artifact replaces the incomplete one.
    manifest_again = {"stage": "annotate", "key": "annotate-test"}
    with store.publish("annotate", "annotate-test", manifest_again) as out_dir:
        ctx = StageContext(config=config.annotate, inputs={"corpus": corpus}, out_dir=out_dir, work_dir=tmp_path / "w",
                           cache_dir=store.cache_dir, progress=LogProgress("annotate"))
        manifest_again.update(stage.run(ctx).extra)
    assert srv.request_count == requests_first + 1  # the victim alone; the other nine came from the cache
    final = store.lookup("annotate", "annotate-test", verify=True)
    assert final is not None and final.incomplete is None and store.is_final("annotate", "annotate-test")
    assert pq.read_table(final.dir / "responses.parquet").column("error").null_count == N
