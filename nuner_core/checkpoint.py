"""Step-numbered, atomically written training checkpoints (nanochat's checkpoint_manager style).

``<dir>/step_00001200.pt`` holds everything an exact resume needs: model, optimiser, scheduler,
scaler, every process's RNG states, the data position (the step; the layout is checked) and the
metrics history. A file is written to ``.tmp`` and renamed, so a kill never leaves a torn one.

Checkpoints are read back with ``weights_only=True``: tensors and plain Python values only (the
RNG states are a tuple of ints and tensors), never pickled code. A resume may pull them from a
shared bucket, and whoever can write one object there must not run code on every worker that
resumes; a file that needs more than plain data is refused, not loaded.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import torch

from nuner_core.stage_api import StageError

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    path = directory / f"step_{step:08d}.pt"
    save_atomic(state, path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if STEP_FILE.match(p.name))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain values
        raise StageError(
            f"{path}: refused: not a plain-data checkpoint, it would run pickled code to load ({_refusal(exc)}); nothing was loaded. "
            f"Delete it (on a remote store, its copy under the same <stage>/.work/ path too) to start this training over"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def _refusal(exc: Exception) -> str:
    """The unpickler's own reason (``Unsupported global: GLOBAL builtins.exec ...``) out of torch's long message."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n|$)", str(exc))
    return found.group(1).strip() if found else "not tensors and plain values only"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume(path: Path, layout: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any, work_dir: Path) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer``, ``scheduler`` and the RNGs; its loop state.

    A checkpoint written for another ``layout`` (data, batch size, steps) is refused: continuing it
    would silently train on a different plan.
    """
    saved = load(path)
    if saved["layout"] != layout:
        raise StageError(f"{path}: written for {saved['layout']}, now {layout}; delete {work_dir} to start over")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state: dict[str, Any] = saved["state"]
    return state
