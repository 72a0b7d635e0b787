import json

import pytest

from nuner_core.store import CHECKSUM, INCOMPLETE, MANIFEST, CorruptArtifact, artifact_key, file_checksum, open_store


def test_key_is_deterministic_and_sensitive():
    base = artifact_key("corpus", "1", {"seed": 0}, {})
    assert base == artifact_key("corpus", "1", {"seed": 0}, {})
    others = {
        artifact_key("corpus", "2", {"seed": 0}, {}),
        artifact_key("corpus", "1", {"seed": 1}, {}),
        artifact_key("corpus", "1", {"seed": 0}, {"x": "k"}),
        artifact_key("annotate", "1", {"seed": 0}, {}),
    }
    assert base not in others and len(others) == 4


def _publish(store, key="k1", content="hello"):
    manifest = {"stage": "s"}
    with store.publish("s", key, manifest) as out:
        (out / "a.txt").write_text(content)
    return store.lookup("s", key)


def test_publish_then_lookup(tmp_path, clock):
    store = open_store(tmp_path, clock=clock)
    ref = _publish(store)
    assert ref is not None and (ref.dir / "a.txt").read_text() == "hello"
    manifest = ref.manifest()
    assert manifest["files"] == {"a.txt": 5} and manifest["created_at"] == clock()  # the store's clock
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["k1"]  # no temporary directory left


def test_crash_leaves_nothing_that_looks_finished(tmp_path):
    store = open_store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.publish("s", "k1", {}) as out:
            (out / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert store.lookup("s", "k1") is None
    assert list((tmp_path / "s").iterdir()) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "a.txt").unlink(),
        lambda d: (d / "a.txt").write_text("longer than before"),
        lambda d: (d / MANIFEST).unlink(),
        lambda d: (d / MANIFEST).write_text("{not json"),
    ],
    ids=["missing-file", "size-mismatch", "no-manifest", "bad-manifest"],
)
def test_corrupt_artifact_is_reported_and_moved_aside(tmp_path, damage, caplog):
    store = open_store(tmp_path)
    ref = _publish(store)
    damage(ref.dir)
    assert not store.exists("s", "k1")
    assert store.lookup("s", "k1") is None
    assert "corrupt artifact" in caplog.text
    assert not (tmp_path / "s" / "k1").exists()
    assert _publish(store) is not None  # and it can be rebuilt


def test_latest_is_the_newest_and_skips_corrupt(tmp_path, clock):
    store = open_store(tmp_path, clock=clock)
    _publish(store, "k2")
    clock.advance(1.0)
    first = _publish(store, "k1")
    assert store.latest("s").key == "k1"  # by creation time, not by name
    clock.advance(1.0)
    second = _publish(store, "k2", content="again")  # the same key: the final one is kept, its time too
    assert store.latest("s").key == "k1"
    (first.dir / MANIFEST).write_text(json.dumps({"files": {"gone.txt": 1}, "created_at": clock()}))
    assert store.latest("s").key == second.key
    assert store.latest("nothing") is None


# ------------------------------------------------------------------ content checksums (issue 11, item 4)


def _damage_same_size(file, at: int = 0, n: int = 4) -> None:
    """Overwrite ``n`` bytes at ``at`` with zeros (or ones where they were zeros): same size, other content."""
    data = bytearray(file.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] = 0 if data[i] else 1
    file.write_bytes(bytes(data))


