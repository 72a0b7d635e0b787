"""The two-encoder model as pre-training builds it: both encoders from the config, the text encoder's bottom frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn
from transformers import PreTrainedModel

from nuner_core.dual_encoder.model import DualEncoder, load_encoder
from nuner_core.stage_api import StageError

if TYPE_CHECKING:
    from nuner_core.pretraining.config import PretrainConfig


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers: the shallowest ModuleList with ``num_hidden_layers`` entries.

    Covers BERT/RoBERTa/ELECTRA/DeBERTa (``encoder.layer``), DistilBERT (``transformer.layer``),
    ModernBERT (``layers``) without naming them.
    """
    n = getattr(model.config, "num_hidden_layers", None)
    found = [(name.count("."), name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found:
        raise StageError(f"cannot find the {n} transformer layers of a {type(model).__name__}")
    return min(found, key=lambda x: (x[0], x[1]))[2]


def find_embeddings(model: nn.Module) -> nn.Module:
    """The embedding block (word, position, type embeddings and their norm), else the input embeddings."""
    emb = getattr(model, "embeddings", None)
    if isinstance(emb, nn.Module):
        return emb
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        raise StageError(f"a {type(model).__name__} has neither an embedding block nor input embeddings")
    found = get()
    if not isinstance(found, nn.Module):
        raise StageError(f"the input embeddings of a {type(model).__name__} are not a module")
    return found


def freeze(model: PreTrainedModel, num_layers: int) -> None:
    """Freeze the embeddings and the bottom ``num_layers`` layers."""
    layers = find_layers(model)
    if num_layers > len(layers):
        raise StageError(f"freeze_layers={num_layers} but the text encoder has only {len(layers)} layers")
    frozen = [find_embeddings(model), *layers[:num_layers]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def parameter_counts(model: DualEncoder) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in ("text_encoder", "concept_encoder"):
        params = list(getattr(model, name).parameters())
        counts[f"{name}_trainable_params"] = sum(p.numel() for p in params if p.requires_grad)
        counts[f"{name}_frozen_params"] = sum(p.numel() for p in params if not p.requires_grad)
    return counts


def freeze_unused_pooler(model: PreTrainedModel) -> None:
    """The pooler head is not used by the loss; frozen, so DDP sees no parameter without a gradient."""
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        for p in pooler.parameters():
            p.requires_grad_(False)


def build_model(cfg: PretrainConfig, attn_implementation: str = "sdpa") -> tuple[DualEncoder, dict[str, int]]:
    """Both encoders from the config (separate copies when they share a base), text encoder frozen per config."""
    text = load_encoder(cfg.base_model, attn_implementation)
    concept = load_encoder(cfg.concept_model or cfg.base_model, attn_implementation)
    freeze(text, cfg.freeze_layers)
    freeze_unused_pooler(text)
    freeze_unused_pooler(concept)
    model = DualEncoder(text, concept, cfg.similarity, cfg.temperature, cfg.learnable_bias, cfg.bias_init)
    return model, parameter_counts(model)
