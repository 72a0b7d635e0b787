"""Planning (keys and inputs) and running one stage into the store.

Planning happens before anything runs, in one direction:

1. every stage's *config key*, in pipeline order: a hash of its code version, its config,
   its input fingerprint and the config keys of its upstream stages. Each fingerprint is
   computed once per plan (the annotate stage hashes its whole import file).
2. for each stage of this run, its inputs: a stage built in this run passes its key on; a
   stage that is not part of this run is taken from the store: the artifact the current
   config would produce (its config key) if it exists, else the latest artifact of that
   stage. A stage's final key is computed from the keys of the inputs it will really read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel

from nuner_core.basemodel import is_run_only, legacy_value
from nuner_core.config import PipelineConfig
from nuner_core.registry import STAGE_NAMES, STAGES, spec
from nuner_core.stage_api import (
    LogProgress,
    Progress,
    StageContext,
    StageError,
    StageSpec,
)
from nuner_core.store import INCOMPLETE, ArtifactRef, ArtifactStore, artifact_key

log = logging.getLogger(__name__)


def key_config(config: BaseModel) -> dict[str, Any]:
    """The part of a stage config that determines its output.

    Fields declared with ``basemodel.run_only`` (rate limits, progress
    intervals, device placement...) change how a stage runs, not what it produces.
    Nested models count too (the evaluation's LLMs carry the annotate stage's endpoint,
    limits and budget fields): their run-only fields are left out at any depth. A field declared
    with ``basemodel.added`` is left out while it holds its legacy value (the behaviour from
    before it existed), so the artifacts made before it keep their keys.
    """
    return _keyed_model(config, config.model_dump(mode="json"))


def _keyed_model(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """``dumped`` (the JSON dump of ``model``) without the model's run-only fields and legacy-valued added fields, at any depth."""
    out: dict[str, Any] = {}
    for name, item in dumped.items():
        info = type(model).model_fields.get(name)
        if info is not None and (is_run_only(info) or legacy_value(info) == (True, item)):
            continue
        out[name] = _keyed(getattr(model, name, None), item)
    return out


def _keyed(value: Any, dumped: Any) -> Any:
    """``dumped`` (the JSON dump of ``value``) without the run-only fields of any model inside it."""
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        return _keyed_model(value, dumped)
    if isinstance(value, (list, tuple)) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_keyed(v, d) for v, d in zip(value, dumped)]
    if isinstance(value, dict) and isinstance(dumped, dict):
        return {k: _keyed(value.get(k), d) for k, d in dumped.items()}
    return dumped


class MissingInput(StageError):
    pass


@dataclass(frozen=True)
class PlannedStage:
    """Everything needed to run one stage; small and serialisable (a Prefect task parameter)."""

    stage: str
    key: str
    config: PipelineConfig
    inputs: dict[str, ArtifactRef] = field(default_factory=dict)  # upstream artifacts not built in this run
    upstream_keys: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> StageSpec[Any]:
        return spec(self.stage)

    @property
    def stage_config(self) -> BaseModel:
        section = self.spec.config_of(self.config)
        assert isinstance(section, BaseModel)  # config_of checks it against the stage's config class
        return section


def plan(config: PipelineConfig, stages: Iterable[str] | None, store: ArtifactStore) -> list[PlannedStage]:
    """Keys and inputs for the requested stages, in pipeline order."""
    for name in stages or ():
        spec(name)  # unknown names fail here, before anything runs
    # "All stages" means every target stage this config asks for, and everything they read.
    wanted = set(stages) if stages else set(chain_to([s.name for s in STAGES if s.in_full_run(s.config_of(config))], config))
    needed = set(chain_to(wanted, config))

    # 1. config keys (and each fingerprint, once)
    fingerprints: dict[str, object] = {}
    config_keys: dict[str, str] = {}
    for s in STAGES:
        if s.name in needed:
            fingerprints[s.name] = s.fingerprint(s.config_of(config))
            upstream = {up: config_keys[up] for up in s.inputs_for(s.config_of(config))}
            config_keys[s.name] = _key(s, config, fingerprints[s.name], upstream)

    # 2. inputs of this run's stages, and their final keys
    keys: dict[str, str] = {}
    planned: list[PlannedStage] = []
    for s in STAGES:
        if s.name not in wanted:
            continue
        stage_cfg = s.config_of(config)
        inputs: dict[str, ArtifactRef] = {}
        upstream_keys: dict[str, str] = {}
        for up in s.inputs_for(stage_cfg):
            if up in wanted:
                upstream_keys[up] = keys[up]
                continue
            ref = _from_store(up, config_keys[up], store)
            if ref is None:
                if up not in s.required_for(stage_cfg):
                    continue
                raise MissingInput(
                    f"stage {s.name!r} needs a {up!r} artifact and none exists in {store.location}; "
                    f"run the {up!r} stage first (add it to stages) or set NUNER_DATA_DIR"
                )
            inputs[up] = ref
            upstream_keys[up] = ref.key
        keys[s.name] = _key(s, config, fingerprints[s.name], upstream_keys)
        planned.append(PlannedStage(s.name, keys[s.name], config, inputs, upstream_keys))
    return planned


