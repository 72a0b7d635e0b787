"""The Prefect tasks: one per registered stage (``nuner_core.registry``), all made here.

Each is the same thin body (``tasks.common.execute``: build or reuse the artifact, show its
reports) under the stage's name, with the stage module's first docstring line as its
description, so a stage added to the registry gets its task without a line here.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from prefect import State, Task, task

from nuner_core.pipeline import PlannedStage
from nuner_core.registry import STAGES
from nuner_core.stage_api import StageSpec
from nuner_core.store import ArtifactRef
from tasks.common import STAGE_TASK_OPTIONS, execute

# A stage task: (the planned stage, the artifacts built so far in this run, the store's location) -> its artifact.
StageTask: TypeAlias = "Task[[PlannedStage, dict[str, ArtifactRef], str], ArtifactRef | State[Any]]"


def _stage_task(spec: StageSpec[Any]) -> StageTask:
    def stage_task(step: PlannedStage, built: dict[str, ArtifactRef], store_root: str) -> ArtifactRef | State[Any]:
        return execute(step, built, store_root)

    # Prefect's task key comes from the function's name: one per stage keeps their runs apart.
    stage_task.__name__ = stage_task.__qualname__ = spec.name
    stage_task.__doc__ = spec.summary
    return task(name=spec.name, description=spec.summary, **STAGE_TASK_OPTIONS)(stage_task)


STAGE_TASKS: dict[str, StageTask] = {s.name: _stage_task(s) for s in STAGES}