def test_manifest_records_a_checksum_of_every_file(tmp_path):
    store = open_store(tmp_path)
    with store.publish("s", "k1", {}) as out:
        (out / "a.txt").write_text("hello")
        (out / "sub").mkdir()
        (out / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    manifest = store.lookup("s", "k1").manifest()
    assert set(manifest["checksums"]) == {"a.txt", "sub/b.bin"} == set(manifest["files"])
    assert manifest["checksums"]["a.txt"] == file_checksum(tmp_path / "s" / "k1" / "a.txt")
    assert manifest["checksums"]["a.txt"].startswith(f"{CHECKSUM}:")


def test_same_size_damage_is_found_when_verified_and_the_artifact_moved_aside(tmp_path, caplog):
    store = open_store(tmp_path)
    ref = _publish(store)
    _damage_same_size(ref.dir / "a.txt")
    assert store.lookup("s", "k1") is not None  # sizes only: cheap, does not see it
    assert store.lookup("s", "k1", verify=True) is None
    assert "a.txt is damaged" in caplog.text and not ref.dir.exists()
    assert [p.name.startswith(".corrupt-k1-") for p in (tmp_path / "s").iterdir()] == [True]
    assert _publish(store) is not None  # rebuilt


def test_verify_names_the_file_and_the_stage_to_rerun(tmp_path):
    store = open_store(tmp_path)
    ref = _publish(store)
    assert store.verify(ref) == ref
    _damage_same_size(ref.dir / "a.txt", at=2)
    with pytest.raises(CorruptArtifact, match=r"the s artifact k1 is damaged: .*a.txt is damaged.*rerun the 's' stage"):
        store.verify(ref)
    assert store.lookup("s", "k1") is None  # moved aside: the next run rebuilds it


def test_reading_turns_a_read_error_of_a_damaged_input_into_one_clear_error(tmp_path):
    store = open_store(tmp_path)
    ref = _publish(store)
    with pytest.raises(CorruptArtifact, match="a.txt is damaged.*rerun the 's' stage") as err:
        with store.reading({"s": ref}):
            _damage_same_size(ref.dir / "a.txt")  # damaged while the stage ran
            raise OSError("Unexpected end of stream")  # what a reader says, naming no file
    assert isinstance(err.value.__cause__, OSError)
    other = _publish(store, "k2")
    with pytest.raises(KeyError):  # not a read error of a damaged input: unchanged
        with store.reading({"s": other}):
            raise KeyError("a bug")


def test_reading_names_the_file_when_an_old_manifest_has_no_checksums(tmp_path):
    store = open_store(tmp_path)
    ref = _publish(store)
    manifest = ref.manifest()
    del manifest["checksums"]
    (ref.dir / MANIFEST).write_text(json.dumps(manifest))
    assert store.lookup("s", "k1", verify=True) is not None  # nothing to check content against
    with pytest.raises(CorruptArtifact, match=r"reading .*a.txt of the s artifact k1 failed \(ValueError.*rerun the 's' stage"):
        with store.reading({"s": ref}):
            raise ValueError(f"cannot parse {ref.dir / 'a.txt'}")


def test_publish_keeps_a_final_artifact_and_replaces_an_incomplete_or_damaged_one(tmp_path):
    store = open_store(tmp_path)
    first = _publish(store, content="first")
    assert _publish(store, content="again").dir.joinpath("a.txt").read_text() == "first"  # same key: kept
    with store.publish("s", "k2", {INCOMPLETE: {"count": 1}}) as out:
        (out / "a.txt").write_text("partial")
    assert store.lookup("s", "k2").incomplete == {"count": 1} and not store.is_final("s", "k2")
    assert store.exists("s", "k2")  # valid, as an input
    assert _publish(store, "k2", content="complete").dir.joinpath("a.txt").read_text() == "complete"
    assert store.is_final("s", "k2") and store.lookup("s", "k2").incomplete is None
    _damage_same_size(first.dir / "a.txt")
    assert _publish(store, content="fresh").dir.joinpath("a.txt").read_text() == "fresh"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["k1", "k2"]  # nothing left over


def test_publish_removes_what_killed_runs_left_behind(tmp_path):
    import os
    import subprocess
    import sys

    store = open_store(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    orphan = tmp_path / "corpus" / f".tmp-oldkey-{gone}"
    orphan.mkdir(parents=True)
    (orphan / "half.parquet").write_bytes(b"x" * 10)
    alive = tmp_path / "corpus" / f".tmp-otherkey-{os.getppid()}"  # a live process's work in progress: kept
    alive.mkdir()
    with store.publish("corpus", "newkey", {}) as out:
        (out / "a.txt").write_text("a")
    assert not orphan.exists() and alive.exists()
