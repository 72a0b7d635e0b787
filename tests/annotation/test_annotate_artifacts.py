"""Same-size damage to the files the annotate stage reads and writes: found, and said in one clear message."""

from __future__ import annotations

import json

import pytest
from annotate_helpers import KEY, KEY_ENV, make_config, sentence, write_sentences

from nuner_core.config import PipelineConfig
from nuner_core.dataset.sources import SourceLog, read_responses
from nuner_core.pipeline import PlannedStage, run_stage
from nuner_core.stage_api import StageError
from nuner_core.store import CorruptArtifact, open_store

N = 200


def _zero_400_bytes(file, where: float) -> None:
    """What the issue did: 400 zero bytes written inside the file, its size unchanged."""
    data = bytearray(file.read_bytes())
    at = int(len(data) * where)
    data[at:at + 400] = bytes(400)
    file.write_bytes(bytes(data))


@pytest.fixture
def built(server, tmp_path, monkeypatch):
    """A corpus artifact and the annotate artifact made from it, through the real client."""
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server()
    store = open_store(tmp_path / "data")
    with store.publish("corpus", "corpus-test", {"stage": "corpus"}) as out:
        write_sentences(out / "sentences.parquet", [sentence(i) for i in range(N)])
    corpus = store.lookup("corpus", "corpus-test")
    config = PipelineConfig(profile="test", annotate=make_config(srv.base_url, max_in_flight=16))
    annotate = run_stage(PlannedStage("annotate", "annotate-test", config), {"corpus": corpus}, store)
    return store, corpus, annotate, config


@pytest.mark.parametrize("where", [0.25, 0.5])
def test_damaged_inputs_are_found_before_they_are_read(built, where):
    store, corpus, annotate, _ = built
    _zero_400_bytes(annotate.dir / "responses.parquet", where)
    _zero_400_bytes(corpus.dir / "sentences.parquet", where)
    assert store.lookup("annotate", "annotate-test") is not None  # the sizes still match
    with pytest.raises(CorruptArtifact, match=r"annotate artifact annotate-test is damaged: .*responses.parquet is damaged.*rerun the 'annotate' stage"):
        with store.reading({"annotate": annotate}):
            raise AssertionError("the dataset stage would read it here: it must not get that far")
    assert store.lookup("corpus", "corpus-test", verify=True) is None  # a cached artifact: moved aside, rebuilt
    assert store.lookup("annotate", "annotate-test") is None  # moved aside by the check above


def test_the_annotate_stage_names_a_damaged_sentences_file_it_reads(built, tmp_path):
    """Without the runner's check (an artifact from before checksums): one clear error, not an OSError traceback."""
    store, corpus, _, config = built
    manifest_path = corpus.dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["checksums"]  # as published before checksums existed: the runner cannot vouch for the content
    manifest_path.write_text(json.dumps(manifest))
    _zero_400_bytes(corpus.dir / "sentences.parquet", 0.5)
    expected = r"annotate: cannot read .*sentences.parquet \(OSError: Corrupt snappy.*rerun the stage that wrote it \(the corpus stage\)"
    with pytest.raises(StageError, match=expected):
        run_stage(PlannedStage("annotate", "annotate-other", config), {"corpus": corpus}, store)


def test_the_dataset_stage_names_a_damaged_responses_file_it_reads(built):
    _, _, annotate, _ = built
    path = annotate.dir / "responses.parquet"
    _zero_400_bytes(path, 0.3)
    with pytest.raises(StageError, match=r"responses file .*responses.parquet (cannot be read|is not a readable).*"):
        for _ in read_responses(path, 1000, SourceLog()):
            pass
