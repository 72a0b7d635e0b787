"""What one writable object in the bucket can make a worker write outside the store's directories.

Run by ``chaos_annotate.py`` (its ``outside_writes=N``), or alone:
``.venv/bin/python benchmarks/outside_writes.py``. Against moto's S3 API on 127.0.0.1 (a
subprocess, as the tests start it), two "machines" on one bucket: a publishes, the attacker
rewrites objects, b fetches or resumes. Each probe counts the files that appear under the
probe's directory but outside both machines' own directories (goal 0):

- a manifest whose ``files`` names ``../../…/outside.txt`` (its object uploaded under that literal key);
- a manifest whose ``files`` names an absolute path;
- a resumable-work object ``<stage>/.work/<key>/../../…/outside.txt``, pulled by a resume;
- a pickle: a ``step_*.pt`` planted under a pretrain ``.work/`` prefix whose unpickling writes a
  marker file, read by the training's resume path (``nuner_core.checkpoint``);
- a Prefect cache record planted under ``.prefect-results/`` (where ``tasks.common.result_storage``
  keeps them) naming the pickle serializer, read the way a stage task's cache lookup reads it
  (``prefect.results.ResultStore.read``): Prefect unpickles with the serializer the record names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test credentials for the local S3 server
from s3_env import S3_ENV, start_moto  # noqa: E402

from nuner_core.store import MANIFEST, RemoteStore, content_id, file_checksum, open_store  # noqa: E402

PAYLOAD = b"written by whoever can write the bucket\n"
PRETRAIN_KEY = "0123456789abcdef"


@contextlib.contextmanager
def s3_server() -> Iterator[None]:
    """moto's S3 server on a free port, the AWS_* variables pointing at it while inside (restored after)."""
    proc, endpoint = start_moto()
    saved = {name: os.environ.get(name) for name in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    try:
        os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        proc.terminate()
        proc.wait(timeout=30)


def _plant_manifest(a: RemoteStore, key: str, name: str, scratch: Path) -> None:
    """Publish s/<key>, then replace its manifest with one that also lists ``name`` (its object uploaded)."""
    with a.publish("s", key, {}) as out:
        (out / "a.txt").write_bytes(b"alpha")
    manifest = json.loads(a.objects.read_bytes(f"s/{key}/{MANIFEST}") or b"{}")
    scratch.write_bytes(PAYLOAD)
    manifest["files"][name] = len(PAYLOAD)
    manifest["checksums"][name] = file_checksum(scratch)
    scratch.unlink()
    cid = content_id(manifest)
    a.objects.write_bytes(f"s/{key}/{cid}/a.txt", b"alpha")
    a.objects.write_bytes(f"s/{key}/{cid}/{name}", PAYLOAD)  # the literal key: S3 keeps "../" and "//"
    a.objects.write_bytes(f"s/{key}/{MANIFEST}", json.dumps(manifest).encode())


class _Pickle:
    """Unpickled, it writes ``marker``: what any code run by a planted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _probes(root: Path, a: RemoteStore, b: RemoteStore) -> dict[str, Callable[[], object]]:
    import torch

    from nuner_core import checkpoint as ckpt

    def fetch_dotdot() -> object:
        up = os.path.relpath(root, b.local_dir("s", "k1", "cid"))  # where b's temporary download directory sits
        _plant_manifest(a, "k1", f"{up}/outside-dotdot.txt", root / "scratch")
        return b.lookup("s", "k1")

    def fetch_absolute() -> object:
        _plant_manifest(a, "k2", str(root / "abs" / "outside-absolute.txt"), root / "scratch")
        return b.lookup("s", "k2")

    def work_dotdot() -> object:
        up = os.path.relpath(root, b.root / "s" / ".work" / "k3")
        a.objects.write_bytes(f"s/.work/k3/{up}/outside-work.txt", PAYLOAD)
        with b.working("s", "k3"):
            return None

    def pickle_resume() -> object:
        planted = root / "scratch.pt"
        torch.save({"step": 1, "model": _Pickle(root / "pickle-marker.txt")}, planted)
        a.objects.upload([(planted, f"pretrain/.work/{PRETRAIN_KEY}/main/checkpoints/step_00000001.pt")])
        planted.unlink()
        with b.working("pretrain", PRETRAIN_KEY) as work:  # the pretrain stage's work directory, main run
            latest = ckpt.latest_checkpoint(work / "main" / "checkpoints")  # nuner_core.pretraining.train's resume
            return ckpt.load(latest) if latest is not None else None

    def prefect_record() -> object:
        import base64
        import pickle

        from prefect.filesystems import RemoteFileSystem
        from prefect.results import ResultStore

        from tasks.records import check_record

        name = f"nuner-pretrain-{PRETRAIN_KEY}-0123abcd"  # tasks.common.ArtifactCache's key: stage, key, hash of the store
        serializer = {"type": "pickle", "picklelib": "pickle"}
        record = {"metadata": {"storage_key": name, "serializer": serializer, "prefect_version": "3"},
                  "result": base64.b64encode(pickle.dumps(_Pickle(root / "prefect-marker.txt"))).decode()}
        a.objects.write_bytes(f".prefect-results/{name}", json.dumps(record).encode())
        check_record(b, name, "pretrain", PRETRAIN_KEY)  # what the stage task's cache policy does before Prefect reads it
        storage = RemoteFileSystem(basepath=f"{a.url}/.prefect-results", settings={"use_listings_cache": False})
        return ResultStore(result_storage=storage).read(name)  # a planted record was deleted: this finds nothing

    return {"manifest ../": fetch_dotdot, "manifest absolute": fetch_absolute, ".work ../": work_dotdot, "pickle": pickle_resume,
            "prefect record": prefect_record}


def outside_writes() -> tuple[int, dict[str, int]]:
    """Files written outside the machines' directories, in all and per probe."""
    per_probe: dict[str, int] = {}
    quiet = logging.getLogger("nuner_core")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the store's warnings about the planted names are expected here
    with tempfile.TemporaryDirectory(prefix="outside-writes-") as tmp, s3_server():
        root = Path(tmp).resolve()
        import fsspec

        bucket = f"probe-{os.getpid()}"
        fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
        a = open_store(f"s3://{bucket}/store", local_dir=root / "machine-a")
        b = open_store(f"s3://{bucket}/store", local_dir=root / "machine-b")
        assert isinstance(a, RemoteStore) and isinstance(b, RemoteStore)
        mine = (root / "machine-a", root / "machine-b")

        def outside() -> set[Path]:
            return {p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(m) for m in mine)}

        for name, probe in _probes(root, a, b).items():
            before = outside()
            with contextlib.suppress(Exception):  # refused (what should happen) or failed: only what it wrote counts
                probe()
            per_probe[name] = len(outside() - before)
    quiet.setLevel(level)
    return sum(per_probe.values()), per_probe


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same run: it takes seconds already")
    parser.parse_args()
    total, per_probe = outside_writes()
    print(" ".join(f"{name}={n}" for name, n in per_probe.items()))
    print(f"outside_writes={total}")


if __name__ == "__main__":
    main()
