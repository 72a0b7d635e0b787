"""Exported model directories: self-contained, loadable, with a model card."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from nuner_core.tagging import ModelCard, ModelDirectoryError, ZeroShotTagger, export_model, model_identity


def test_export_is_self_contained_and_tags_the_same(tmp_path, planted_dir, planted):
    source = tmp_path / "artifact"
    shutil.copytree(planted_dir, source)
    (source / "checkpoints").mkdir()
    (source / "checkpoints" / "step_00000010.pt").write_bytes(b"0" * 100)
    (source / "metrics.jsonl").write_text("{}\n")
    card = ModelCard(
        name="NuNER zero-shot MiniLM (demo)",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        training_data="1,639 web sentences annotated by an LLM (2,023 concepts)",
        training={"steps": 276, "epochs": 3, "final_val_loss": 0.0123},
        evaluation=[{"dataset": "mit_restaurant", "protocol": "zero_shot", "metric": "token_macro_f1", "value": 0.40}],
        calibration={"threshold": 0.5, "f1": 0.61, "sentences": 163, "label_set": "sentence"},
    )
    dest = export_model(source, tmp_path / "out" / "nuner-zero", threshold=0.5, card=card)

    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "concept_encoder", "dual_encoder.json", "text_encoder"]
    assert json.loads((dest / "dual_encoder.json").read_text())["threshold"] == 0.5
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no temporary directory left behind
    exported = ZeroShotTagger.from_pretrained(dest)
    assert exported.threshold == 0.5 and exported.threshold_source == "calibrated"
    texts = ["Alice ate pizza in New York", "a zebra in Zürich"]
    labels = ["person", "food", "city", "x"]
    assert exported.predict(texts, labels) == planted.predict(texts, labels, threshold=0.5)
    assert model_identity(dest) != model_identity(source)  # the threshold is part of what it computes

    readme = (dest / "README.md").read_text()
    front = yaml.safe_load(readme.split("---")[1])
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["pipeline_tag"] == "token-classification" and "zero-shot" in front["tags"]
    assert "# NuNER zero-shot MiniLM (demo)" in readme
    usage = readme.split("```python\n")[1].split("```")[0].strip().splitlines()
    assert usage == [
        "from nuner_core.tagging import ZeroShotTagger",
        'tagger = ZeroShotTagger.from_pretrained("nuner-zero")',
        "print(tagger.predict(['Tim Cook presented the new iPhone in Cupertino on Tuesday.'], ['person', 'company', 'product', 'city']))",
    ]
    assert "| mit_restaurant | zero_shot | token_macro_f1 | 0.4 |" in readme
    assert "Stored threshold: **0.5**" in readme and "163 held-out" in readme
    assert "Steps: 276" in readme and "tau * cos" in readme


def test_export_keeps_the_source_threshold_and_refuses_to_overwrite(tmp_path, planted_dir):
    dest = export_model(planted_dir, tmp_path / "m")
    assert "threshold" not in json.loads((dest / "dual_encoder.json").read_text())
    assert "No calibrated threshold is stored" in (dest / "README.md").read_text()
    assert "Not evaluated yet." in (dest / "README.md").read_text()
    with pytest.raises(FileExistsError):
        export_model(planted_dir, dest)
    export_model(planted_dir, dest, threshold=0.2, overwrite=True)
    assert json.loads((dest / "dual_encoder.json").read_text())["threshold"] == 0.2


def test_export_of_something_else_fails(tmp_path, random_dir):
    with pytest.raises(ModelDirectoryError, match="missing"):
        export_model(random_dir / "text_encoder", tmp_path / "m")
    with pytest.raises(ValueError, match="threshold"):
        export_model(random_dir, tmp_path / "m2", threshold=3.0)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m2").exists()


def _store_with_a_model(tmp_path, planted_dir):
    """data/ holding a pretrain-like model and the paid response cache."""
    data = tmp_path / "data"
    source = data / "pretrain" / "0123456789abcdef"
    shutil.copytree(planted_dir, source)
    (data / "cache" / "llm-responses").mkdir(parents=True)
    (data / "cache" / "llm-responses" / "responses.sqlite").write_bytes(b"paid answers")
    return data, source


@pytest.mark.parametrize("dest", ["data", "data/pretrain", "data/pretrain/0123456789abcdef/exported"])
def test_export_model_overwrite_onto_an_ancestor_or_into_the_source_is_refused(tmp_path, planted_dir, dest):
    data, source = _store_with_a_model(tmp_path, planted_dir)
    with pytest.raises(ValueError, match="contains the source|inside the source"):
        export_model(source, tmp_path / dest, overwrite=True)
    assert (data / "cache" / "llm-responses" / "responses.sqlite").read_bytes() == b"paid answers"
    assert (source / "dual_encoder.json").is_file() and not (source / "exported").exists()


def test_export_model_overwrite_replaces_only_an_exported_model(tmp_path, planted_dir):
    data, source = _store_with_a_model(tmp_path, planted_dir)
    other = tmp_path / "reports"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an exported model"):
        export_model(source, other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "model.bin"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not an exported model"):
        export_model(source, a_file, overwrite=True)
    cache = data / "cache"
    with pytest.raises(ValueError, match="not an exported model"):
        export_model(source, cache, overwrite=True)  # a sibling of the source, but not a model
    assert (cache / "llm-responses" / "responses.sqlite").is_file()
    dest = export_model(source, tmp_path / "m")
    (dest / "notes.txt").write_text("a file export never writes")
    with pytest.raises(ValueError, match="not an exported model"):
        export_model(source, dest, overwrite=True)
    (dest / "notes.txt").unlink()
    export_model(source, dest, threshold=0.3, overwrite=True)
    assert json.loads((dest / "dual_encoder.json").read_text())["threshold"] == 0.3
