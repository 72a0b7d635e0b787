"""The stages, in pipeline order: the one place a stage is listed.

The pipeline config (``nuner_core.config``), the planner (``nuner_core.pipeline``) and the
Prefect tasks (``tasks.stages``) all derive from ``STAGES``. Adding a stage is: its package
with a ``stage.py`` meeting ``nuner_core.stage_api.StageModule``, its config class, and one
line here. Each line is checked against the contract when this module is imported.
"""

from __future__ import annotations

from typing import Any

from nuner_core.annotation import stage as annotate
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.corpus import stage as corpus
from nuner_core.corpus.config import CorpusConfig
from nuner_core.dataset import stage as dataset
from nuner_core.dataset.config import DatasetConfig
from nuner_core.evaluation import stage as evaluate
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.finetuning import stage as finetune
from nuner_core.finetuning.config import FinetuneConfig
from nuner_core.pretraining import stage as pretrain
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.stage_api import StageError, StageSpec
from nuner_core.tagging import stage as tag
from nuner_core.tagging.config import TagConfig

STAGES: tuple[StageSpec[Any], ...] = (
    StageSpec("corpus", corpus, CorpusConfig),
    StageSpec("annotate", annotate, AnnotateConfig, upstream=("corpus",)),
    StageSpec("dataset", dataset, DatasetConfig, upstream=("annotate",)),  # none when importing a corpus
    StageSpec("pretrain", pretrain, PretrainConfig, upstream=("dataset",)),
    StageSpec("evaluate", evaluate, EvaluateConfig, optional_upstream=("pretrain",), target=True),  # configured encoders without it
    StageSpec("finetune", finetune, FinetuneConfig, upstream=("pretrain",), target=True),  # when finetune.data is set; + dataset to adapt the tagger
    StageSpec("tag", tag, TagConfig, upstream=("pretrain",), target=True),  # when tag.inputs and tag.labels are set
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def spec(name: str) -> StageSpec[Any]:
    for s in STAGES:
        if s.name == name:
            return s
    raise StageError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
