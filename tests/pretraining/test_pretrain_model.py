"""Freezing, encoder checks and the two similarities, on tiny models built from configs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    T5Config,
)

from nuner_core.dual_encoder.model import DualEncoder, check_encoder_config, load_encoder, mean_pool
from nuner_core.pretraining.build import find_embeddings, find_layers, freeze
from nuner_core.stage_api import StageError

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
ARCHITECTURES = {
    "bert": BertConfig(**SMALL),
    "roberta": RobertaConfig(**SMALL),
    "deberta-v2": DebertaV2Config(**SMALL),
    "distilbert": DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=2, hidden_dim=64),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_freeze_embeddings_and_bottom_layers(arch):
    model = AutoModel.from_config(ARCHITECTURES[arch])
    freeze(model, 2)
    layers = find_layers(model)
    assert len(layers) == 4
    assert not any(p.requires_grad for p in find_embeddings(model).parameters())
    for i, layer in enumerate(layers):
        assert all(p.requires_grad == (i >= 2) for p in layer.parameters()), f"layer {i}"


def test_freezing_more_layers_than_the_model_has_fails():
    with pytest.raises(StageError, match="only 4 layers"):
        freeze(AutoModel.from_config(ARCHITECTURES["bert"]), 5)


@pytest.mark.parametrize("config", [GPT2Config(n_layer=1, n_embd=32, n_head=2), T5Config(d_model=32, num_layers=1, num_heads=2)], ids=["gpt2", "t5"])
def test_non_encoders_are_refused(config):
    with pytest.raises(StageError, match="not an encoder"):
        check_encoder_config(config, "some/model")


def test_loading_a_decoder_directory_is_refused(tmp_path):
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(StageError, match="'gpt2' model, not an encoder"):
        load_encoder(str(tmp_path))


def test_slow_tokenizer_is_refused(monkeypatch):
    import transformers

    from nuner_core.tokenizer import load_tokenizer

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SimpleNamespace(is_fast=False))
    with pytest.raises(StageError, match="not a fast"):
        load_tokenizer("some/model")


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_similarities(similarity):
    torch.manual_seed(0)
    text, concept = AutoModel.from_config(ARCHITECTURES["bert"]), AutoModel.from_config(ARCHITECTURES["bert"])
    model = DualEncoder(text, concept, similarity, temperature=5.0, learnable_bias=True, bias_init=-7.0).eval()
    ids, mask = torch.randint(1, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    c_ids, c_mask = torch.randint(1, 100, (3, 4)), torch.ones(3, 4, dtype=torch.long)
    logits = model(ids, mask, c_ids, c_mask)  # (2, 6, 3)
    h = text(input_ids=ids, attention_mask=mask).last_hidden_state[0, 1]
    c = concept(input_ids=c_ids, attention_mask=c_mask).last_hidden_state[2].mean(0)
    if similarity == "cosine":
        expected = 5.0 * torch.nn.functional.cosine_similarity(h, c, dim=0) - 7.0
        assert logits.max() <= 5.0 - 7.0 + 1e-5 and logits.min() >= -5.0 - 7.0 - 1e-5
    else:
        expected = h @ c / 5.0 - 7.0
    assert math.isclose(logits[0, 1, 2].item(), expected.item(), rel_tol=1e-5, abs_tol=1e-5)
    assert model.logit_bias.requires_grad


def test_fixed_bias_is_zero():
    bert = ARCHITECTURES["bert"]
    model = DualEncoder(AutoModel.from_config(bert), AutoModel.from_config(bert), "cosine", 5.0, learnable_bias=False, bias_init=-7.0)
    assert model.logit_bias.item() == 0.0 and "logit_bias" not in dict(model.named_parameters())


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta-v2"])
def test_concepts_encoded_in_length_groups_equal_one_padded_call(arch):
    torch.manual_seed(0)
    config = ARCHITECTURES[arch]
    model = DualEncoder(AutoModel.from_config(config), AutoModel.from_config(config)).eval()
    ids, mask = torch.randint(3, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    lengths = [3, 3, 4, 6]
    c_ids = torch.randint(3, 100, (4, 6))
    c_mask = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths])
    c_ids = c_ids * c_mask + config.pad_token_id * (1 - c_mask)
    one = model(ids, mask, c_ids, c_mask)
    grouped = model(ids, mask, c_ids, c_mask, ((0, 2, 3), (2, 3, 4), (3, 4, 6)))
    assert torch.allclose(one, grouped, atol=1e-4)


def test_a_batch_without_concepts_gives_zero_loss_and_a_backward(tiny_model_dir):
    from transformers import AutoTokenizer

    from nuner_core.dual_encoder.annotated import Example
    from nuner_core.pretraining.data import build_vocab, encode
    from nuner_core.pretraining.loss import concept_bce
    from nuner_core.pretraining.targets import collate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [Example("a", "No entities here.", ()), Example("b", "None there either.", ())]
    vocab = build_vocab(tok, [examples], 8)
    batch = collate(encode(tok, examples, vocab, 16), torch.tensor([0, 1]).numpy(), vocab, tok.pad_token_id)
    model = DualEncoder(load_encoder(tiny_model_dir), load_encoder(tiny_model_dir))
    logits = model(batch.text_ids, batch.text_mask, batch.concept_ids, batch.concept_mask, batch.concept_groups)
    loss = concept_bce(logits, batch.targets, batch.token_mask, batch.concept_valid)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in model.concept_encoder.encoder.parameters())
