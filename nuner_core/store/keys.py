"""How an artifact is named: its content key, and the small reference that stages pass around."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuner_core.hashing import short_hash
from nuner_core.store.manifest import INCOMPLETE, MANIFEST, parse_manifest, remote_manifest


def artifact_key(stage: str, code_version: str, config: Any, upstream: dict[str, str]) -> str:
    """Hash of everything that determines an artifact: stage, code version, config, input keys."""
    payload = json.dumps(
        {"stage": stage, "code_version": code_version, "config": config, "upstream": upstream},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return short_hash(payload)


@dataclass(frozen=True)
class ArtifactRef:
    """A small, serialisable reference to a published artifact.

    ``path`` is always a local directory. With the store on object storage, ``url`` is the
    artifact's place there and ``path`` the local copy (``fetch`` makes it; a reference found
    in the store but not fetched yet reads its manifest from ``url``).

    Prefect's cache records pickle it by its module and name (``nuner_core.store.keys``): a
    record written when it lived elsewhere fails to load, which Prefect counts as a cache
    miss, and the stage task then finds the artifact in the store again.
    """

    stage: str
    key: str
    path: str
    url: str | None = None  # on object storage: <store>/<stage>/<key> (no credentials: they never enter a URL)

    @property
    def dir(self) -> Path:
        return Path(self.path)

    @property
    def location(self) -> str:
        """Where the artifact is kept, for messages and summaries: its URL, else its directory."""
        return self.url or self.path

    def manifest(self) -> dict[str, Any]:
        local = self.dir / MANIFEST
        if self.url is None or local.is_file():
            return parse_manifest(local.read_bytes(), str(local))
        return remote_manifest(self.url, self.path)

    @property
    def incomplete(self) -> dict[str, Any] | None:
        """What a rerun of the stage would still fill in (None: the artifact is final)."""
        return self.manifest().get(INCOMPLETE) or None
