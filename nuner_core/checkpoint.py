"""Step-numbered, atomically written training checkpoints (nanochat's checkpoint_manager style).

``<dir>/step_00001200.pt`` holds everything an exact resume needs: model, optimiser, scheduler,
scaler, every process's RNG states, the data position (the step; the layout is checked) and the
metrics history. A file is written to ``.tmp`` and renamed, so a kill never leaves a torn one.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import torch

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
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own files: RNG states are not tensors only
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


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
