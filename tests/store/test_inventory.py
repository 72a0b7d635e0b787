"""``nuner store ls|du|gc`` on a local directory and on S3 (moto): what is listed, kept and removed."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from nuner_core.registry import STAGE_NAMES
from nuner_core.store import MANIFEST, ArtifactStore, RemoteStore, inventory, open_store

K0, K1, A0, A1, D1 = ("c0" * 8, "c1" * 8, "a0" * 8, "a1" * 8, "d1" * 8)
LATER = 20 * 86400  # plan_gc's clock, 20 days on: nothing is "recent" any more


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, clock) -> ArtifactStore:
    if request.param == "local":
        return open_store(tmp_path / "data", clock=clock)
    return open_store(request.getfixturevalue("s3_bucket"), local_dir=tmp_path / "local", clock=clock)


def _publish(store: ArtifactStore, stage: str, key: str, upstream: dict[str, str], size: int = 1000) -> None:
    with store.publish(stage, key, {"stage": stage, "key": key, "title": f"{stage} {key[:2]}", "upstream": upstream}) as out:
        (out / "data.bin").write_bytes(b"x" * size)
    store.clock.advance(1.0)  # distinct creation times: "latest" is well defined


def _leftovers(store: ArtifactStore) -> None:
    """A publication killed half-way, a Prefect record for K0, resumable work of a build never finished."""
    if isinstance(store, RemoteStore):
        store.objects.write_bytes(f"corpus/{'e' * 16}/{'f' * 16}/part.bin", b"p" * 500)
        store.objects.write_bytes(f".prefect-results/nuner-corpus-{K0}-0123abcd", b"record")
        store.objects.write_bytes(f"dataset/.work/{'b' * 16}/step.pt", b"w" * 300)
    else:
        (store.root / "corpus" / f".tmp-{'e' * 16}-999999999").mkdir(parents=True)
        (store.root / "corpus" / f".tmp-{'e' * 16}-999999999" / "part.bin").write_bytes(b"p" * 500)
        (store.root / ".prefect-results").mkdir()
        (store.root / ".prefect-results" / f"nuner-corpus-{K0}-0123abcd").write_bytes(b"record")
        (store.root / "dataset" / ".work" / ("b" * 16)).mkdir(parents=True)
        (store.root / "dataset" / ".work" / ("b" * 16) / "step.pt").write_bytes(b"w" * 300)


@pytest.fixture
def filled(store):
    _publish(store, "corpus", K0, {})
    _publish(store, "annotate", A0, {"corpus": K0})
    _publish(store, "corpus", K1, {})
    _publish(store, "annotate", A1, {"corpus": K1})
    _publish(store, "dataset", D1, {"annotate": A1})
    _leftovers(store)
    return store


def test_scan_lists_artifacts_with_sizes_and_users_and_the_leftovers(filled):
    items = inventory.scan(filled, STAGE_NAMES)
    artifacts = {i.name: i for i in items if i.kind == "artifact"}
    assert set(artifacts) == {f"corpus/{K0}", f"annotate/{A0}", f"corpus/{K1}", f"annotate/{A1}", f"dataset/{D1}"}
    assert artifacts[f"corpus/{K1}"].used_by == [f"annotate/{A1}"] and artifacts[f"dataset/{D1}"].used_by == []
    assert all(i.state == "final" and i.size > 1000 for i in artifacts.values())  # the file and the manifest
    now = filled.clock()
    assert sorted(i.created for i in artifacts.values()) == pytest.approx([now - 5, now - 4, now - 3, now - 2, now - 1])  # the store's clock
    kinds = {(i.kind, i.stage) for i in items if i.kind != "artifact"}
    assert kinds == {("uncommitted", "corpus"), ("records", "corpus"), ("work", "dataset")}


def test_gc_keeps_the_latest_the_named_and_their_inputs(filled):
    items = inventory.scan(filled, STAGE_NAMES)
    plan = inventory.plan_gc(items, keep_days=14, now=filled.clock() + LATER)
    assert sorted(f"{i.kind} {i.name}" for i in plan.remove) == sorted([
        f"artifact corpus/{K0}", f"artifact annotate/{A0}", f"records corpus/{K0}",
        f"uncommitted corpus/{'e' * 16}", f"work dataset/{'b' * 16}",
    ])  # fmt: skip
    assert plan.keep[f"artifact corpus/{K1}"] == "the latest final artifact of its stage"
    named = inventory.plan_gc(items, wanted={("annotate", A0)}, keep_days=14, now=filled.clock() + LATER)
    assert named.keep[f"artifact corpus/{K0}"] == f"an input of annotate/{A0}" and f"records corpus/{K0}" in named.keep
    recent = inventory.plan_gc(items, keep_days=14, now=filled.clock())
    assert [i.kind for i in recent.remove] == []  # everything is recent, the leftovers within their grace time

    removed = inventory.remove(filled, plan.remove)
    assert sum(i.size for i in removed) == plan.size
    after = inventory.scan(filled, STAGE_NAMES)
    assert {i.name for i in after} == {f"corpus/{K1}", f"annotate/{A1}", f"dataset/{D1}"}
    assert filled.lookup("corpus", K0) is None and filled.lookup("annotate", A1) is not None


def test_the_store_command(filled, capsys):
    location = filled.location
    assert main(["store", "--store", location, "ls"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"store {location}\n") and f"annotate  {A1}" in out and "used by" in out
    assert main(["store", "--store", location, "ls", "--json", "--stage", "corpus"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["key"]: len(r["used_by"]) for r in rows} == {K0: 1, K1: 1}
    assert main(["store", "--store", location, "du"]) == 0
    assert "total" in capsys.readouterr().out
    assert main(["store", "--store", location, "gc", "--keep-days", "0", "--grace-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert f"would remove  artifact corpus/{K0}" in out and "a dry run" in out
    assert filled.lookup("corpus", K0) is not None  # a dry run removes nothing
    assert main(["store", "--store", location, "gc", "--keep-days", "0", "--grace-hours", "0", "--delete"]) == 0
    assert "removed 5 item(s)" in capsys.readouterr().out and filled.lookup("corpus", K0) is None
    if filled.remote:
        assert not filled.objects.list_files(f"corpus/{K0}") and filled.objects.read_bytes(f"corpus/{K1}/{MANIFEST}")
