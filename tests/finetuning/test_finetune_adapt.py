"""finetune.method dual_encoder: the tagger adapted to the user's labels, with replay (tiny models from a config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from finetune_helpers import MINILM
from test_finetune_stage import KillAt, Killed, context

from nuner_core.finetuning import adapt_stage, stage
from nuner_core.finetuning.adapt_data import prepare, step_batch, step_plan, user_examples
from nuner_core.finetuning.adapt_train import PairSpec, adapt_run, load_pair, mean_loss
from nuner_core.finetuning.config import FilesData, FinetuneConfig
from nuner_core.finetuning.data import load_data
from nuner_core.models import resolve_model
from nuner_core.pipeline import key_config
from nuner_core.pretraining.targets import collate
from nuner_core.stage_api import LogProgress
from nuner_core.store import ArtifactRef
from nuner_core.tagging.settings import check_model_dir

REPLAY = [
    ("Paris is the capital of France.", [("Paris", "capital"), ("France", "country")]),
    ("Apple released a new phone in Cupertino.", [("Apple", "company"), ("phone", "product"), ("Cupertino", "town")]),
    ("Lionel Messi plays football for Argentina.", [("Lionel Messi", "athlete"), ("football", "sport"), ("Argentina", "nation")]),
    ("The Danube runs from Germany to the Black Sea.", [("Danube", "river"), ("Germany", "country"), ("Black Sea", "sea")]),
]


def tiny_tagger(root: Path, seed: int = 0) -> Path:
    """Two random 2-layer, 32-wide BERTs as a tagger directory (a pretrain run's layout), threshold 0.5."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MINILM))
    for offset, name in enumerate(("text_encoder", "concept_encoder")):
        torch.manual_seed(seed + offset)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # fmt: skip
        BertModel(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    settings = {"similarity": "cosine", "temperature": 5.0, "logit_bias": -2.0, "pooling": "mean", "threshold": 0.5}
    (root / "dual_encoder.json").write_text(json.dumps(settings))
    return root


def annotated(path: Path, copies: int = 10) -> Path:
    rows = []
    for k in range(copies):
        for i, (text, ents) in enumerate(REPLAY):
            spans = [{"start": text.index(e), "end": text.index(e) + len(e), "concept": c} for e, c in ents]
            rows.append({"id": f"r{k}-{i}", "text": text, "split": "validation" if k == 0 else "train", "spans": spans})
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("split", pa.string()),
                        ("spans", pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32()), ("concept", pa.string())])))])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory) -> Path:
    return tiny_tagger(tmp_path_factory.mktemp("tagger"))


@pytest.fixture(scope="module")
def replay_pool(tmp_path_factory) -> list:
    from nuner_core.dual_encoder.annotated import load_annotated

    return load_annotated(annotated(tmp_path_factory.mktemp("ds") / "annotated.parquet")).train


def adapt_config(files: dict[str, Path], **over) -> FinetuneConfig:
    base = dict(method="dual_encoder", data=FilesData(train=str(files["train"]), dev=str(files["dev"]), test=str(files["test"])),
                seeds=(0,), epochs=3, batch_size=8, lr=1e-3, max_length=32, stride=8, log_every=1, num_threads=1, compare_base=False,
                retention_benchmarks=())  # fmt: skip
    return FinetuneConfig(**(base | over))


def user_data(files):
    data = load_data(FilesData(train=str(files["train"]), dev=str(files["dev"]), test=str(files["test"])), "snap")
    return data, user_examples(data.train, "train"), user_examples(data.dev, "dev")


