"""Test-wide setup: offline, Prefect state and artifacts in throwaway directories."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="nuner-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_TMP / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


@pytest.fixture(scope="session")
def assets() -> Path:
    if not ASSETS.is_dir():
        pytest.fail(f"the shared assets are expected at {ASSETS}")
    return ASSETS


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh artifact root for one test."""
    root = tmp_path / "data"
    monkeypatch.setenv("NUNER_DATA_DIR", str(root))
    return root


class FakeClock:
    """A clock for the store (``open_store(..., clock=clock)``) that moves only when a test advances it.

    It starts an hour behind the wall clock: what it stamps is in the past for any code that
    reads the wall clock (a ``nuner store gc`` run by the test), and the test may advance it by
    up to an hour and still stay there.
    """

    def __init__(self, start: float | None = None):
        self.now = time.time() - 3600.0 if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock to pass to ``open_store``: manifests' creation times, "latest" and gc ages without sleeping."""
    return FakeClock()


@pytest.fixture(scope="session")
def prefect_harness():
    """A Prefect test server for the session (started once, about 15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---------------------------------------------------------------- a local S3 API (the store on object storage)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port, one per session (a subprocess: a real HTTP S3 API)."""
    from s3_env import start_moto

    log = open(_SESSION_TMP / "moto.log", "wb")
    try:
        proc, endpoint = start_moto(log)
    except RuntimeError as exc:
        pytest.fail(f"{exc}; see {_SESSION_TMP / 'moto.log'}")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=30)
    log.close()




@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket on the local S3 server, the AWS_* variables pointing at it; returns ``s3://<bucket>/store``."""
    import uuid

    import fsspec
    from s3_env import S3_ENV

    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    bucket = f"nuner-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", use_listings_cache=False).mkdir(bucket)
    return f"s3://{bucket}/store"
