"""The concept map (paper Figure 6): seeded, sized by frequency, drawn by the pretrain stage as an extra output."""

from __future__ import annotations

import sys

import polars as pl
import pytest
from pretrain_helpers import toy_rows, write_annotated

from nuner_core.config import load_config
from nuner_core.pipeline import plan, run_stage
from nuner_core.pretraining.concept_map import MIN_CONCEPTS, UMAP_MISSING, MapSettings, concept_maps, top_concepts
from nuner_core.store import open_store

pytest.importorskip("umap", reason="umap-learn draws the concept maps")

CONCEPTS = [
    "city", "country", "company", "river", "politician", "athlete", "product", "month", "day", "sport", "sea",
    "film", "musician", "album", "disease", "drug", "protein", "gene", "restaurant", "dish", "cuisine", "actor",
    "director", "genre", "year", "university",
]  # fmt: skip


def _concepts(path, n=None):
    n = len(CONCEPTS) if n is None else n
    pl.DataFrame({"concept": CONCEPTS[:n], "mentions": [3 * (n - i) for i in range(n)], "sentences": [n - i for i in range(n)]}).write_parquet(path)
    return path


def test_maps_are_seeded_sized_and_capped(tmp_path, tiny_model_dir, tiny_model_no_dropout):
    concepts = _concepts(tmp_path / "concepts.parquet")
    names, mentions = top_concepts(concepts, 24)
    assert names[:3] == ["city", "country", "company"] and len(names) == 24 and list(mentions) == sorted(mentions, reverse=True)

    settings = MapSettings(max_concepts=24, labels=5, seed=3)
    encoders = {"base": tiny_model_dir, "trained": tiny_model_no_dropout}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = concept_maps(concepts, encoders, tmp_path / "a", settings)
    concept_maps(concepts, encoders, tmp_path / "b", settings)
    assert first["concepts"] == 24 and first["files"] == {"base": "concept_map_base.png", "trained": "concept_map_trained.png"}
    for name in first["files"].values():
        assert (tmp_path / "a" / name).stat().st_size > 10_000
    a = pl.read_parquet(tmp_path / "a" / "concept_map.parquet")
    b = pl.read_parquet(tmp_path / "b" / "concept_map.parquet")
    assert a.height == 24 and {"base_x", "base_y", "trained_r", "trained_g", "trained_b"} <= set(a.columns)
    assert a.equals(b)  # same seed, same map
    assert a.select(pl.col("^.*_[rgb]$")).min().min_horizontal()[0] >= 0.0
    assert a.select(pl.col("^.*_[rgb]$")).max().max_horizontal()[0] <= 1.0


def test_too_few_concepts_or_no_umap_is_said_not_silent(tmp_path, tiny_model_dir, monkeypatch):
    few = _concepts(tmp_path / "few.parquet", MIN_CONCEPTS - 1)
    assert concept_maps(few, {"base": tiny_model_dir}, tmp_path, MapSettings()) == {
        "skipped": f"{MIN_CONCEPTS - 1} concepts, fewer than the {MIN_CONCEPTS} a map needs"
    }
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    assert concept_maps(few, {"base": tiny_model_dir}, tmp_path, MapSettings()) == {"skipped": UMAP_MISSING}


def test_the_pretrain_stage_draws_both_maps_out_of_the_key(tmp_path, tiny_model_dir):
    store = open_store(tmp_path / "data")
    with store.publish("dataset", "toy", {"stage": "dataset"}) as out:
        write_annotated(out / "annotated.parquet", toy_rows())
        _concepts(out / "concepts.parquet")
    overrides = {
        "pretrain.base_model": tiny_model_dir, "pretrain.batch_size": 4, "pretrain.max_steps": 2, "pretrain.freeze_layers": 1,
        "pretrain.max_length": 32, "pretrain.num_threads": 1, "pretrain.controls": [], "pretrain.concept_map_labels": 3,
    }  # fmt: skip
    (step,) = plan(load_config("demo", overrides), ["pretrain"], store)
    (off,) = plan(load_config("demo", overrides | {"pretrain.concept_map": False, "pretrain.concept_map_size": 7}), ["pretrain"], store)
    assert off.key == step.key  # the map is an extra output: its settings do not change the artifact key
    ref = run_stage(step, {}, store)
    manifest = ref.manifest()
    assert manifest["concept_map"]["concepts"] == len(CONCEPTS)
    shown = {r["key"]: r["content"] for r in manifest["reports"] if r["kind"] == "image"}
    assert shown["pretrain-concept-map-base"] == "concept_map_base.png"
    assert shown["pretrain-concept-map-trained"] == "concept_map_trained.png"
    assert (ref.dir / "concept_map_trained.png").is_file() and "concept_map.parquet" in manifest["files"]
