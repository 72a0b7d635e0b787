"""The optimiser's view of a token classifier: per-layer learning rates and re-initialised top layers.

A pre-trained encoder's layers are not equally worth moving: the bottom ones hold general
features, the top ones the pre-training objective's. ``layer_decay`` < 1 gives layer ``i`` of
``L`` (embeddings: 0, transformer blocks: 1..L) the encoder rate times ``layer_decay ** (L - i)``;
parameters outside the blocks and the embeddings (a pooler, a final norm) count as the top.
``reinit_top_layers`` draws the top blocks afresh (normal(0, initializer_range) matrices, zero
biases, unit norms), as the encoder's own initialisation would: the layers the pre-training
specialised most start over, the ones below are kept.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from nuner_core.token_classifier.config import TrainingConfig

_BLOCK = re.compile(r"(?:^|\.)layers?\.(\d+)\.")  # encoder.layer.3.attention... (BERT, RoBERTa), layers.3. (others)


def block_index(name: str) -> int | None:
    """The transformer block a parameter name belongs to (0 = bottom), or None (embeddings, pooler, ...)."""
    match = _BLOCK.search(name)
    return int(match.group(1)) if match else None


def encoder_blocks(encoder: Any) -> list[torch.nn.Module]:
    """The encoder's transformer blocks, bottom to top (the ModuleList the block names point into)."""
    owners = {name.rsplit(".", 1)[0] for name, _ in encoder.named_modules() if block_index(name + ".") is not None and name.rsplit(".", 1)[-1].isdigit()}
    if len(owners) != 1:
        raise ValueError(f"cannot tell the encoder's transformer blocks apart: candidate lists {sorted(owners)}")
    blocks = encoder.get_submodule(owners.pop())
    return list(blocks)


def depth(name: str, n_blocks: int) -> int:
    """0 for the embeddings, i + 1 for block i, ``n_blocks`` (the top) for anything else."""
    index = block_index(name)
    if index is not None:
        return index + 1
    return 0 if "embeddings" in name else n_blocks


def param_groups(model: Any, cfg: TrainingConfig) -> list[dict[str, Any]]:
    """Encoder: ``lr`` (times ``layer_decay`` per block below the top), weight decay on matrices only; the fresh head: ``head_lr``."""
    encoder = model.base_model
    encoder_ids = {id(p) for p in encoder.parameters()}
    head = [p for p in model.parameters() if id(p) not in encoder_ids]
    n_blocks = len(encoder_blocks(encoder)) if cfg.layer_decay != 1.0 else 0
    by_rate: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in encoder.named_parameters():
        rate = cfg.lr * cfg.layer_decay ** (n_blocks - depth(name, n_blocks)) if n_blocks else cfg.lr
        by_rate.setdefault((rate, p.ndim >= 2), []).append(p)
    # Without decay: the same three groups as ever (decayed matrices, the rest, the head), so old checkpoints resume.
    groups = [{"params": ps, "lr": rate, "weight_decay": cfg.weight_decay if matrix else 0.0}
              for (rate, matrix), ps in sorted(by_rate.items(), key=lambda item: (-item[0][0], not item[0][1]))]  # fmt: skip
    return [*groups, {"params": head, "lr": cfg.head_lr, "weight_decay": cfg.weight_decay}]


@torch.no_grad()
def reinit_top_blocks(encoder: Any, count: int) -> None:
    """Draw the top ``count`` transformer blocks' weights afresh (from torch's current RNG state)."""
    if count <= 0:
        return
    blocks = encoder_blocks(encoder)
    if count > len(blocks):
        raise ValueError(f"reinit_top_layers={count} but the encoder has only {len(blocks)} layers")
    std = float(getattr(encoder.config, "initializer_range", 0.02))
    for block in blocks[-count:]:
        for module in block.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif any(True for _ in module.parameters(recurse=False)):
                raise ValueError(f"reinit_top_layers: no initialisation known for {type(module).__name__} in the encoder's blocks")
