"""The response cache beyond one worker: segments written at checkpoints, saved with the artifact, imported elsewhere."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from annotate_helpers import KEY, KEY_ENV, make_config, sentence, wait_for, write_sentences

from nuner_core.annotation.cache import CachedAnswer, ResponseCache
from nuner_core.annotation.cache_sync import ARTIFACT_FILE, SEGMENTS, AnswerJournal, import_segment, import_segments
from nuner_core.annotation.leases import Holder
from nuner_core.config import PipelineConfig
from nuner_core.pipeline import PlannedStage, run_stage
from nuner_core.stage_api import StageError
from nuner_core.store import open_store

N = 40


def _key(i: int) -> str:
    return f"r1:{i:064x}"


def test_the_journal_writes_only_new_answers_and_imports_once(tmp_path):
    cache_dir, segments = tmp_path / "cache", tmp_path / "work" / SEGMENTS
    with ResponseCache(cache_dir) as cache:
        for i in range(3):
            cache.put(_key(i), CachedAnswer(f"old {i}"))
        with AnswerJournal(cache_dir, segments, every_s=0.05) as journal:
            for i in range(3, 6):
                cache.put(_key(i), CachedAnswer(f"new {i}", prompt_tokens=i))
            wait_for(lambda: journal.written >= 1, what="a segment written at a checkpoint")
            cache.put(_key(6), CachedAnswer("last"))
            cache.lease(_key(7), Holder(), 60)  # a lease: not an answer
    assert journal.exported == 4  # the three new answers and the last one; neither old answers nor leases
    rows = [r for f in sorted(segments.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["key"] for r in rows) == [_key(i) for i in range(3, 7)]

    other = tmp_path / "other-cache"
    with ResponseCache(other) as cache:
        cache.put(_key(6), CachedAnswer("kept: never replaced"))
    stats = import_segments(other, segments)
    assert (stats.added, stats.already_cached, stats.skipped) == (3, 1, 0)
    with ResponseCache(other) as cache:
        assert cache.get(_key(4)) == CachedAnswer("new 4", prompt_tokens=4) and cache.get(_key(6)).response == "kept: never replaced"
        again = import_segment(cache, sorted(segments.glob("*.parquet"))[0])
    assert again.skipped == 1 and again.added == 0


def test_a_stopped_run_resumes_on_another_machine_without_paying_twice(server, s3_bucket, tmp_path, monkeypatch):
    """Budget stop on machine a; machine b (empty disk) finishes from the store; machine c re-annotates under
    another key from the artifact's saved answers, offline."""
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server()
    a = open_store(s3_bucket, local_dir=tmp_path / "a")
    b = open_store(s3_bucket, local_dir=tmp_path / "b")
    with a.publish("corpus", "corpus-k", {"stage": "corpus"}) as out:
        write_sentences(out / "sentences.parquet", [sentence(i) for i in range(N)])
    corpus = a.lookup("corpus", "corpus-k")

    stopped = PipelineConfig(profile="test", annotate=make_config(srv.base_url, max_requests=N // 2, max_in_flight=1))
    with pytest.raises(StageError, match="budget"):
        run_stage(PlannedStage("annotate", "k1", stopped), {"corpus": corpus}, a)
    paid = srv.request_count
    assert N // 2 <= paid < N

    full = PipelineConfig(profile="test", annotate=make_config(srv.base_url))
    ref = run_stage(PlannedStage("annotate", "k1", full), {"corpus": corpus}, b)
    assert srv.request_count == N, "machine b asked again for answers machine a had paid for"
    headline = ref.manifest()["headline"]
    assert headline["requests"] == N - paid and headline["from_cache"] == paid
    saved = pq.read_table(ref.dir / ARTIFACT_FILE)
    assert saved.num_rows == N and ref.manifest()["response_cache"]["answers"] == N
    assert not b.objects.list_files("annotate/.work/k1")  # final: the resumable work is gone from the store

    c = open_store(s3_bucket, local_dir=tmp_path / "c")
    with ResponseCache(c.cache_dir / "llm-responses") as cache:
        assert import_segment(cache, b.fetch(ref).dir / ARTIFACT_FILE).added == N
    offline = PipelineConfig(profile="test", annotate=make_config(srv.base_url, offline=True, max_failed_share=0.0))
    again = run_stage(PlannedStage("annotate", "k-other", offline), {"corpus": corpus}, c)
    assert again.manifest()["headline"]["from_cache"] == N and srv.request_count == N
