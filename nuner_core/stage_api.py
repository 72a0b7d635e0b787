"""The contract between the pipeline and its stages.

A stage is a module (``nuner_core/<package>/stage.py``) that the registry
(``nuner_core.registry``) lists once, with its config class. It defines::

    CODE_VERSION = "1"                                  # bump when the stage's output changes
    def run(ctx: StageContext[MyConfig]) -> StageResult
    def fingerprint(config: MyConfig) -> object          # optional: input identity beyond the config
    def describe(config: MyConfig, inputs: Inputs) -> str  # optional: a title such as "annotate · 1,662 sentences"
    def upstream(config: MyConfig) -> tuple[str, ...]    # optional: the upstream stages this config reads
    def in_full_run(config: MyConfig) -> bool            # optional, for a target: built by a run of all stages?

Each of these is a ``Protocol`` below, and ``StageSpec`` checks a module against them when the
registry is imported, so a misspelt hook fails at import, not in the middle of a run.

``run`` writes its files into ``ctx.out_dir`` (published atomically after it returns) and
keeps resumable partial work in ``ctx.work_dir`` (kept across crashes, keyed like the
artifact); its inputs are ``ctx.inputs``, upstream artifacts by stage name. It never imports
Prefect: progress goes through ``ctx.progress``. Planning any run imports every stage module,
so heavy libraries are imported inside ``run``.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Literal, Mapping, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from nuner_core.store import ArtifactRef

C = TypeVar("C", bound=BaseModel)
Inputs = Mapping[str, ArtifactRef]  # upstream stage name -> its published artifact


class Progress(Protocol):
    def update(self, done: int, total: int | None, note: str = "") -> None:
        """Report that ``done`` of ``total`` units of work are finished."""


class LogProgress:
    """Logs progress at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, name: str, every_s: float = 5.0, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None):
        self.name = name
        self.every_s = every_s
        self.log = logger or logging.getLogger(f"nuner.{name}")
        self._last = 0.0

    def update(self, done: int, total: int | None, note: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and done != total:
            return
        self._last = now
        self.emit(done, total, note)

    def emit(self, done: int, total: int | None, note: str) -> None:
        share = f"{done:,}/{total:,} ({100 * done / total:.0f}%)" if total else f"{done:,}"
        self.log.info("%s: %s %s", self.name, share, note)


@dataclass(frozen=True)
class Report:
    """Something a user looks at: shown as a Prefect artifact and kept in the manifest.

    ``kind`` is ``markdown`` (content: text), ``table`` (content: list of row dicts) or
    ``image`` (content: a file path relative to the artifact directory).
    """

    kind: Literal["markdown", "table", "image"]
    key: str  # Prefect artifact key: lower-case letters, digits and dashes
    title: str
    content: Any

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "title": self.title, "content": self.content}


@dataclass
class StageContext(Generic[C]):
    config: C  # this stage's frozen config
    inputs: Inputs  # upstream stage name -> its artifact (``.dir``, ``.manifest()``)
    out_dir: Path  # write the artifact's files here
    work_dir: Path  # resumable scratch space, survives crashes, same key as the artifact
    cache_dir: Path  # <root>/cache: caches shared across runs and keys (LLM responses, encoder features)
    progress: Progress
    key: str = ""


@dataclass
class StageResult:
    rows: dict[str, int] = field(default_factory=dict)  # what was written, e.g. {"sentences": 1662}
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    headline: dict[str, Any] = field(default_factory=dict)  # the figures a user looks at first
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping in the manifest
    reports: list[Report] = field(default_factory=list)


class StageError(RuntimeError):
    """A stage cannot go on; the message tells the user what is wrong and what to do."""


# ---------------------------------------------------------------- the stage module contract


@runtime_checkable
class StageModule(Protocol):
    """What every stage module defines."""

    CODE_VERSION: str

    def run(self, ctx: StageContext[Any], /) -> StageResult: ...