def _key(s: StageSpec[Any], config: PipelineConfig, fingerprint: object, upstream_keys: dict[str, str]) -> str:
    payload = {"config": key_config(s.config_of(config)), "fingerprint": fingerprint}
    return artifact_key(s.name, s.code_version, payload, upstream_keys)


def _from_store(stage: str, config_key: str, store: ArtifactStore) -> ArtifactRef | None:
    """The artifact the current config would build, if present; else the latest one.

    Found, not fetched: on object storage the files are downloaded only when a stage that
    reads them runs (``run_stage``), so a run whose stages are all ``Cached`` downloads nothing.
    """
    ref = store.lookup(stage, config_key, verify=True, fetch=False)
    if ref is not None:
        return ref
    ref = store.latest(stage, fetch=False)
    if ref is not None:
        log.info("using the latest %s artifact %s (none matches the current config)", stage, ref.key)
    return ref


def chain_to(stages: Iterable[str], config: PipelineConfig) -> list[str]:
    """``stages`` and every stage they read under ``config``, transitively, in pipeline order."""
    needed = set(stages)
    for s in reversed(STAGES):
        if s.name in needed:
            needed.update(s.inputs_for(s.config_of(config)))
    return [name for name in STAGE_NAMES if name in needed]


def stage_inputs(step: PlannedStage, built: dict[str, ArtifactRef]) -> dict[str, ArtifactRef]:
    """The artifacts a stage reads: from the store (planned) or built earlier in this run."""
    reads = step.spec.inputs_for(step.stage_config)
    return {**step.inputs, **{k: v for k, v in built.items() if k in reads}}


def title(step: PlannedStage, built: dict[str, ArtifactRef]) -> str:
    """What a stage run does, in words (``annotate · 1,662 sentences · offline``), from its describe()."""
    return step.spec.describe(step.stage_config, stage_inputs(step, built))


def run_stage(
    step: PlannedStage,
    built: dict[str, ArtifactRef],
    store: ArtifactStore,
    progress: Progress | None = None,
) -> ArtifactRef:
    """Build one stage's artifact (or return it when it already exists and is final).

    ``built`` maps upstream stage names to artifacts made earlier in this run. An existing
    artifact is checked byte for byte first (a damaged one is moved aside and rebuilt); one
    published incomplete (annotation with failed sentences) is built again, which redoes only
    what is missing. Inputs are verified before the stage reads them, and a read error in
    one becomes a message naming the file and the stage to rerun.

    With the store on object storage the stage still works on local files: its inputs are
    fetched first (downloaded once per machine), its resumable work is pulled from the store
    and pushed back at checkpoints (``store.working``), and its artifact is uploaded when
    published.
    """
    existing = store.lookup(step.stage, step.key, verify=True, fetch=False)
    if existing is not None and existing.incomplete is None:
        return existing
    s = step.spec
    stage_cfg = step.stage_config
    inputs = {name: store.fetch(ref) for name, ref in stage_inputs(step, built).items()}
    missing = [up for up in s.required_for(stage_cfg) if up not in inputs]
    if missing:
        raise MissingInput(f"stage {step.stage!r} is missing its input(s) {missing}")
    manifest: dict[str, Any] = {
        "stage": step.stage,
        "key": step.key,
        "title": title(step, built),
        "profile": step.config.profile,
        "config": stage_cfg.model_dump(mode="json"),
        "upstream": {k: v.key for k, v in inputs.items()},
        "code_version": s.code_version,
    }
    started = time.time()
    with store.publish(step.stage, step.key, manifest) as out_dir, store.working(step.stage, step.key) as work_dir:
        ctx = StageContext(
            config=stage_cfg,
            inputs=inputs,
            out_dir=out_dir,
            work_dir=work_dir,
            cache_dir=store.cache_dir,
            progress=progress or LogProgress(step.stage),
            key=step.key,
        )
        with store.reading(inputs):
            result = s.run(ctx)
        manifest.update(
            rows=result.rows,
            dropped=result.dropped,
            headline=result.headline,
            timings={"wall_s": round(time.time() - started, 3)},
            reports=[r.as_dict() for r in result.reports],
            **result.extra,
        )
        unfinished = {name: ref.key for name, ref in inputs.items() if ref.incomplete}
        if unfinished and not manifest.get(INCOMPLETE):  # built on partial input: not final either
            manifest[INCOMPLETE] = {"inputs": unfinished, "why": "an input artifact was incomplete when this was built"}
    store.finish_work(step.stage, step.key, final=not manifest.get(INCOMPLETE))  # resumable scratch: not needed once final
    ref = store.lookup(step.stage, step.key)
    if ref is None:
        raise StageError(f"stage {step.stage!r}: its artifact {step.key} vanished right after it was published")
    return ref
