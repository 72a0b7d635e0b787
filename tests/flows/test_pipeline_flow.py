"""The nuner flow under a Prefect test server: Completed, then Cached, then rebuilt."""

import shutil

import pytest

from flows.pipeline import nuner


@pytest.fixture
def run(prefect_harness, data_dir):
    def _run(**params):
        return nuner(profile="demo", **params)

    return _run


def test_completed_then_cached_then_rebuilt(run, data_dir):
    first = run(stages=["corpus"])
    assert first["corpus"]["state"] == "Completed"
    second = run(stages=["corpus"])
    assert second["corpus"] == first["corpus"] | {"state": "Cached"}

    shutil.rmtree(first["corpus"]["path"])
    third = run(stages=["corpus"])
    assert third["corpus"]["state"] == "Completed" and third["corpus"]["key"] == first["corpus"]["key"]

    changed = run(stages=["corpus"], overrides={"corpus.num_sentences": 100})
    assert changed["corpus"]["state"] == "Completed" and changed["corpus"]["key"] != first["corpus"]["key"]


def test_unknown_stage_is_an_error(run):
    with pytest.raises(Exception, match="unknown stage"):
        run(stages=["nope"])


def test_a_stage_error_fails_the_run_with_its_message_and_no_traceback(prefect_harness, data_dir, caplog):
    overrides = {"corpus.sources": [{"path": str(data_dir / "nowhere.jsonl")}]}
    with caplog.at_level("INFO"):
        state = nuner(profile="demo", overrides=overrides, stages=["corpus"], return_state=True)
    assert state.is_failed()
    assert "nowhere.jsonl" in state.message and "matches no file" in state.message
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []


def test_a_bad_override_fails_the_run_with_its_message(prefect_harness, data_dir):
    state = nuner(profile="demo", overrides={"corpus.nosuchfield": 1}, stages=["corpus"], return_state=True)
    assert state.is_failed() and "corpus.nosuchfield: unknown key" in state.message


def test_a_cache_record_of_the_old_format_is_a_miss_and_the_artifact_is_found_again(run, data_dir, monkeypatch):
    """Records written before this version were pickles of ``nuner_core.artifacts.ArtifactRef`` (a module that is
    gone). They are not records the stage task reads back (plain JSON only, see tasks/records.py): deleted unread,
    a miss, and the stage task finds the artifact in the store instead of rebuilding it."""
    import dataclasses
    import json
    import sys
    import types

    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    first = run(stages=["corpus"])
    created = json.loads((data_dir / "corpus" / first["corpus"]["key"] / "manifest.json").read_text())["created_at"]
    [record] = (data_dir / ".prefect-results").glob(f"nuner-corpus-{first['corpus']['key']}-*")

    @dataclasses.dataclass(frozen=True)
    class ArtifactRef:  # what the record held before the move
        stage: str
        key: str
        path: str
        url: str | None = None

    old = types.ModuleType("nuner_core.artifacts")
    ArtifactRef.__module__, ArtifactRef.__qualname__ = old.__name__, "ArtifactRef"
    old.ArtifactRef = ArtifactRef
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, old.__name__, old)
        ref = ArtifactRef("corpus", first["corpus"]["key"], first["corpus"]["path"])
        stale = ResultRecord(result=ref, metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=record.name))
        record.write_bytes(stale.serialize())

    second = run(stages=["corpus"])
    assert second["corpus"] == first["corpus"]  # a miss (the task ran: Completed) ...
    after = json.loads((data_dir / "corpus" / first["corpus"]["key"] / "manifest.json").read_text())["created_at"]
    assert after == created  # ... that found the artifact: nothing rebuilt
    assert run(stages=["corpus"])["corpus"] == first["corpus"] | {"state": "Cached"}  # and the record is ours again

class _WritesMarker:
    """Unpickling it writes a file: what a planted record would do instead (any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (_write_marker, (self.path,))


def _write_marker(path):
    with open(path, "w") as fh:
        fh.write("ran")


@pytest.mark.parametrize("serializer", [{"type": "pickle", "picklelib": "pickle"},
                                        {"type": "json", "object_decoder": "tests.flows.test_pipeline_flow._write_marker"}],
                         ids=["pickle", "json-with-a-decoder-of-its-own"])
def test_a_planted_cache_record_is_deleted_unread_and_the_artifact_is_found_again(run, data_dir, tmp_path, serializer):
    """A record names its own serializer, and Prefect decodes it with that: whoever can write the store could plant
    one that runs code on every worker looking the stage up. The stage task reads back only plain-JSON records of
    an ArtifactRef for its own stage and key; anything else is deleted before Prefect sees it."""
    import base64
    import json
    import pickle

    first = run(stages=["corpus"])
    [record] = (data_dir / ".prefect-results").glob(f"nuner-corpus-{first['corpus']['key']}-*")
    marker = tmp_path / "marker.txt"
    payload = (base64.b64encode(pickle.dumps(_WritesMarker(marker))).decode() if serializer["type"] == "pickle"
               else json.dumps({"path": str(marker)}))
    record.write_text(json.dumps({"metadata": {"storage_key": record.name, "serializer": serializer, "prefect_version": "3.8.8"},
                                  "result": payload}))

    second = run(stages=["corpus"])
    assert not marker.exists()  # never decoded
    assert second["corpus"] == first["corpus"]  # a miss (Completed) that found the artifact in the store
    assert run(stages=["corpus"])["corpus"] == first["corpus"] | {"state": "Cached"}  # and a record of ours again
