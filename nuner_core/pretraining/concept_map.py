"""The concept map (paper Figure 6): the most frequent concepts, embedded by a concept encoder, in 2D.

For each of two concept encoders (the base one, before pre-training, and the trained one)
the ``max_concepts`` most frequent concept names of the data set are embedded as the
pre-training embeds them (mean of the last hidden states over the name's tokens,
``model.mean_pool``), projected to 2D with UMAP (cosine metric), and drawn as disks whose
radius grows with the logarithm of the concept's frequency; the most frequent are labelled.
As in the paper, the colours come from a 3D projection of the same vectors (UMAP to 3D,
each axis scaled to [0, 1] as red, green, blue), so nearby colours mean nearby concepts
even where the 2D layout tears a cluster apart. Both projections are seeded: the same
artifact always draws the same map.

UMAP comes from ``umap-learn``; without it the maps are skipped with a message saying so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nuner_core.plotting import one_at_a_time

log = logging.getLogger(__name__)

MIN_CONCEPTS = 20  # fewer than this: no map (UMAP needs neighbours, and a map of a handful says nothing)
UMAP_MISSING = "umap-learn is not installed: pip install umap-learn to draw the concept maps"


@dataclass(frozen=True)
class MapSettings:
    max_concepts: int = 50_000  # the most frequent concepts embedded (the paper's Figure 6: 50k)
    labels: int = 40  # the most frequent concepts labelled on the map
    seed: int = 0  # UMAP's random state (2D layout and 3D colours)
    max_length: int = 16  # tokens per concept name, as in pre-training
    batch_size: int = 256  # names per forward pass
    n_neighbors: int = 15  # UMAP neighbourhood size (fewer when there are few concepts)


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def top_concepts(concepts_parquet: Path, max_concepts: int) -> tuple[list[str], np.ndarray]:
    """The ``max_concepts`` most frequent concepts (by mentions, ties by name) and their mention counts."""
    import polars as pl

    table = pl.read_parquet(concepts_parquet, columns=["concept", "mentions"])
    table = table.filter(pl.col("concept").is_not_null() & (pl.col("mentions") > 0))
    table = table.sort(["mentions", "concept"], descending=[True, False]).head(max_concepts)
    return table["concept"].to_list(), table["mentions"].to_numpy().astype(np.int64)


def embed(reference: str, names: list[str], settings: MapSettings, device: str = "cpu") -> np.ndarray:
    """(N, D) unit vectors: mean-pooled last hidden states of the concept encoder at ``reference``."""
    import torch
    import torch.nn.functional as F

    from nuner_core.dual_encoder.model import load_encoder, mean_pool
    from nuner_core.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(reference)
    model: torch.nn.Module = load_encoder(reference)
    model.to(device)  # in place (nn.Module.to returns self)
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(names), settings.batch_size):
            batch = tokenizer(
                names[start : start + settings.batch_size], padding=True, truncation=True,
                max_length=settings.max_length, return_tensors="pt",
            ).to(device)  # fmt: skip
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (B, L, D)
            out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1).cpu())  # (B, D)
    return torch.cat(out).numpy()


def project(vectors: np.ndarray, settings: MapSettings) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) layout and (N, 3) RGB colours in [0, 1], both by seeded UMAP with the cosine metric."""
    import umap

    neighbours = max(2, min(settings.n_neighbors, len(vectors) - 1))
    common = dict(n_neighbors=neighbours, metric="cosine", random_state=settings.seed, n_jobs=1, init="random" if len(vectors) < 50 else "spectral")
    xy = umap.UMAP(n_components=2, min_dist=0.1, **common).fit_transform(vectors)
    xyz = umap.UMAP(n_components=3, min_dist=0.1, **common).fit_transform(vectors)
    lo, hi = xyz.min(0), xyz.max(0)
    rgb = 0.15 + 0.7 * (xyz - lo) / np.where(hi > lo, hi - lo, 1.0)  # keep away from black and white
    return xy.astype(np.float32), rgb.astype(np.float32)


