"""A publication built in a temporary directory and committed whole, by either kind of store.

Work in progress lives in ``<dir>/<stage>/.tmp-<key>-<pid>/`` and is committed (renamed into
place, or uploaded) only once complete, so a crash never leaves a half artifact that looks
finished; what killed runs left behind is removed by the next publication of that stage.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from nuner_core.store.manifest import seal

log = logging.getLogger(__name__)


@contextmanager
def staged(final: Path, key: str, manifest: dict[str, Any], now: Callable[[], float], commit: Callable[[Path], None]) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on clean exit seal ``manifest`` there (files,
    checksums, creation time ``now()``) and ``commit`` it. On an exception the directory is removed."""
    tmp = final.with_name(f".tmp-{key}-{os.getpid()}")
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
    """Remove ``.tmp-<key>-<pid>`` directories left by killed runs: those whose process is gone."""
    if not stage_dir.is_dir():
        return
    for path in stage_dir.glob(".tmp-*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and path.is_dir() and not alive(int(pid)):
            log.info("removing %s, left by a run that was killed (process %s is gone)", path, pid)
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
