"""tag.shards: the split (content-keyed, contiguous), the merge in input order, the shard runs' keys, and the
sharded tag stage in the nuner flow: a failed shard rerun alone, the shards done Cached (shards in turn, in process).
Two workers on one pool: tests/tagging/test_tag_shard_workers.py."""

from __future__ import annotations

import json

import pytest

from nuner_core.config import ConfigError, load_config
from nuner_core.pipeline import plan
from nuner_core.stage_api import StageError
from nuner_core.store import open_store
from nuner_core.tagging.documents import iter_files
from nuner_core.tagging.shards import bounds, merge, shard_documents, split

TEXTS = ["Alice ate pizza in Paris.", "Bob flew to New York.", "Marie baked bread in Berlin.", "A zebra in Tokyo.",
         "Pasta in London with Alice.", "Bob met Marie in Zurich."]  # fmt: skip


def _write(tmp_path, texts=TEXTS):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("\n".join(texts[:2]) + "\n\n")  # a blank line: skipped, no document
    b.write_text("".join(json.dumps({"id": f"b{i}", "text": t}) + "\n" for i, t in enumerate(texts[2:])))
    return [a, b]


def test_bounds_are_contiguous_near_equal_and_cover_everything():
    assert bounds(6, 1) == ((0, 6),)
    assert bounds(5, 3) == ((0, 1), (1, 3), (3, 5))
    assert bounds(2, 4) == ((0, 0), (0, 1), (1, 1), (1, 2))  # more shards than documents: some empty
    with pytest.raises(ValueError):
        bounds(3, 0)


def test_split_is_content_keyed_and_the_shards_give_the_input_back_in_order(tmp_path):
    files = _write(tmp_path)
    first = split(files, 3)
    assert first.total == 6 and first.bounds == ((0, 2), (2, 4), (4, 6))
    assert split(files, 3) == first and len(set(first.digests)) == 3
    (tmp_path / "copy").mkdir()
    assert split(_write(tmp_path / "copy"), 3).digests == first.digests  # the same documents elsewhere: the same shards

    _, everything = iter_files(files)
    shards = [list(shard_documents(files, 3, i)[1]) for i in range(3)]
    assert [d.id for s in shards for d in s] == [d.id for d in everything] == [1, 2, "b0", "b1", "b2", "b3"]

    changed = _write(tmp_path, TEXTS[:3] + ["A zebra in Kyoto City."] + TEXTS[4:])  # a document of shard 1 (same count)
    after = split(changed, 3)
    assert [a == b for a, b in zip(first.digests, after.digests)] == [True, False, True]


def test_merge_concatenates_the_parts_in_shard_order(tmp_path):
    parts = []
    for i, lines in enumerate([['{"id": 1}'], [], ['{"id": 2}', '{"id": 3}']]):
        parts.append(tmp_path / f"part{i}.jsonl")
        parts[-1].write_text("".join(line + "\n" for line in lines))
    merge(parts, tmp_path / "entities.jsonl")
    assert [json.loads(line)["id"] for line in (tmp_path / "entities.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not list(tmp_path.glob(".*partial"))


def _base(planted_dir, files, **more):
    return {"tag.model": str(planted_dir), "tag.labels": ["city", "person", "food"], "tag.inputs": [str(f) for f in files],
            "tag.threshold": 0.5, **more}  # fmt: skip


def test_shards_1_keeps_the_key_and_a_shard_is_keyed_by_its_own_documents(planted_dir, tmp_path):
    files, store = _write(tmp_path), open_store(tmp_path / "store")

    def key(**more):
        return plan(load_config("demo", _base(planted_dir, files, **more)), ["tag"], store)[0].key

    unsharded = key()
    assert key(**{"tag.shards": 1}) == unsharded and key(**{"tag.shards": 2}) != unsharded
    shard_keys = [key(**{"tag.shards": 2, "tag.shard": i}) for i in range(2)]
    _write(tmp_path, TEXTS[:5] + ["Bob met Marie in Rome."])  # the last document: shard 1's
    assert key(**{"tag.shards": 2, "tag.shard": 0}) == shard_keys[0]
    assert key(**{"tag.shards": 2, "tag.shard": 1}) != shard_keys[1]
    for bad in ({"tag.shard": 0}, {"tag.shards": 2, "tag.shard": 2}):
        with pytest.raises(ConfigError, match="shard"):
            load_config("demo", _base(planted_dir, files, **bad))


def _entities(summary, name="tag"):
    from pathlib import Path

    return (Path(summary[name]["path"]) / "entities.jsonl").read_text()


def test_sharded_flow_fails_one_shard_reruns_it_alone_then_is_cached(prefect_harness, data_dir, planted_dir, tmp_path, monkeypatch):
    from flows.pipeline import nuner
    from nuner_core.tagging import shards as shard_module

    files = _write(tmp_path)
    one = nuner(profile="demo", overrides=_base(planted_dir, files), stages=["tag"])
    overrides = _base(planted_dir, files, **{"tag.shards": 2})
    real = shard_module.shard_documents
    calls: list[int] = []

    def failing(files, n, index, *args):
        calls.append(index)
        if index == 1:
            raise StageError("tag: shard 1 broke (test)")
        return real(files, n, index, *args)

    monkeypatch.setattr(shard_module, "shard_documents", failing)
    state = nuner(profile="demo", overrides=overrides, stages=["tag"], return_state=True)
    assert state.is_failed() and "1 of 2 tag shards failed" in state.message and "shard 1 broke" in state.message
    assert calls == [0, 1]

    monkeypatch.setattr(shard_module, "shard_documents", lambda *a: calls.append(a[2]) or real(*a))
    second = nuner(profile="demo", overrides=overrides, stages=["tag"])
    assert calls == [0, 1, 1]  # the failed shard alone
    assert [second[f"tag shard {i} of 2"]["state"] for i in (1, 2)] == ["Cached", "Completed"]
    assert second["tag"]["state"] == "Completed" and second["tag"]["key"] != one["tag"]["key"]
    assert _entities(second) == _entities(one)  # merged in input order: as one run
    manifest = json.loads(open(f"{second['tag']['path']}/manifest.json").read())
    assert manifest["rows"] == json.loads(open(f"{one['tag']['path']}/manifest.json").read())["rows"]

    third = nuner(profile="demo", overrides=overrides, stages=["tag"])
    assert third["tag"]["state"] == "Cached" and "tag shard 1 of 2" not in third and calls == [0, 1, 1]


def test_nuner_run_deployment_without_shards_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--stages", "tag", "--deployment", "nuner/tag"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "set tag.shards > 1" in out.stderr and "Traceback" not in out.stderr
