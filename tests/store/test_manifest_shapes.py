"""A manifest that is valid JSON but not of the manifest's shape is a corrupt artifact, never a crash nor complete."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from nuner_core.store import MANIFEST, CorruptArtifact, inventory, open_store
from nuner_core.store.manifest import parse_manifest

SHAPES = {
    "null": None,
    "list": [{"files": {"a.txt": 5}}],
    "files-a-list": {"files": ["a.txt"], "created_at": 1.0},
    "size-a-string": {"files": {"a.txt": "5"}, "created_at": 1.0},
    "created_at-a-word": {"files": {"a.txt": 5}, "created_at": "yesterday"},
    "created_at-nan": {"files": {"a.txt": 5}, "created_at": float("nan")},
    "no-files": {"created_at": 1.0},
    "checksums-a-string": {"files": {"a.txt": 5}, "created_at": 1.0, "checksums": "sha256:00"},
    "checksum-of-no-file": {"files": {"a.txt": 5}, "created_at": 1.0, "checksums": {"b.txt": "sha256:00"}},
    "incomplete-a-list": {"files": {"a.txt": 5}, "created_at": 1.0, "incomplete": ["x"]},
    "upstream-a-list": {"files": {"a.txt": 5}, "created_at": 1.0, "upstream": ["corpus"]},
}


# A registered stage and 16-hex keys: the layout `nuner store ls` and gc recognise as the store's own.
S, K0, K1 = "corpus", "0" * 16, "1" * 16


def _publish(store, key: str = K1) -> None:
    with store.publish(S, key, {"stage": S}) as out:
        (out / "a.txt").write_text("hello")


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_a_manifest_of_the_wrong_shape_is_a_corrupt_artifact(tmp_path, clock, shape, caplog, capsys):
    store = open_store(tmp_path / "data", clock=clock)
    _publish(store, K0)
    clock.advance(1.0)
    _publish(store)
    (tmp_path / "data" / S / K1 / MANIFEST).write_text(json.dumps(SHAPES[shape]))

    assert not store.exists(S, K1) and not store.is_final(S, K1)
    assert store.latest(S).key == K0  # skipped, with a warning
    assert inventory.scan(store, [S])  # gc's scan: no crash
    assert main(["store", "--store", str(tmp_path / "data"), "ls"]) == 0 and K0 in capsys.readouterr().out
    with caplog.at_level("WARNING"):
        assert store.lookup(S, K1) is None
    assert "corrupt artifact" in caplog.text and MANIFEST in caplog.text
    assert not (tmp_path / "data" / S / K1).exists()  # moved aside: rebuilt by the next run


def test_a_manifest_of_the_wrong_shape_on_the_bucket_is_moved_aside(s3_bucket, tmp_path, clock, caplog):
    a = open_store(s3_bucket, local_dir=tmp_path / "a", clock=clock)
    b = open_store(s3_bucket, local_dir=tmp_path / "b", clock=clock)
    _publish(a, K0)
    clock.advance(1.0)
    _publish(a)
    a.objects.write_bytes(f"{S}/{K1}/{MANIFEST}", b'{"created_at": "soon", "files": null}')
    assert b.latest(S).key == K0 and not b.exists(S, K1)
    assert inventory.scan(b, [S])
    with caplog.at_level("WARNING"):
        assert b.lookup(S, K1) is None
    assert "corrupt artifact" in caplog.text and a.objects.read_bytes(f"{S}/{K1}/{MANIFEST}") is None


def test_the_message_names_the_manifest_and_the_field():
    with pytest.raises(CorruptArtifact, match=r"^/x/s/k1/manifest.json: 'created_at' must be a finite number, not \"soon\""):
        parse_manifest(b'{"files": {}, "created_at": "soon"}', "/x/s/k1/manifest.json")
    with pytest.raises(CorruptArtifact, match=r"manifest.json: not a JSON object but null"):
        parse_manifest(b"null", "/x/s/k1/manifest.json")
