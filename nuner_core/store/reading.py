"""Around a stage that reads input artifacts: a read error they cause becomes one clear message."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

from nuner_core.store.errors import CorruptArtifact
from nuner_core.store.keys import ArtifactRef


@contextmanager
def reading(inputs: Mapping[str, ArtifactRef], verify: Callable[[ArtifactRef], ArtifactRef]) -> Iterator[None]:
    """Verify ``inputs`` first (with the store's ``verify``), and explain a read error they cause.

    An exception raised inside is checked against the inputs once more: if a file was damaged
    meanwhile, or the exception names a file of an input artifact and is a read error (OSError,
    ValueError: pyarrow's errors are both), it becomes one CorruptArtifact naming the file and
    the stage to rerun, instead of a reader's traceback. Any other exception passes unchanged.
    """
    for ref in inputs.values():
        verify(ref)
    try:
        yield
    except Exception as exc:
        for ref in inputs.values():
            try:
                verify(ref)
            except CorruptArtifact as damaged:
                raise damaged from exc
        named = _input_file_in(exc, inputs) if isinstance(exc, (OSError, ValueError)) else None
        if named is None:
            raise
        ref, rel = named
        raise CorruptArtifact(
            f"reading {ref.dir / rel} of the {ref.stage} artifact {ref.key} failed ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Its checksum cannot vouch for it (published before checksums, or unchanged "
            f"bytes that do not parse): rerun the {ref.stage!r} stage to rebuild it."
        ) from exc


def _input_file_in(exc: BaseException, inputs: Mapping[str, ArtifactRef]) -> tuple[ArtifactRef, str] | None:
    """The input artifact file an exception (or its causes) names, if any."""
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts.append(str(current))
        texts += [str(a) for a in getattr(current, "args", ()) if isinstance(a, (str, os.PathLike))]
        if filename := getattr(current, "filename", None):
            texts.append(str(filename))
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += list(getattr(current, "exceptions", ()))
    blob = "\n".join(texts)
    for ref in inputs.values():
        try:
            files = ref.manifest()["files"]
        except (OSError, CorruptArtifact):
            continue
        for rel in files:
            if str(ref.dir / rel) in blob:
                return ref, rel
    return None
