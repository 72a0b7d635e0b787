"""Where a model runs and in which precision: the one reading of ``device``, ``precision`` and a pad id.

``device: auto`` is the GPU when one is visible, else the CPU; ``precision: auto`` is bf16 on
CUDA and fp32 elsewhere (bf16 needs no loss scaling, and CPUs gain little from it). torch is
imported on first use: planning imports every stage module and must stay quick.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` with a ``local_rank`` -> that process's GPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    return torch.device(name)


def device_name(name: str = "auto") -> str:
    """``resolve_device`` as a string (``cpu``, ``cuda``, ``cuda:1``): for configs and loaders that take one."""
    return str(resolve_device(name))


def uses_bf16(precision: str, device: torch.device) -> bool:
    """bf16 when asked, or under ``auto`` on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's padding id; 0 for tokenizers without one (padding is masked out anyway)."""
    value = getattr(tokenizer, "pad_token_id", None)
    return int(value) if value is not None else 0