@runtime_checkable
class Fingerprints(Protocol):
    """A stage whose output depends on files beyond its config (their identity enters the key)."""

    def fingerprint(self, config: Any, /) -> object: ...


@runtime_checkable
class Describes(Protocol):
    """A stage that names its task run from its config and what its inputs hold."""

    def describe(self, config: Any, inputs: Inputs, /) -> str: ...


@runtime_checkable
class ChoosesUpstream(Protocol):
    """A stage whose inputs depend on its config (an import reads no annotate artifact)."""

    def upstream(self, config: Any, /) -> tuple[str, ...]: ...


@runtime_checkable
class ConditionalTarget(Protocol):
    """A target stage that a run of all stages builds only when configured (fine-tuning, tagging)."""

    def in_full_run(self, config: Any, /) -> bool: ...


_HOOK_ARITY = {"run": 1, "fingerprint": 1, "describe": 2, "upstream": 1, "in_full_run": 1}


@dataclass(frozen=True)
class StageSpec(Generic[C]):
    """One registry line: a stage's name, module, config class and inputs."""

    name: str
    module: StageModule
    config: type[C]
    upstream: tuple[str, ...] = ()  # required inputs (a module's upstream(config) may narrow them)
    optional_upstream: tuple[str, ...] = ()  # read when present (evaluate <- pretrain)
    target: bool = False  # an end product: a run of all stages builds every target and what it reads

    def __post_init__(self) -> None:
        check_stage_module(self.name, self.module)

    @property
    def code_version(self) -> str:
        return self.module.CODE_VERSION

    @property
    def summary(self) -> str:
        """The first line of the stage module's docstring: what the stage does."""
        doc = inspect.getdoc(self.module) or self.name
        return doc.splitlines()[0]

    def config_of(self, pipeline: BaseModel) -> C:
        """This stage's section of a pipeline config."""
        section = getattr(pipeline, self.name)
        if not isinstance(section, self.config):  # the pipeline model declares each section with its stage's config class
            raise TypeError(f"pipeline config section {self.name!r} is a {type(section).__name__}, not a {self.config.__name__}")
        return section

    def inputs_for(self, config: C) -> tuple[str, ...]:
        """The upstream stages this stage reads under its ``config``."""
        if isinstance(self.module, ChoosesUpstream):
            return tuple(self.module.upstream(config))
        return self.upstream + self.optional_upstream

    def required_for(self, config: C) -> tuple[str, ...]:
        return tuple(u for u in self.inputs_for(config) if u not in self.optional_upstream)

    def in_full_run(self, config: C) -> bool:
        """Whether a run of all stages builds this stage (and so everything it reads)."""
        if not self.target:
            return False
        return self.module.in_full_run(config) if isinstance(self.module, ConditionalTarget) else True

    def fingerprint(self, config: C) -> object:
        return self.module.fingerprint(config) if isinstance(self.module, Fingerprints) else None

    def describe(self, config: C, inputs: Inputs) -> str:
        return self.module.describe(config, inputs) if isinstance(self.module, Describes) else self.name

    def run(self, ctx: StageContext[C]) -> StageResult:
        return self.module.run(ctx)


def check_stage_module(name: str, module: ModuleType | StageModule) -> None:
    """Fail at import when a stage module does not meet the contract (a misspelt or misshapen hook)."""
    if not isinstance(module, StageModule) or not isinstance(getattr(module, "CODE_VERSION", None), str):
        raise TypeError(f"stage {name!r}: {module!r} must define CODE_VERSION (a str) and run(ctx)")
    for hook, arity in _HOOK_ARITY.items():
        fn = getattr(module, hook, None)
        if fn is None:
            continue
        params = [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]
        if not callable(fn) or len(params) != arity:
            raise TypeError(f"stage {name!r}: {getattr(module, '__name__', module)}.{hook} must take {arity} argument(s)")
