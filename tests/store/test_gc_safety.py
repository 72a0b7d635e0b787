"""``nuner store gc`` removes only what it planned, only the store's own layout, and never live work.

Regression tests of issue 20 (items 4, 5 and 7): another worker's upload beside an old incomplete
artifact, an artifact rebuilt between the scan and the removal, a live process's temporary
directory, a user's files under the data directory, a source tree taken for a store, and a
temporary directory of another host sharing the store's file system.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.cli import main
from nuner_core.registry import STAGE_NAMES
from nuner_core.store import INCOMPLETE, MANIFEST, ArtifactStore, RemoteStore, inventory, open_store

K, X = "c0" * 8, "f" * 16
LATER = 20 * 86400  # 20 days after the fake clock: nothing is recent any more


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, clock) -> ArtifactStore:
    if request.param == "local":
        return open_store(tmp_path / "data", clock=clock)
    return open_store(request.getfixturevalue("s3_bucket"), local_dir=tmp_path / "local", clock=clock)


def _publish(store: ArtifactStore, key: str, content: bytes, *, incomplete: bool = False) -> None:
    manifest = {"stage": "corpus", "key": key, **({INCOMPLETE: {"sentences": 5}} if incomplete else {})}
    with store.publish("corpus", key, manifest) as out:
        (out / "data.bin").write_bytes(content)
    store.clock.advance(1.0)


def _plan(store: ArtifactStore, now: float, **kw) -> inventory.GcPlan:
    return inventory.plan_gc(inventory.scan(store, STAGE_NAMES), now=now, **kw)


def _names(items) -> set[str]:
    return {f"{i.kind} {i.name}" for i in items}


def test_gc_on_a_bucket_never_deletes_another_workers_upload_beside_an_old_incomplete_artifact(s3_bucket, tmp_path, clock):
    store = open_store(s3_bucket, local_dir=tmp_path / "local", clock=clock)
    assert isinstance(store, RemoteStore)
    _publish(store, K, b"old", incomplete=True)  # an hour old by the wall clock
    store.objects.write_bytes(f"corpus/{K}/{X}/data.bin", b"new" * 100)  # another worker uploading its rebuild now
    plan = _plan(store, time.time(), keep_days=0.01, grace_hours=1)
    assert f"artifact corpus/{K}" in _names(plan.remove)
    assert plan.keep[f"uncommitted corpus/{K}"].endswith("maybe still being published)")
    inventory.remove(store, plan.remove)
    assert store.objects.read_bytes(f"corpus/{K}/{X}/data.bin") == b"new" * 100  # the upload the plan kept
    assert store.objects.read_bytes(f"corpus/{K}/{MANIFEST}") is None  # the old artifact is gone


def test_gc_keeps_an_artifact_rebuilt_between_the_scan_and_the_removal(store):
    _publish(store, K, b"old", incomplete=True)
    plan = _plan(store, store.clock() + LATER)
    assert f"artifact corpus/{K}" in _names(plan.remove)
    _publish(store, K, b"complete now")  # a run finishes the artifact while gc is between its scan and its removal
    removed = inventory.remove(store, plan.remove)
    assert removed == []
    ref = store.lookup("corpus", K)
    assert ref is not None and ref.incomplete is None and (ref.dir / "data.bin").read_bytes() == b"complete now"


@pytest.mark.parametrize("host", [None, "this"])
def test_gc_never_removes_the_temporary_directory_of_a_live_process(tmp_path, clock, host):
    store = open_store(tmp_path / "data", clock=clock)
    suffix = "" if host is None else f"@{socket.gethostname()}"
    tmp = store.root / "corpus" / f".tmp-{K}-{os.getpid()}{suffix}"  # this test's process: alive
    tmp.mkdir(parents=True)
    (tmp / "half.bin").write_bytes(b"h" * 10)
    plan = _plan(store, store.clock() + LATER, grace_hours=1)  # its files are far older than the grace period
    assert _names(plan.remove) == set()
    assert f"process {os.getpid()}" in plan.keep[f"uncommitted corpus/{K}"]
    inventory.remove(store, plan.remove)
    assert (tmp / "half.bin").exists()


def _plant_foreign_files(store: ArtifactStore) -> list[str]:
    """Files the store never writes: a user's input, notes in a stage directory, odd names in an artifact's place."""
    names = ["inputs/2024/reviews.jsonl", "corpus/notes/todo.txt", "corpus/not-a-key/part.bin", "corpus/.work/not-a-key/x.bin"]
    if isinstance(store, RemoteStore):
        names.append(f"corpus/{K}/not-a-content-id/x.bin")
        for name in names:
            store.objects.write_bytes(name, b"mine")
    else:
        for name in names:
            (store.root / name).parent.mkdir(parents=True, exist_ok=True)
            (store.root / name).write_bytes(b"mine")
    return names


def test_gc_never_removes_files_that_are_not_the_stores(store):
    _publish(store, K, b"kept: the latest")
    names = _plant_foreign_files(store)
    plan = _plan(store, store.clock() + LATER, keep_days=0, grace_hours=0)
    assert _names(plan.remove) == set()
    unknown = {label for label, why in plan.keep.items() if why == "unknown, never removed"}
    assert "unknown inputs" in unknown and "unknown corpus/notes" in unknown and "unknown corpus/not-a-key" in unknown
    inventory.remove(store, plan.remove)
    for name in names:
        found = store.objects.read_bytes(name) if isinstance(store, RemoteStore) else (store.root / name).read_bytes()
        assert found == b"mine", name


def test_gc_on_a_source_tree_taken_for_the_store_plans_to_remove_nothing(tmp_path, capsys):
    tree = tmp_path / "project"
    for name in ["src/pkg/mod.py", "tests/unit/deep/test_mod.py", "corpus/sub/x.py", ".git/objects/ab/cdef", "README.md"]:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("code")
    assert main(["store", "--store", str(tree), "gc", "--keep-days", "0", "--grace-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "would remove" not in out and "nothing to remove" in out
    assert "keep    unknown src: unknown, never removed" in out
    assert main(["store", "--store", str(tree), "gc", "--keep-days", "0", "--grace-hours", "0", "--delete"]) == 0
    assert all((tree / name).exists() for name in ["src/pkg/mod.py", "tests/unit/deep/test_mod.py", "corpus/sub/x.py"])


def _half_publish(root: Path, key: str, host: str | None) -> Path:
    """A publisher (``host``: as another machine names itself) killed inside ``publish``: its temporary directory."""
    code = textwrap.dedent(f"""
        import os, socket
        if {host!r} is not None:
            socket.gethostname = lambda: {host!r}
        from nuner_core.store import open_store
        publishing = open_store({str(root)!r}).publish("corpus", {key!r}, {{}})  # kept: its exit would remove the directory
        out = publishing.__enter__()
        (out / "half.bin").write_bytes(b"h")
        print(out.name, flush=True)
        os._exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root / "corpus" / done.stdout.strip()


