"""A publication built in a temporary directory and committed whole, by either kind of store.

Work in progress lives in ``<dir>/<stage>/.tmp-<key>-<pid>@<host>/`` and is committed (renamed
into place, or uploaded) only once complete, so a crash never leaves a half artifact that looks
finished; what killed runs of this host left behind is removed by the next publication of that
stage here. The host is in the name because a local store may be a file system shared by
several machines (the GPU-pool recipe): a process id means something on its own host only, so
another host's temporary directory is never removed here. Names without a host (written before
it was added) are taken for this host's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from nuner_core.store.manifest import seal

log = logging.getLogger(__name__)

TEMP = re.compile(r"^\.tmp-(?P<key>.+)-(?P<pid>[0-9]+)(?:@(?P<host>[^@]+))?$")


def this_host() -> str:
    """This machine's name as leases spell it (``socket.gethostname()``), made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "_"


def temp_name(key: str) -> str:
    """The name of this process's temporary directory for ``key``: ``.tmp-<key>-<pid>@<host>``."""
    return f".tmp-{key}-{os.getpid()}@{this_host()}"


@dataclass(frozen=True)
class TempOwner:
    """Who writes a temporary directory, read from its name."""

    key: str
    pid: int
    host: str  # "" in a name written before hosts were recorded: this host's

    def here(self) -> bool:
        return self.host in ("", this_host())

    def running(self) -> str:
        """Why the directory may be in use ("": its process is certainly gone, so it is an orphan)."""
        if not self.here():
            return f"a temporary directory of host {self.host}: only that host can tell whether process {self.pid} runs"
        return f"process {self.pid} of this host is running (its temporary directory)" if alive(self.pid) else ""


def temp_owner(name: str) -> TempOwner | None:
    """The owner named by a temporary directory's name, or None when it is no such name."""
    match = TEMP.match(name)
    return None if match is None else TempOwner(match["key"], int(match["pid"]), match["host"] or "")


@contextmanager
def staged(final: Path, key: str, manifest: dict[str, Any], now: Callable[[], float], commit: Callable[[Path], None]) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on clean exit seal ``manifest`` there (files,
    checksums, creation time ``now()``) and ``commit`` it. On an exception the directory is removed."""
    tmp = final.with_name(temp_name(key))
    shutil.rmtree(tmp, ignore_errors=True)
    remove_orphans(final.parent)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        seal(tmp, manifest, now())
        commit(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_orphans(stage_dir: Path) -> None:
    """Remove the temporary directories left by killed runs of this host: those whose process is gone."""
    if not stage_dir.is_dir():
        return
    for path in stage_dir.glob(".tmp-*"):
        owner = temp_owner(path.name)
        if owner is not None and path.is_dir() and owner.here() and not alive(owner.pid):
            log.info("removing %s, left by a run that was killed (process %s is gone)", path, owner.pid)
            shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether a process of this machine still runs (a temporary directory's owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