def test_token_classifier_keys_keep_their_fields_and_upstream(toy_files):
    plain = FinetuneConfig(data=FilesData(train=str(toy_files["train"])))
    assert not {"method", "adapt", "retention_benchmarks"} & set(key_config(plain))
    assert stage.upstream(plain) == ("pretrain",)
    adapted = plain.model_copy(update={"method": "dual_encoder"})
    assert "method" in key_config(adapted)
    assert stage.upstream(adapted) == ("pretrain", "dataset")
    no_replay = FinetuneConfig(method="dual_encoder", adapt={"replay_share": 0, "negatives": 0}, encoder="x", compare_base=False)
    assert stage.upstream(no_replay) == ()
    assert adapt_stage.retention_names(FinetuneConfig(data={"kind": "benchmark", "name": "mit_movie"})) == ("mit_restaurant", "mit_movie_trivia", "jnlpba")


def test_user_spans_become_positives_of_their_normalised_label_names(toy_files):
    data, train, _ = user_data(toy_files)
    ex = train[0]
    assert {c for _, _, c in ex.spans} <= {"person", "city", "day"}
    for start, end, _ in ex.spans:
        assert ex.text[start:end].strip() == ex.text[start:end] and ex.text[start:end]


def test_replay_batches_come_from_the_pretrain_dataset_in_the_configured_share(toy_files, tagger_dir, replay_pool):
    _, train, dev = user_data(toy_files)
    pair = load_pair(PairSpec("nuner", str(tagger_dir), "tagger", 0))
    data = prepare(pair.tokenizer, pair.concept_tokenizer, train, dev, replay_pool, ["city", "day", "person"], 32, 16)
    plan = step_plan(data.n_user, len(replay_pool), batch_size=8, replay_share=0.25, negatives=3, seed=0)
    assert (plan.replay, plan.layout.micro_batch_size) == (2, 6)
    for step in range(plan.steps_per_epoch * 2):
        users = plan.user_batches(data.train.lengths[: data.n_user], step // plan.steps_per_epoch)
        replay, negatives = plan.extras(step, data.negative_pool)
        batch = step_batch(data, plan, users, step, 0, 0)
        assert len(users[step % plan.steps_per_epoch]) == 6 and len(replay) == 2  # 2 of 8 sentences replayed, 6 the user's
        assert len(batch.text_ids) == 8 and len(set(replay.tolist())) == 2
        for j in replay:  # a replay row is the pretrain sentence it names, concepts and all
            assert {data.vocab.names[c] for *_, c in data.train.spans[data.n_user + j]} == {c for *_, c in replay_pool[j].spans}
        names = {data.vocab.names[c] for c in batch.concepts}
        assert {"city", "day", "person"} <= names  # every label name a column, annotated in the batch or not
        assert len(negatives) == 3 and {data.vocab.names[c] for c in negatives} <= names - {"city", "day", "person"}
    again = plan.extras(5, data.negative_pool)
    assert all(np.array_equal(a, b) for a, b in zip(again, plan.extras(5, data.negative_pool)))  # a function of (seed, step)


def test_adaptation_lowers_the_loss_on_its_data(tmp_path, toy_files, tagger_dir, replay_pool):
    data, train, dev = user_data(toy_files)
    cfg = adapt_config(toy_files, epochs=8, lr=5e-3, warmup_ratio=0.0, patience=None)
    labels = ["city", "day", "person"]
    before = load_pair(PairSpec("nuner", str(tagger_dir), "tagger", 0))
    prepared = prepare(before.tokenizer, before.concept_tokenizer, train, dev, [], labels, 32, 16)
    batches = [collate(prepared.train, np.arange(i, min(i + 8, prepared.n_user)), prepared.vocab, 0, 0, prepared.labels)
               for i in range(0, prepared.n_user, 8)]  # fmt: skip
    loss_before = mean_loss(before.model, batches, torch.device("cpu"))
    summary, after = adapt_run(cfg, PairSpec("nuner", str(tagger_dir), "tagger", 0), train, dev, replay_pool, labels, tmp_path / "run")
    loss_after = mean_loss(after.model, batches, torch.device("cpu"))
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)
    assert summary["replay_per_batch"] == 4 and summary["steps"] > 0