def test_publish_on_a_shared_file_system_leaves_another_hosts_temporary_directory_alone(tmp_path):
    root = tmp_path / "shared"
    theirs = _half_publish(root, "a" * 16, "gpu-7.cluster")  # its pid means nothing on this host
    ours = _half_publish(root, "b" * 16, None)  # this host's, its process gone: an orphan
    assert theirs.name.endswith("@gpu-7.cluster") and ours.name.endswith(f"@{socket.gethostname()}")
    store = open_store(root)
    with store.publish("corpus", "c" * 16, {}) as out:
        (out / "a.txt").write_text("a")
        assert out.name == f".tmp-{'c' * 16}-{os.getpid()}@{socket.gethostname()}"
    assert (theirs / "half.bin").exists() and not ours.exists()


def test_gc_on_a_shared_file_system_leaves_another_hosts_temporary_directory_alone(tmp_path, clock):
    root = tmp_path / "shared"
    theirs = _half_publish(root, "a" * 16, "gpu-7.cluster")
    store = open_store(root, clock=clock)
    plan = _plan(store, store.clock() + LATER, grace_hours=0)
    assert _names(plan.remove) == set()
    assert "gpu-7.cluster" in plan.keep[f"uncommitted corpus/{'a' * 16}"]
    inventory.remove(store, plan.remove)
    assert (theirs / "half.bin").exists()


def test_gc_puts_back_a_local_artifact_rebuilt_between_its_last_check_and_the_rename(tmp_path, clock, monkeypatch):
    store = open_store(tmp_path / "data", clock=clock)
    _publish(store, K, b"old", incomplete=True)
    plan = _plan(store, store.clock() + LATER)
    _publish(store, K, b"complete now")
    seen = {f"{i.stage}/{i.key}": i.seen for i in plan.remove}
    monkeypatch.setattr(inventory, "_marker", lambda store, stage, key: seen.get(f"{stage}/{key}", ""))  # the run lands after the check
    assert inventory.remove(store, plan.remove) == []
    ref = store.lookup("corpus", K)
    assert ref is not None and (ref.dir / "data.bin").read_bytes() == b"complete now"
    assert [p.name for p in (store.root / "corpus").iterdir()] == [K]  # put back, nothing left aside
