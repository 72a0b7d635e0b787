"""Deterministic assignment by hashed id: the train/validation split and the subsample.

A sentence's place depends only on its id and the seed, never on the other sentences or
on row order: adding data does not reshuffle the split, and a smaller subsample is a
subset of a larger one (the paper's data-size ablation, §5.3, compares nested sets).

The hash is FNV-1a (64-bit) over ``salt + "\\0" + id`` in UTF-8, finished with
MurmurHash3's fmix64 so every output bit depends on every input byte; it is defined here,
vectorised with numpy, and does not change with library versions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _fnv1a_scalar(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _fmix64(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def hash_unit(ids: pa.Array | pa.ChunkedArray | list[str], salt: str) -> np.ndarray:
    """(N,) float64 in [0, 1), uniform, a pure function of (salt, id)."""
    arr = pa.array(ids, type=pa.string()) if isinstance(ids, list) else ids
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=pa.string())
    arr = arr.cast(pa.large_string())
    if arr.null_count:
        raise ValueError("ids must not be null")
    n = len(arr)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    lengths = offsets[1:] - offsets[:-1]
    h = np.full(n, _fnv1a_scalar(salt.encode() + b"\0"), dtype=np.uint64)
    rows = np.arange(n)
    j = 0
    with np.errstate(over="ignore"):
        while rows.size:
            rows = rows[lengths[rows] > j]
            if not rows.size:
                break
            h[rows] = (h[rows] ^ data[offsets[rows] + j].astype(np.uint64)) * _FNV_PRIME
            j += 1
        h = _fmix64(h)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def validation_mask(ids: pa.Array | pa.ChunkedArray | list[str], fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: True for the sentences of the validation split."""
    return hash_unit(ids, f"split:{seed}") < fraction


def subsample_mask(ids: pa.Array | pa.ChunkedArray | list[str], n: int, seed: int) -> np.ndarray:
    """(N,) bool: the ``n`` ids with the smallest sample hash (all when fewer)."""
    if n >= len(ids):
        return np.ones(len(ids), dtype=bool)
    order = np.argsort(hash_unit(ids, f"sample:{seed}"), kind="stable")
    mask = np.zeros(len(ids), dtype=bool)
    mask[order[:n]] = True
    return mask