def test_resume_after_a_kill_gives_the_same_weights(tmp_path, toy_files, tagger_dir, replay_pool):
    _, train, dev = user_data(toy_files)
    cfg = adapt_config(toy_files, epochs=2, checkpoint_every=2)
    spec, labels = PairSpec("nuner", str(tagger_dir), "tagger", 0), ["city", "day", "person"]
    _, whole = adapt_run(cfg, spec, train, dev, replay_pool, labels, tmp_path / "whole")
    with pytest.raises(Killed):
        adapt_run(cfg, spec, train, dev, replay_pool, labels, tmp_path / "killed", KillAt(5))
    summary, resumed = adapt_run(cfg, spec, train, dev, replay_pool, labels, tmp_path / "killed")
    assert summary["resumed_from_step"] == 4
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_stage_adapts_calibrates_on_dev_only_and_the_tagger_loads(tmp_path, toy_files, tagger_dir, monkeypatch):
    import nuner_core.tagging as tagging
    from nuner_core.tagging import ZeroShotTagger
    from nuner_core.tagging import calibrate as calibrate_module

    seen: list[list[str]] = []
    real = calibrate_module.calibrate_examples

    def spy(tagger, examples, source, **kw):
        seen.append([ex.text for ex in examples])
        return real(tagger, examples, source, **kw)

    # Where the stage looks it up: the tagger's public API (which caches the name once anything has used it).
    monkeypatch.setattr(tagging, "calibrate_examples", spy)
    dataset = tmp_path / "dataset"
    annotated(dataset / "annotated.parquet")
    cfg = adapt_config(toy_files, encoder=str(tagger_dir), compare_base=True, base=str(tagger_dir / "text_encoder"), epochs=2)
    result = stage.run(context(tmp_path, cfg, {"dataset": ArtifactRef("dataset", "d", str(dataset))}))

    dev_texts = [ex.text for ex in user_examples(load_data(cfg.data, "snap").dev, "dev")]
    assert seen and all(texts == dev_texts for texts in seen)  # every re-calibration (one per run) saw the dev split, nothing else
    out = tmp_path / "out"
    settings = check_model_dir(out / "model")
    assert settings.threshold is not None and settings.logit_bias != -2.0
    assert (out / "base_model" / "dual_encoder.json").is_file() and "dev split" in (out / "model" / "README.md").read_text()
    tagger = ZeroShotTagger.from_pretrained(out / "model", device="cpu")
    entities = tagger.predict(["Alice flew to Paris on Monday."], ["person", "City", "day"], threshold=0.01)
    assert entities[0] and {e.label for e in entities[0]} <= {"person", "City", "day"}
    assert result.headline["method"] == "dual_encoder" and result.headline["test_f1"] is not None
    assert "retention" in result.reports[0].content and result.rows["replay_pool"] == 36
    assert "- retention (zero-shot entity micro-F1" in (out / "summary.md").read_text() and (out / "loss_curve.png").stat().st_size


def test_the_adapted_directory_tags_from_the_cli(tmp_path, toy_files, tagger_dir):
    dataset = tmp_path / "dataset"
    annotated(dataset / "annotated.parquet")
    cfg = adapt_config(toy_files, encoder=str(tagger_dir), epochs=1, retention_benchmarks=("mit_restaurant",),
                       adapt={"retention_test_size": 5})  # fmt: skip
    result = stage.run(context(tmp_path, cfg, {"dataset": ArtifactRef("dataset", "d", str(dataset))}, LogProgress("t", every_s=1e9)))
    kept = result.extra["retention"]
    assert set(kept["before"]) == set(kept["after"]) == {"mit_restaurant"}
    from flows.cli import main

    (tmp_path / "in.txt").write_text("Alice lives in Paris.\n")
    assert main(["tag", "--model", str(tmp_path / "out" / "model"), "--labels", "person,city", "--threshold", "0.01",
                 str(tmp_path / "in.txt"), "-o", str(tmp_path / "tags.jsonl")]) == 0  # fmt: skip
    assert (tmp_path / "tags.jsonl").read_text().strip()
