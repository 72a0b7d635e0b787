"""The two-encoder objective as another stage continues it (``finetune.method: dual_encoder``).

One named contract instead of reaching into pre-training's modules: the data layout and batching
(``data``), the targets (``targets``), the loss (``loss``), the optimiser (``train``) and the
freezing of layers (``build``), exactly the code pre-training runs.
"""

from nuner_core.pretraining.build import freeze, freeze_unused_pooler
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.pretraining.data import ConceptVocab, Encoded, Layout, build_vocab, encode, epoch_micro_batches, make_layout
from nuner_core.pretraining.loss import concept_bce
from nuner_core.pretraining.targets import Batch, collate
from nuner_core.pretraining.train import make_optimizer

__all__ = [
    "Batch", "ConceptVocab", "Encoded", "Layout", "PretrainConfig", "build_vocab", "collate", "concept_bce", "encode",
    "epoch_micro_batches", "freeze", "freeze_unused_pooler", "make_layout", "make_optimizer",
]  # fmt: skip
