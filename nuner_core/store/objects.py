"""One location on an object store (an fsspec URL such as ``s3://bucket/prefix``), as the artifact store uses it.

Everything here takes and returns paths *relative to the location* (``corpus/<key>/manifest.json``)
and local ``Path`` objects; the fsspec file system and the bucket prefix stay inside. Each
backend reads its credentials from its own environment or profile (S3: ``AWS_*`` variables,
``~/.aws``, an instance role; GCS: ``GOOGLE_APPLICATION_CREDENTIALS``; Azure: ``AZURE_STORAGE_*``),
so a URL never carries one: a URL with a user name, password or query string is refused
before anything is sent, and messages show URLs without them.

Endpoints other than the provider's (MinIO, Ceph, a local moto server) come from the
environment as well: ``AWS_ENDPOINT_URL`` (read by botocore), or fsspec's own
``FSSPEC_S3_ENDPOINT_URL``-style variables.

Directory listings are never cached (``use_listings_cache=False``): another machine writes
to the same prefix, and a stale listing would hide its artifacts.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import urlsplit, urlunsplit

from nuner_core.store.errors import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Packages that provide a protocol, for the message when one is missing.
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
_EXTRAS = {"gcsfs": "gcs", "adlfs": "azure"}
TRANSFER_BATCH = 16  # files moved at once by put/get (s3fs: each may use several connections itself)


def is_url(location: str) -> bool:
    """True for an object-store URL (``s3://...``); False for a local path or a ``file://`` URL."""
    match = _SCHEME.match(location)
    return match is not None and match.group(1).lower() not in ("file", "local")


def local_path_of(location: str) -> str:
    """A ``file://`` URL's path (``file:///data/x`` -> ``/data/x``); anything else unchanged."""
    match = _SCHEME.match(location)
    if match and match.group(1).lower() in ("file", "local"):
        return location[match.end():] or "/"
    return location


def redact(url: str) -> str:
    """The URL without user name, password and query string (where credentials would hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_no_credentials(url: str) -> None:
    """Refuse a URL that carries credentials: they belong in the backend's environment or profile."""
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query:
        raise StoreError(
            f"the store URL {redact(url)} carries a user name, password or query string: credentials are read from "
            f"the backend's environment or profile (S3: AWS_ACCESS_KEY_ID / AWS_PROFILE / an instance role; GCS: "
            f"GOOGLE_APPLICATION_CREDENTIALS; Azure: AZURE_STORAGE_*), never from the URL, so that they cannot end "
            f"up in a config file, a manifest, a log or the Prefect database"
        )


class ObjectStore:
    """Files under one URL prefix: read, write, list, upload, download, delete."""

    def __init__(self, url: str):
        url = url.rstrip("/")
        check_no_credentials(url)
        self.url = url
        scheme = _SCHEME.match(url)
        self.protocol = scheme.group(1).lower() if scheme else ""
        try:
            import fsspec

            self.fs, self.base = fsspec.core.url_to_fs(url, use_listings_cache=False)
        except ImportError as exc:  # fsspec knows the protocol but its package is not installed
            package = _BACKENDS.get(self.protocol, exc.name or "the fsspec backend")
            extra = _EXTRAS.get(package)
            hint = f"pip install 'nuner-pipeline[{extra}]' ({package})" if extra else f"pip install {package}"
            raise StoreError(f"the store {url}: the {self.protocol}:// backend is not installed: {hint}") from None
        except ValueError as exc:  # an unknown protocol
            raise StoreError(f"the store {url}: {exc}") from None
        self.base = self.base.rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # ------------------------------------------------------------------ names
    def path(self, rel: str) -> str:
        """The backend path (no protocol) of ``rel``."""
        return f"{self.base}/{rel.strip('/')}" if rel.strip("/") else self.base

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel.strip('/')}" if rel.strip("/") else self.url

    def rel(self, path: str) -> str:
        """``rel`` of a backend path returned by a listing."""
        path = path.strip("/")
        base = self.base.strip("/")
        if path == base:
            return ""
        if not path.startswith(base + "/"):
            raise StoreError(f"{self.url}: the backend listed {path!r}, outside the store")
        return path[len(base) + 1:]

    # ------------------------------------------------------------- operations
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one backend call; its failure becomes a StoreError naming the URL (never a credential).

        Each backend has its own exception tree (botocore, google.api_core, azure.core): they
        are caught here, at the one place the store talks to the backend, and reported with
        the operation and the URL. A missing file is not an error here: callers ask for it.
        """
        try:
            return fn()
        except FileNotFoundError:
            raise
        except Exception as exc:  # see the docstring: one message for every backend's errors
            message = str(exc).strip() or type(exc).__name__
            raise StoreError(
                f"the store {self.url}: {what} failed ({type(exc).__name__}: {message[:300]}). Check that the bucket "
                f"exists and that this machine's credentials for {self.protocol}:// (its environment or profile) can "
                f"read and write it."
            ) from exc

    def check(self) -> None:
        """Fail now, with a clear message, when the location cannot be listed (no bucket, no access)."""
        bucket = self.base.split("/", 1)[0]
        try:
            self._call(f"listing {bucket}", lambda: self.fs.ls(bucket, detail=False))
        except FileNotFoundError:
            raise StoreError(f"the store {self.url}: the bucket {bucket!r} does not exist (create it first)") from None

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            data: bytes = self._call(f"reading {rel}", lambda: self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            return None
        return data

    def read_many(self, rels: Iterable[str]) -> dict[str, bytes | None]:
        """Several objects at once (concurrently where the backend can); None for a missing one."""
        rels = list(rels)
        if not rels:
            return {}
        paths = {self.path(r): r for r in rels}
        found = self._call(f"reading {len(rels)} objects", lambda: self.fs.cat(list(paths), on_error="return"))
        out: dict[str, bytes | None] = {}
        for path, rel in paths.items():
            value = found.get(path) if isinstance(found, dict) else found
            if isinstance(value, FileNotFoundError):
                out[rel] = None
            elif isinstance(value, BaseException):
                raise StoreError(f"the store {self.url}: reading {rel} failed ({type(value).__name__}: {value})")
            else:
                out[rel] = value
        return out

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object whole (an object store's PUT is atomic: readers see all of it or nothing)."""
        self._call(f"writing {rel}", lambda: self.fs.pipe_file(self.path(rel), data))

    def list_files(self, rel: str) -> dict[str, dict[str, Any]]:
        """Every object under the prefix ``rel`` (recursively): name relative to ``rel`` -> {size, mtime}."""
        try:
            found = self._call(f"listing {rel or '/'}", lambda: self.fs.find(self.path(rel), detail=True, withdirs=False))
        except FileNotFoundError:
            return {}
        prefix = rel.strip("/")
        out: dict[str, dict[str, Any]] = {}
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            name = self.rel(path)
            if prefix:
                if not name.startswith(prefix + "/"):
                    continue  # a sibling prefix (corpus-x/ when listing corpus/)
                name = name[len(prefix) + 1:]
            out[name] = {"size": int(info.get("size") or 0), "mtime": _mtime(info)}
        return out

    def list_dirs(self, rel: str) -> list[str]:
        """The names of the "directories" (common prefixes) right under ``rel``."""
        try:
            found = self._call(f"listing {rel or '/'}", lambda: self.fs.ls(self.path(rel), detail=True))
        except FileNotFoundError:
            return []
        return sorted(self.rel(i["name"]).rsplit("/", 1)[-1] for i in found if i.get("type") == "directory")

    def upload(self, pairs: Iterable[tuple[Path, str]]) -> None:
        """Upload local files to ``rel`` names, several at once."""
        pairs = list(pairs)
        if not pairs:
            return
        local = [str(p) for p, _ in pairs]
        remote = [self.path(r) for _, r in pairs]
        self._call(f"uploading {len(pairs)} file(s)", lambda: self.fs.put(local, remote, batch_size=TRANSFER_BATCH))

    def download(self, pairs: Iterable[tuple[str, Path]]) -> None:
        """Download ``rel`` objects to local files (parent directories are created), several at once."""
        pairs = list(pairs)
        if not pairs:
            return
        for _, dest in pairs:
            dest.parent.mkdir(parents=True, exist_ok=True)
        remote = [self.path(r) for r, _ in pairs]
        local = [str(p) for _, p in pairs]
        self._call(f"downloading {len(pairs)} file(s)", lambda: self.fs.get(remote, local, batch_size=TRANSFER_BATCH))

    def delete(self, rels: Iterable[str]) -> None:
        paths = [self.path(r) for r in rels]
        if paths:
            try:
                self._call(f"deleting {len(paths)} object(s)", lambda: self.fs.rm(paths))
            except FileNotFoundError:
                pass  # gone already: what deleting wants

    def delete_prefix(self, rel: str) -> int:
        """Delete every object under ``rel``; returns how many there were."""
        files = self.list_files(rel)
        self.delete(f"{rel.strip('/')}/{name}" for name in files)
        return len(files)


def _mtime(info: Mapping[str, Any]) -> float:
    """An object's modification time in seconds since the epoch (0.0 when the backend gives none)."""
    for name in ("LastModified", "mtime", "last_modified", "updated"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0
