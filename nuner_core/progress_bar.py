"""A progress bar on the terminal: a ``Progress`` (see ``stage_api``) the CLI can pass to a stage.

    [##########..........]  812/1,662  49%  12.1 sentences/s, ETA 1m10s; ...

Redrawn in place at most every ``every_s`` seconds (and at the end) on a terminal; when the
stream is not a terminal (a log file, CI) it prints a plain line every ``log_every_s``.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from nuner_core.stage_api import Progress


class BarProgress:
    def __init__(self, name: str, stream: TextIO | None = None, width: int = 30, every_s: float = 0.2, log_every_s: float = 10.0):
        self.name = name
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s if self.tty else log_every_s
        self._last = float("-inf")
        self._open = False

    def update(self, done: int, total: int | None, note: str = "") -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self._last < self.every_s and not finished:
            return
        self._last = now
        if total:
            filled = min(self.width, int(self.width * done / total))
            share = f"[{'#' * filled}{'.' * (self.width - filled)}] {done:,}/{total:,} {100 * done / total:3.0f}%"
        else:
            share = f"{done:,}"
        line = f"{self.name}: {share}  {note}".rstrip()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if finished else ""))
            self._open = not finished
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an unfinished bar's line (after an error) so the next output starts cleanly."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


class TeeProgress:
    """Report to several ``Progress`` at once (e.g. Prefect's artifact and the terminal bar)."""

    def __init__(self, *targets: Progress) -> None:
        self.targets = targets

    def update(self, done: int, total: int | None, note: str = "") -> None:
        for target in self.targets:
            target.update(done, total, note)
