"""Names that come from the bucket (a manifest's files, resumable-work objects) never leave the local directory.

Whoever can write one object to the bucket chooses these names: a ``../`` segment or an
absolute name would make a fetch or a resume write anywhere on the worker, and the size and
checksum checks would then pass on the file written outside. Such a manifest is corrupt
(moved aside on the store, rebuilt); such a work object is skipped. Against moto's S3 API.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from nuner_core.store import MANIFEST, CorruptArtifact, content_id, file_checksum, open_store
from nuner_core.store.names import local_path

PAYLOAD = b"written by whoever can write the bucket\n"


@pytest.fixture
def machines(s3_bucket, tmp_path, clock):
    return (
        open_store(s3_bucket, local_dir=tmp_path / "machine-a", clock=clock),
        open_store(s3_bucket, local_dir=tmp_path / "machine-b", clock=clock),
    )


def _outside(tmp_path: Path, *within: Path) -> list[Path]:
    """Files under ``tmp_path`` but in none of ``within`` (the machines' own directories)."""
    return [p for p in tmp_path.rglob("*") if p.is_file() and not any(p.is_relative_to(w) for w in within)]


def _plant_manifest(store, name: str, tmp_path: Path) -> None:
    """Replace the s/k1 manifest on the bucket with one that also lists ``name``, its object uploaded too."""
    manifest = json.loads(store.objects.read_bytes(f"s/k1/{MANIFEST}"))
    scratch = tmp_path / "scratch-payload"
    scratch.write_bytes(PAYLOAD)
    manifest["files"][name] = len(PAYLOAD)
    manifest["checksums"][name] = file_checksum(scratch)
    scratch.unlink()
    cid = content_id(manifest)
    for rel in ("a.txt",):
        store.objects.write_bytes(f"s/k1/{cid}/{rel}", b"alpha")
    store.objects.write_bytes(f"s/k1/{cid}/{name}", PAYLOAD)  # the literal key: S3 keeps "../" and "//"
    store.objects.write_bytes(f"s/k1/{MANIFEST}", json.dumps(manifest).encode())


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_a_manifest_naming_a_file_outside_the_artifact_is_corrupt(machines, tmp_path, kind, caplog):
    a, b = machines
    with a.publish("s", "k1", {}) as out:
        (out / "a.txt").write_bytes(b"alpha")
    # machine b's temporary download directory is <root>/s/k1/.tmp-<cid>-<pid>: six levels below tmp_path
    name = "../" * 6 + "outside.txt" if kind == "dotdot" else str(tmp_path / "abs" / "outside.txt")
    _plant_manifest(a, name, tmp_path)

    with caplog.at_level("WARNING"):
        assert b.lookup("s", "k1") is None  # not accepted
    assert _outside(tmp_path, tmp_path / "machine-a", tmp_path / "machine-b") == []
    assert "corrupt artifact" in caplog.text and "outside" in caplog.text
    assert a.objects.read_bytes(f"s/k1/{MANIFEST}") is None  # moved aside: the next run rebuilds it
    assert any(n.startswith(".corrupt-k1-") for n in a.objects.list_files("s"))
    assert not b.exists("s", "k1") and not b.is_final("s", "k1") and b.latest("s") is None


def test_a_resumable_work_object_named_outside_the_work_directory_is_never_pulled(machines, tmp_path, caplog):
    a, b = machines
    base = a.url.removeprefix("s3://")
    s3 = fsspec.filesystem("s3", use_listings_cache=False)
    # machine b's work directory is <root>/s/.work/k1: seven levels below tmp_path
    s3.pipe_file(f"{base}/s/.work/k1/{'../' * 7}outside-work.txt", PAYLOAD)
    s3.pipe_file(f"{base}/s/.work/k1/{tmp_path / 'abs-work.txt'}", PAYLOAD)  # an absolute name (a "//" in the key)
    s3.pipe_file(f"{base}/s/.work/k1/checkpoints/step_00000001.pt", b"1" * 100)
    with caplog.at_level("WARNING"):
        with b.working("s", "k1") as work:
            assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step_00000001.pt"]  # the rest still resumes
    assert _outside(tmp_path, tmp_path / "machine-a", tmp_path / "machine-b") == []
    assert "outside-work.txt" in caplog.text and "skipped" in caplog.text
    b.finish_work("s", "k1", final=False)  # a push: the planted names are neither deleted nor re-uploaded elsewhere
    assert s3.exists(f"{base}/s/.work/k1/checkpoints/step_00000001.pt")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a\x00b", "", ".", "a//b", "C:/x"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(CorruptArtifact, match="not a file name inside"):
        local_path(tmp_path, name)


def test_plain_names_map_inside(tmp_path):
    assert local_path(tmp_path, "sub/b.bin") == tmp_path / "sub" / "b.bin"
    assert local_path(tmp_path, "a..b/..c") == tmp_path / "a..b" / "..c"  # dots inside a name are no segment