@one_at_a_time
def draw(path: Path, names: list[str], mentions: np.ndarray, xy: np.ndarray, rgb: np.ndarray, title: str, labels: int) -> None:
    """Disks at ``xy`` (radius ∝ log frequency, the most frequent drawn last, on top), the top ``labels`` named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    radius = np.log1p(mentions.astype(np.float64))  # (N,)
    size = (2.0 + 9.0 * radius / max(radius.max(), 1e-9)) ** 2  # marker area in pt^2: diameter ∝ log frequency
    order = np.argsort(mentions, kind="stable")  # rare first, frequent on top
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    ax.scatter(xy[order, 0], xy[order, 1], s=size[order], c=rgb[order], alpha=0.75, linewidths=0.3, edgecolors="white")
    for i in range(min(labels, n)):  # names are sorted most frequent first
        ax.annotate(names[i], xy[i], fontsize=7, ha="center", va="bottom", xytext=(0, 4), textcoords="offset points",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.6))  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def concept_maps(
    concepts_parquet: Path,
    encoders: dict[str, str],
    out_dir: Path,
    settings: MapSettings,
    device: str = "cpu",
) -> dict[str, Any]:
    """Draw one map per encoder (name -> model reference) into ``out_dir/concept_map_<name>.png``.

    Also writes ``concept_map.parquet`` (concept, mentions, and x, y, r, g, b per encoder).
    Returns what the manifest records: the files, concept count and time, or why it was skipped.
    """
    started = time.perf_counter()
    if not umap_available():
        log.warning("concept map skipped: %s", UMAP_MISSING)
        return {"skipped": UMAP_MISSING}
    if not concepts_parquet.is_file():
        return {"skipped": f"no {concepts_parquet.name} in the dataset artifact"}
    names, mentions = top_concepts(concepts_parquet, settings.max_concepts)
    if len(names) < MIN_CONCEPTS:
        return {"skipped": f"{len(names)} concepts, fewer than the {MIN_CONCEPTS} a map needs"}
    import polars as pl

    columns: dict[str, Any] = {"concept": names, "mentions": mentions}
    files = {}
    for name, reference in encoders.items():
        vectors = embed(reference, names, settings, device)  # (N, D)
        xy, rgb = project(vectors, settings)
        file = f"concept_map_{name}.png"
        title = (
            f"{len(names):,} most frequent concepts, {name} concept encoder ({reference if name != 'trained' else 'after pre-training'}); "
            f"UMAP 2D, colours from UMAP 3D, disk ∝ log frequency, seed {settings.seed}"
        )
        draw(out_dir / file, names, mentions, xy, rgb, _wrap(title), settings.labels)
        files[name] = file
        for axis, values in zip(("x", "y", "r", "g", "b"), (xy[:, 0], xy[:, 1], rgb[:, 0], rgb[:, 1], rgb[:, 2])):
            columns[f"{name}_{axis}"] = values
    pl.DataFrame(columns).write_parquet(out_dir / "concept_map.parquet")
    return {"concepts": len(names), "files": files, "seconds": round(time.perf_counter() - started, 1), "seed": settings.seed}


def _wrap(title: str, width: int = 95) -> str:
    words, lines, line = title.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


def maps_for_artifact(pretrain_dir: Path, out_dir: Path, settings: MapSettings, device: str = "cpu") -> dict[str, Any]:
    """The maps of an existing pretrain artifact (its dataset artifact found beside it in the store)."""
    from nuner_core.store.manifest import parse_manifest

    manifest = parse_manifest((pretrain_dir / "manifest.json").read_bytes(), str(pretrain_dir / "manifest.json"))
    dataset_key = (manifest.get("upstream") or {}).get("dataset")
    if not dataset_key:
        raise ValueError(f"{pretrain_dir}/manifest.json names no upstream dataset artifact")
    dataset_dir = pretrain_dir.parent.parent / "dataset" / dataset_key
    config = manifest.get("config") or {}
    base = config.get("concept_model") or manifest.get("base_model") or config.get("base_model")
    if not isinstance(base, str):
        raise ValueError(f"{pretrain_dir}/manifest.json names no base model (config.concept_model or base_model)")
    out_dir.mkdir(parents=True, exist_ok=True)
    encoders = {"base": base, "trained": str(pretrain_dir / "concept_encoder")}
    return concept_maps(dataset_dir / "concepts.parquet", encoders, out_dir, settings, device)


def main(argv: list[str] | None = None) -> int:
    """``python -m nuner_core.pretraining.concept_map <pretrain artifact> --out DIR``: maps of an existing artifact."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pretrain_artifact", type=Path, help="a pretrain artifact directory (<root>/pretrain/<key>)")
    parser.add_argument("--out", type=Path, required=True, help="where the PNGs and concept_map.parquet go")
    parser.add_argument("--max-concepts", type=int, default=MapSettings.max_concepts)
    parser.add_argument("--labels", type=int, default=MapSettings.labels)
    parser.add_argument("--seed", type=int, default=MapSettings.seed)
    args = parser.parse_args(argv)
    settings = MapSettings(max_concepts=args.max_concepts, labels=args.labels, seed=args.seed)
    print(json.dumps(maps_for_artifact(args.pretrain_artifact, args.out, settings), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
