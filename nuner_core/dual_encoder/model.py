"""The two-encoder model: token vectors of a text encoder against concept vectors of a concept encoder.

Concept vectors are the **mean of the concept encoder's last hidden states over the name's
tokens** (attention mask, special tokens included). Why mean pooling: it exists for every
encoder (DeBERTa has no pooler, RoBERTa's pooler was never trained on a sentence task, the
[CLS] state of a model without next-sentence prediction carries little), every word of a
short name ("financial service") contributes, and it is how MiniLM (the demo base) was
trained to pool.

Similarity (the paper's "temperature before the sigmoid", two readings), with b a scalar:
    cosine:  z = tau * cos(h_t, c_k) + b     logits bounded in [-tau, tau] + b
    dot:     z = (h_t . c_k) / tau + b       logits scale with the vector norms
With ``learnable_bias`` b starts at ``bias_init`` (strongly negative: positives are rare)
and is trained; without it b = 0.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from nuner_core.models import resolve_model
from nuner_core.stage_api import StageError

log = logging.getLogger(__name__)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, L, D), (N, L) -> (N, D): mean of the hidden states over the unmasked tokens."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (N, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class DualEncoder(nn.Module):
    def __init__(
        self,
        text_encoder: PreTrainedModel,
        concept_encoder: PreTrainedModel,
        similarity: str = "cosine",
        temperature: float = 5.0,
        learnable_bias: bool = True,
        bias_init: float = -5.0,
    ):
        super().__init__()
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', not {similarity!r}")
        self.text_encoder = text_encoder
        self.concept_encoder = concept_encoder
        self.similarity = similarity
        self.temperature = temperature
        if learnable_bias:
            self.logit_bias = nn.Parameter(torch.tensor(float(bias_init)))
        else:
            self.register_buffer("logit_bias", torch.tensor(0.0))

    def forward(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        concept_ids: torch.Tensor,
        concept_mask: torch.Tensor,
        concept_groups: tuple[tuple[int, int, int], ...] | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, C) of every token of the batch against every concept of the batch.

        ``concept_groups`` (start, end, width) encode length-sorted concepts in a few calls with
        little padding; None encodes them all at once.
        """
        h = self.text_encoder(input_ids=text_ids, attention_mask=text_mask).last_hidden_state  # (B, T, D)
        if concept_groups is None or len(concept_groups) == 1:
            hc = self.concept_encoder(input_ids=concept_ids, attention_mask=concept_mask).last_hidden_state  # (C, L, D)
            c = mean_pool(hc, concept_mask)  # (C, D)
        else:  # word embeddings looked up once: one dense embedding gradient, not one per group
            embeds = self.concept_encoder.get_input_embeddings()(concept_ids)  # (C, L, D)
            pooled = []
            for start, end, width in concept_groups:
                mask = concept_mask[start:end, :width]  # (C_g, L_g)
                hc = self.concept_encoder(inputs_embeds=embeds[start:end, :width], attention_mask=mask).last_hidden_state
                pooled.append(mean_pool(hc, mask))  # (C_g, D)
            c = torch.cat(pooled)  # (C, D)
        h, c = h.float(), c.float()  # similarities in fp32 under bf16 autocast
        if self.similarity == "cosine":
            logits = self.temperature * torch.einsum("btd,cd->btc", F.normalize(h, dim=-1), F.normalize(c, dim=-1))
        else:
            logits = torch.einsum("btd,cd->btc", h, c) / self.temperature
        return logits + self.logit_bias  # (B, T, C)


# ---------------------------------------------------------------- loading


def check_encoder_config(config: PretrainedConfig, reference: str) -> None:
    """Refuse models that are not bidirectional encoders (GPT-2, Llama, T5, BART...)."""
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise StageError(
            f"base model {reference!r} is a {config.model_type!r} model, not an encoder: pre-training needs a "
            "bidirectional encoder such as BERT, RoBERTa, DeBERTa, ELECTRA or MiniLM"
        )


def load_encoder(reference: str, attn_implementation: str = "sdpa") -> PreTrainedModel:
    path = resolve_model(reference)
    config = AutoConfig.from_pretrained(path)
    check_encoder_config(config, reference)
    try:
        model: PreTrainedModel = AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
    except (ValueError, ImportError) as exc:  # the architecture has no SDPA kernel (DeBERTa): eager attention
        log.info("%s: %s attention unavailable (%s); using eager", reference, attn_implementation, exc)
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
    return model
