"""Leases: who is asking for a prompt right now, and until when (the record ``cache.py`` stores).

Runs share the response cache, so a run takes a prompt's lease before it asks for it: a
record naming the run (id, pid, host) and the wall-clock time at which the lease lapses
unless renewed. Lease times are read from an injectable clock (:class:`WallClock` by
default; the same time on every process and host that share the cache), so a test lets a
lease lapse by advancing a fake clock rather than by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class WallClock:
    """Wall-clock time (leases are compared across processes and hosts), and real sleeps."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: one run of one process."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "Holder":
        return Holder(**json.loads(text))

    def alive(self) -> bool:
        """False when this process is certainly gone (same host, no such pid, or a zombie); else True."""
        if self.host != socket.gethostname():
            return True  # cannot tell: the lease's expiry decides
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        try:  # a killed child its parent has not reaped yet still answers kill(pid, 0)
            state = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()[0]
            return state not in ("Z", "X")
        except (OSError, IndexError):
            return True

    def describe(self) -> str:
        return f"run {self.run} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class Lease:
    """A stored lease: its holder's fields and ``expires`` (wall-clock seconds), as JSON readable with any SQLite client."""

    holder: Holder
    expires: float

    def to_json(self) -> str:
        return json.dumps({**asdict(self.holder), "expires": self.expires})

    @staticmethod
    def from_json(text: str) -> "Lease":
        fields: dict[str, Any] = json.loads(text)
        # A lease written before expiry was stored has none: the cache entry's own expiry (diskcache's) ends it.
        expires = float(fields.pop("expires", float("inf")))
        return Lease(Holder(**fields), expires)
