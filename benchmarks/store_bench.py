"""Publish and fetch an artifact through the store on a local S3 API (moto's server), against a local copy.

Starts ``moto.server`` on a free 127.0.0.1 port (unless ``--endpoint`` names one), publishes
an artifact of ``--mb`` megabytes (``--files`` files of random bytes) from "machine a", then
fetches it on "machine b" (an empty local directory), and reports MB/s for each against a
plain local copy of the same files (``shutil.copytree``), checksums included. The last line
is ``store publish_mb_s=<n> fetch_mb_s=<n> copy_mb_s=<n>``.

    .venv/bin/python benchmarks/store_bench.py --mb 100 --files 4
    .venv/bin/python benchmarks/store_bench.py --smoke    # seconds: 1 MB in 2 files
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the local S3 server is test support
from s3_env import start_moto  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="artifact size in MB (default 100)")
    parser.add_argument("--files", type=int, default=4, help="number of files (default 4)")
    parser.add_argument("--endpoint", help="an S3 endpoint already running (default: start moto)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 MB in 2 files")
    args = parser.parse_args()
    if args.smoke:
        args.mb, args.files = 1.0, 2

    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        proc, endpoint = start_moto()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import fsspec

    from nuner_core.store import open_store

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
    url = f"s3://{bucket}/store"
    size = int(args.mb * 1e6 / args.files)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            src = tmp / "src"
            src.mkdir()
            for i in range(args.files):
                (src / f"part-{i}.bin").write_bytes(os.urandom(size))
            total = size * args.files / 1e6

            started = time.perf_counter()
            shutil.copytree(src, tmp / "copy")
            copy_s = time.perf_counter() - started

            a = open_store(url, local_dir=tmp / "a")
            started = time.perf_counter()
            with a.publish("bench", "k1", {}) as out:
                for f in src.iterdir():
                    os.link(f, out / f.name)  # the stage's files are there already: time the publishing only
            publish_s = time.perf_counter() - started

            b = open_store(url, local_dir=tmp / "b")
            started = time.perf_counter()
            ref = b.lookup("bench", "k1")
            fetch_s = time.perf_counter() - started
            assert ref is not None and b.stats["downloaded_bytes"] == size * args.files
            started = time.perf_counter()
            b.lookup("bench", "k1")
            again_s = time.perf_counter() - started
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    print(f"artifact {total:.0f} MB in {args.files} files, S3 API at {endpoint}")
    print(f"publish (checksums, upload, manifest last): {publish_s:.2f} s  {total / publish_s:.0f} MB/s")
    print(f"fetch on an empty machine (download, checksums on arrival): {fetch_s:.2f} s  {total / fetch_s:.0f} MB/s")
    print(f"second lookup on that machine (local copy, no download): {again_s * 1000:.0f} ms")
    print(f"plain local copy (copytree): {copy_s:.2f} s  {total / copy_s:.0f} MB/s")
    print(f"store publish_mb_s={total / publish_s:.0f} fetch_mb_s={total / fetch_s:.0f} copy_mb_s={total / copy_s:.0f}")


if __name__ == "__main__":
    main()
