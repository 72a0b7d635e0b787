"""The artifact store on a real S3 API (moto's server on 127.0.0.1): publish, fetch, damage, kills, resumable work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest
from s3_env import S3_ENV

from nuner_core.store import (
    INCOMPLETE,
    MANIFEST,
    ArtifactStore,
    CorruptArtifact,
    LocalStore,
    RemoteStore,
    StoreError,
    content_id,
    local_root,
    open_store,
    store_location,
)


def _s3() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", use_listings_cache=False)


def _publish(store: ArtifactStore, key: str, files: dict[str, bytes], **manifest) -> None:
    with store.publish("s", key, dict(manifest)) as out:
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)


FILES = {"a.txt": b"alpha" * 1000, "sub/b.bin": bytes(range(256)) * 40}


@pytest.fixture
def machines(s3_bucket, tmp_path, clock):
    """Two "machines": stores on the same bucket with their own local directories (and one clock)."""
    return (
        open_store(s3_bucket, local_dir=tmp_path / "machine-a", clock=clock),
        open_store(s3_bucket, local_dir=tmp_path / "machine-b", clock=clock),
    )


def test_a_url_in_nuner_data_dir_makes_a_remote_store_and_keeps_local_paths_local(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("NUNER_DATA_DIR", s3_bucket + "/")
    monkeypatch.setenv("NUNER_LOCAL_DIR", str(tmp_path / "local"))
    store = open_store()
    assert isinstance(store, RemoteStore) and store.location == s3_bucket and store_location() == s3_bucket
    assert local_root() == tmp_path / "local" and store.cache_dir == tmp_path / "local" / "cache"
    assert store.root.parent == tmp_path / "local" / "remote"
    monkeypatch.setenv("NUNER_DATA_DIR", f"file://{tmp_path}/plain")
    local = open_store()
    assert type(local) is LocalStore and local.root == tmp_path / "plain" and local.location == str(tmp_path / "plain")


def test_publish_then_fetch_on_another_machine(machines, s3_bucket):
    a, b = machines
    _publish(a, "k1", FILES, note="x")
    base = s3_bucket.removeprefix("s3://")
    manifest = json.loads(_s3().cat_file(f"{base}/s/k1/{MANIFEST}"))
    cid = content_id(manifest)
    assert set(_s3().find(f"{base}/s/k1")) == {f"{base}/s/k1/{MANIFEST}", f"{base}/s/k1/{cid}/{MANIFEST}"} | {
        f"{base}/s/k1/{cid}/{rel}" for rel in FILES
    }
    assert a.stats["uploaded_bytes"] == sum(map(len, FILES.values()))
    # a's own copy is its local copy: nothing downloaded there
    ref_a = a.lookup("s", "k1")
    assert ref_a is not None and a.stats["downloaded_bytes"] == 0 and (ref_a.dir / "a.txt").read_bytes() == FILES["a.txt"]

    found = b.lookup("s", "k1", fetch=False)
    assert found is not None and not found.dir.exists() and found.manifest()["note"] == "x"  # manifest read from the store
    ref = b.fetch(found)
    assert ref.url == f"{s3_bucket}/s/k1" and ref.dir == b.root / "s" / "k1" / cid
    assert {rel: (ref.dir / rel).read_bytes() for rel in FILES} == FILES
    assert b.stats["downloaded_bytes"] == sum(map(len, FILES.values()))
    again = b.lookup("s", "k1", verify=True)
    assert again == ref and b.stats["downloaded_files"] == len(FILES)  # read once per machine
    assert b.is_final("s", "k1") and b.exists("s", "k1") and b.latest("s") == ref
    assert b.here(ref_a) == ref  # a record written on machine a, named for machine b without I/O
    assert b.lookup("s", "nope") is None and b.latest("other") is None


def test_same_size_damage_on_the_store_is_found_on_download(machines, s3_bucket, caplog):
    a, b = machines
    _publish(a, "k1", FILES)
    base = s3_bucket.removeprefix("s3://")
    cid = content_id(a.lookup("s", "k1").manifest())
    damaged = bytearray(FILES["a.txt"])
    damaged[100:110] = b"0123456789"
    _s3().pipe_file(f"{base}/s/k1/{cid}/a.txt", bytes(damaged))  # same size, other bytes

    assert b.exists("s", "k1")  # sizes match: the listing cannot see it
    with caplog.at_level("WARNING"):
        assert b.lookup("s", "k1") is None
    assert "a.txt is damaged" in caplog.text
    assert not _s3().exists(f"{base}/s/k1/{MANIFEST}")  # uncommitted: the next run rebuilds it
    assert [p.rsplit("/", 1)[1] for p in _s3().ls(f"{base}/s")].count("k1") == 1
    assert any(p.rsplit("/", 1)[1].startswith(".corrupt-k1-") for p in _s3().ls(f"{base}/s"))
    assert not (b.root / "s" / "k1" / cid).exists()  # nothing half-checked left as a local copy


def test_a_damaged_local_copy_is_downloaded_again(machines):
    a, b = machines
    _publish(a, "k1", FILES)
    ref = b.lookup("s", "k1")
    (ref.dir / "a.txt").write_bytes(b"x" * len(FILES["a.txt"]))
    with b.reading({"s": ref}):
        assert (ref.dir / "a.txt").read_bytes() == FILES["a.txt"]
    assert b.stats["downloaded_files"] == 2 * len(FILES)


def test_fetching_a_reference_whose_artifact_was_removed_names_the_stage(machines, s3_bucket):
    a, b = machines
    _publish(a, "k1", FILES)
    ref = b.lookup("s", "k1", fetch=False)
    _s3().rm(f"{s3_bucket.removeprefix('s3://')}/s/k1", recursive=True)
    with pytest.raises(CorruptArtifact, match="no longer in the store .* rerun the 's' stage"):
        b.fetch(ref)


def test_incomplete_is_replaced_and_a_final_one_kept(machines, s3_bucket):
    a, b = machines
    _publish(a, "k1", {"a.txt": b"partial"}, **{INCOMPLETE: {"count": 1}})
    first = b.lookup("s", "k1")
    assert first.incomplete == {"count": 1} and not b.is_final("s", "k1")
    _publish(b, "k1", {"a.txt": b"complete"})
    assert a.is_final("s", "k1")
    base = s3_bucket.removeprefix("s3://")
    cids = [p.rsplit("/", 1)[1] for p in _s3().ls(f"{base}/s/k1") if not p.endswith(MANIFEST)]
    assert cids == [b.lookup("s", "k1").dir.name]  # the replaced publication's files are gone
    _publish(a, "k1", {"a.txt": b"another build"})  # same key, final there: that one stays
    assert (a.lookup("s", "k1").dir / "a.txt").read_bytes() == b"complete"


def test_latest_is_the_newest_committed_artifact(machines, clock):
    a, b = machines
    _publish(a, "k2", {"a.txt": b"2"})
    clock.advance(1.0)
    _publish(b, "k1", {"a.txt": b"1"})
    assert a.lookup("s", "k1").manifest()["created_at"] == clock()  # stamped by the store's clock
    assert a.latest("s").key == b.latest("s").key == "k1"  # newest, whatever the keys' order


KILLED_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nuner_core.store import open_store
    from nuner_core.store.objects import ObjectStore

    url, local, marker = sys.argv[1:]
    real_upload = ObjectStore.upload

    def slow_upload(self, pairs):
        for pair in list(pairs):
            real_upload(self, [pair])
            Path(marker).write_text("one file is up")
            time.sleep(60)  # killed here, between two files

    ObjectStore.upload = slow_upload
    store = open_store(url, local_dir=local)
    with store.publish("s", "k1", {}) as out:
        (out / "a.txt").write_bytes(b"a" * 100_000)
        (out / "b.txt").write_bytes(b"b" * 100_000)
    """
)


