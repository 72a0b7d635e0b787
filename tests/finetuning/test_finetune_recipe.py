"""The recipe's optimiser settings: per-layer learning rates (layer_decay) and re-initialised top layers."""

from __future__ import annotations

import pytest
import torch

from nuner_core.finetuning.config import FinetuneConfig
from nuner_core.token_classifier.config import TrainingConfig
from nuner_core.token_classifier.model import build_model
from nuner_core.token_classifier.recipe import depth, encoder_blocks, param_groups, reinit_top_blocks
from nuner_core.token_classifier.train import RunSpec, train_run

LABELS = ["O", "B-person", "I-person"]


def rates_by_name(model, groups) -> dict[str, float]:
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {name: rate[id(p)] for name, p in model.named_parameters()}


@pytest.mark.parametrize("head_hidden", [None, 16], ids=["linear-head", "two-layer-head"])
def test_layer_decay_gives_each_layer_its_rate_and_the_head_its_own(tiny_model_dir, head_hidden):
    model = build_model(tiny_model_dir, LABELS, seed=0, dropout=0.1, head_hidden=head_hidden)
    cfg = TrainingConfig(lr=1e-4, head_lr=1e-3, layer_decay=0.5)
    groups = param_groups(model, cfg)
    rates = rates_by_name(model, groups)
    encoder = {id(p) for p in model.base_model.parameters()}
    assert len(encoder_blocks(model.base_model)) == 2  # the tiny BERT: embeddings, 2 layers
    for name, p in model.named_parameters():
        if id(p) not in encoder:
            assert rates[name] == 1e-3, name  # the head
        elif ".layer.1." in name:
            assert rates[name] == pytest.approx(1e-4), name  # the top layer: the full rate
        elif ".layer.0." in name:
            assert rates[name] == pytest.approx(5e-5), name
        elif "embeddings" in name:
            assert rates[name] == pytest.approx(2.5e-5), name
        else:
            assert rates[name] == pytest.approx(1e-4), name  # the pooler counts as the top
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # every parameter once
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all((id(p) in decayed) == (p.ndim >= 2 or id(p) not in encoder) for p in model.parameters())


def test_no_layer_decay_keeps_the_three_groups_of_old_checkpoints(tiny_model_dir):
    model = build_model(tiny_model_dir, LABELS, seed=0)
    groups = param_groups(model, TrainingConfig(lr=2e-5, head_lr=1e-3))
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(2e-5, 0.01), (2e-5, 0.0), (1e-3, 0.01)]
    assert [p.ndim >= 2 for p in groups[0]["params"]] == [True] * len(groups[0]["params"])


def test_depth_reads_the_block_from_the_parameter_name():
    assert depth("embeddings.word_embeddings.weight", 6) == 0
    assert depth("encoder.layer.0.attention.self.query.weight", 6) == 1
    assert depth("encoder.layer.5.output.dense.bias", 6) == 6
    assert depth("pooler.dense.weight", 6) == 6


def test_reinit_changes_exactly_the_top_layer(tiny_model_dir):
    model = build_model(tiny_model_dir, LABELS, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    reinit_top_blocks(model.base_model, 1)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    top = {k for k in before if ".layer.1." in k}
    assert changed and changed <= top  # nothing outside the top layer moved
    assert {k for k in top if k.endswith("weight") and "LayerNorm" not in k} <= changed  # every matrix of it did
    std = model.base_model.config.initializer_range
    query = model.base_model.encoder.layer[1].attention.self.query
    assert float(query.weight.detach().std()) == pytest.approx(std, rel=0.3) and not query.bias.any()
    with pytest.raises(ValueError, match="only 2 layers"):
        reinit_top_blocks(model.base_model, 3)


def test_reinit_and_decay_runs_train_resume_and_are_seeded(tmp_path, toy_files, tiny_model_dir):
    from nuner_core.finetuning.config import FilesData
    from nuner_core.finetuning.data import load_data

    data = FilesData(train=str(toy_files["train"]), dev=str(toy_files["dev"]))
    cfg = FinetuneConfig(data=data, epochs=2, batch_size=8, lr=1e-3, head_lr=5e-3, max_length=32, stride=8, num_threads=1,
                         layer_decay=0.7, reinit_top_layers=1, warmup_ratio=0.3)  # fmt: skip
    assert cfg.training().layer_decay == 0.7 and cfg.training().reinit_top_layers == 1  # the stage passes them on
    splits = load_data(cfg.data, "snap")
    spec = RunSpec("nuner", tiny_model_dir, seed=1)
    first = train_run(cfg.training(), spec, splits, tmp_path / "a")
    second = train_run(cfg.training(), spec, splits, tmp_path / "b")
    plain = train_run(FinetuneConfig(**(cfg.model_dump() | {"reinit_top_layers": 0})).training(), spec, splits, tmp_path / "c")
    assert first["dev_f1"] == second["dev_f1"] and first["dev_loss"] == second["dev_loss"]  # the re-initialisation is seeded
    assert first["dev_loss"] != plain["dev_loss"]  # and it is applied


def test_recipe_fields_are_checked():
    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneConfig(layer_decay=0)
    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneConfig(layer_decay=1.5)
    with pytest.raises(ValueError, match="reinit_top_layers"):
        FinetuneConfig(reinit_top_layers=-1)
