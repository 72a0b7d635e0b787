"""What callers see of a store, whichever kind ``open_store`` returns (``LocalStore``, ``RemoteStore``)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from nuner_core.store.keys import ArtifactRef

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``: the store stamps manifests with it (which makes
"latest" well defined) and the inventory measures ages with it. Tests pass a fake one they advance."""


class ArtifactStore(Protocol):
    """The artifacts under one root; see ``nuner_core.store.local`` and ``nuner_core.store.remote``."""

    @property
    def remote(self) -> bool:
        """True for a store on object storage."""
        ...

    @property
    def root(self) -> Path:
        """The store's directory on this machine (on object storage: its local mirror)."""
        ...

    @property
    def location(self) -> str:
        """Where the artifacts are: the directory (local) or the store's URL (object storage)."""
        ...

    @property
    def cache_dir(self) -> Path:
        """Caches shared across runs and artifact keys (LLM responses, encoder features)."""
        ...

    @property
    def clock(self) -> Clock: ...

    def work_dir(self, stage: str, key: str) -> Path:
        """Persistent scratch space for resumable work (checkpoints, partial shards)."""
        ...

    def lookup(self, stage: str, key: str, *, verify: bool = False, fetch: bool = True) -> ArtifactRef | None:
        """The complete artifact with this key, or None (a damaged one is moved aside, and so rebuilt)."""
        ...

    def latest(self, stage: str, *, fetch: bool = True) -> ArtifactRef | None:
        """The most recently published complete artifact of a stage."""
        ...

    def exists(self, stage: str, key: str) -> bool:
        """A complete artifact is there (sizes checked; nothing moved aside)."""
        ...

    def is_final(self, stage: str, key: str) -> bool:
        """A complete artifact that its stage would not build again: not incomplete."""
        ...

    def fetch(self, ref: ArtifactRef) -> ArtifactRef:
        """``ref`` with its files in a local directory."""
        ...

    def here(self, ref: ArtifactRef) -> ArtifactRef:
        """``ref`` as this machine names it, without any I/O (a reference may come from another machine)."""
        ...

    def verify(self, ref: ArtifactRef) -> ArtifactRef:
        """Check every file of ``ref`` against its checksum; raise CorruptArtifact naming the stage to rerun."""
        ...

    def reading(self, inputs: Mapping[str, ArtifactRef]) -> AbstractContextManager[None]:
        """Around a stage that reads ``inputs``: verify them first, and explain a read error they cause."""
        ...

    def publish(self, stage: str, key: str, manifest: dict[str, Any]) -> AbstractContextManager[Path]:
        """A temporary directory to fill; committed with ``manifest`` on a clean exit."""
        ...

    def working(self, stage: str, key: str) -> AbstractContextManager[Path]:
        """The stage's resumable work directory, for the duration of its run."""
        ...

    def finish_work(self, stage: str, key: str, *, final: bool) -> None:
        """After publishing: drop the resumable work (``final``) or keep it for the rerun."""
        ...