def test_a_kill_during_publishing_leaves_no_artifact_a_reader_takes_for_complete(machines, s3_bucket, tmp_path):
    a, b = machines
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISHER, s3_bucket, str(tmp_path / "killed"), str(marker)],
        cwd=Path(__file__).resolve().parents[2], env=dict(os.environ),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the publisher did not reach its first upload"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    base = s3_bucket.removeprefix("s3://")
    assert len(_s3().find(f"{base}/s/k1")) == 1  # one file up, no manifest
    assert b.lookup("s", "k1") is None and not b.exists("s", "k1") and b.latest("s") is None
    _publish(a, "k1", {"a.txt": b"rebuilt"})
    assert (b.lookup("s", "k1").dir / "a.txt").read_bytes() == b"rebuilt"


def test_resumable_work_is_pushed_at_checkpoints_and_pulled_elsewhere(machines, s3_bucket, monkeypatch):
    monkeypatch.setenv("NUNER_SYNC_EVERY_S", "0.1")
    a, b = machines
    base = s3_bucket.removeprefix("s3://")
    with pytest.raises(RuntimeError, match="killed"):
        with a.working("s", "k1") as work:
            (work / "checkpoints").mkdir()
            (work / "checkpoints" / "step_00000001.pt").write_bytes(b"1" * 1000)
            (work / "checkpoints" / "step_00000002.pt.tmp").write_bytes(b"half")  # being written: never uploaded
            deadline = time.monotonic() + 30
            while not _s3().exists(f"{base}/s/.work/k1/checkpoints/step_00000001.pt"):  # the periodic push
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (work / "checkpoints" / "step_00000001.pt").unlink()  # pruned by the training loop
            (work / "checkpoints" / "step_00000002.pt").write_bytes(b"2" * 1000)
            raise RuntimeError("killed")  # the last push happens on the way out
    assert sorted(p.rsplit("/", 1)[1] for p in _s3().find(f"{base}/s/.work/k1")) == ["step_00000002.pt"]

    with b.working("s", "k1") as work:  # another machine resumes
        assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step_00000002.pt"]
    b.finish_work("s", "k1", final=False)  # incomplete: the work stays on the store for the rerun
    assert _s3().find(f"{base}/s/.work/k1")
    b.finish_work("s", "k1", final=True)
    assert not _s3().find(f"{base}/s/.work/k1") and not (b.root / "s" / ".work" / "k1").exists()


def test_credentials_never_come_from_the_url(s3_bucket):
    with pytest.raises(StoreError) as info:
        open_store("s3://AKIAEXAMPLE:hunter2@bucket/prefix")
    assert "hunter2" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert "environment or profile" in str(info.value)


def test_a_missing_bucket_is_one_clear_error(s3_bucket, tmp_path):
    store = open_store("s3://no-such-bucket-here/x", local_dir=tmp_path)
    with pytest.raises(StoreError, match="no-such-bucket-here.* does not exist"):
        store.lookup("s", "k1")


def test_no_credential_in_manifests_or_logs(machines, s3_bucket, caplog):
    a, b = machines
    with caplog.at_level("DEBUG"):
        _publish(a, "k1", FILES)
        ref = b.lookup("s", "k1")
    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"]
    assert secret not in (ref.dir / MANIFEST).read_text() and secret not in caplog.text


def test_the_store_never_enters_a_key(machines, tmp_path):
    from nuner_core.config import load_config
    from nuner_core.pipeline import plan

    config = load_config("demo")
    local = {s.stage: s.key for s in plan(config, None, open_store(tmp_path / "local-store"))}
    remote = {s.stage: s.key for s in plan(config, None, machines[0])}
    assert remote == local
