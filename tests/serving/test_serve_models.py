"""What `--model NAME=SOURCE` names: a directory of either kind, or a store artifact fetched through the store."""

from __future__ import annotations

import shutil

import pytest

from nuner_core.serving.models import ModelSourceError, load_model, parse_model_options, resolve_source
from nuner_core.store import open_store


def test_store_artifacts_resolve_to_their_model_directories(planted_dir, classifier_dir, tmp_path, monkeypatch):
    store = open_store(tmp_path / "data")
    manifest = {"stage": "pretrain", "base_model": "tiny", "encoders": {"nuner": "text_encoder"}}
    with store.publish("pretrain", "pre1", manifest) as out:
        for item in planted_dir.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy)(item, out / item.name)
    with store.publish("finetune", "fine1", {"stage": "finetune"}) as out:
        shutil.copytree(classifier_dir, out / "model")
    monkeypatch.setenv("NUNER_DATA_DIR", str(tmp_path / "data"))
    assert resolve_source("pretrain:latest") == store.lookup("pretrain", "pre1").dir
    assert resolve_source("pretrain:pre1") == resolve_source("pretrain:latest")
    model = load_model("ft", "finetune:fine1", device="cpu")
    assert model.kind == "token_classifier" and model.path == store.lookup("finetune", "fine1").dir / "model"
    with pytest.raises(ModelSourceError, match="finetune:nope: no such artifact"):
        resolve_source("finetune:nope")


@pytest.mark.parametrize("values, message", [
    ([], "at least one --model"), (["a=x", "a=y"], "given twice"), (["=dir"], "NAME=DIR"), (["a b=dir"], "letters, digits"),
])  # fmt: skip
def test_bad_model_options_say_what_to_give(values, message):
    with pytest.raises(ModelSourceError, match=message):
        parse_model_options(values)


def test_a_directory_of_neither_kind_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="neither a zero-shot model"):
        load_model("x", str(tmp_path / "empty"))


def test_the_tag_stage_page_names_the_serve_command():
    from pathlib import Path

    from nuner_core.tagging.stage import serve_hint

    text = serve_hint(Path("/models/tagger"), ["person", "o'brien"])
    assert "nuner serve --model nuner=/models/tagger" in text
    assert """-d '{"model": "nuner", "texts": ["..."], "labels": ["person", "o'\\''brien"]}'""" in text
