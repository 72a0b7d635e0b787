"""The experiment file: a sweep of pipeline overrides, what to report, and the figure.

An experiment file is YAML::

    name: concept-diversity                 # names the artifact's reports; letters, digits, - and _
    description: Paper §5.2 / Figure 9 ...  # free text, shown in summary.md
    profile: demo                           # base profile: a shipped name or a YAML path (relative to this file)
    overrides:                              # fixed overrides, dotted keys as `nuner run --set`
      pretrain.controls: []
    sweep:                                  # swept keys, each with its list of values
      dataset.top_concepts: [4, 16, 64, 256, null]
    mode: grid                              # grid: the product of the swept keys; zip: the i-th values together
    report: {protocol: frozen, k: 8, benchmarks: null, encoder: nuner}   # or {stage: finetune}: the finetune stage's test F1
    figure: {x: dataset.top_concepts, y: f1, log_x: true}
    max_parallel: null                      # points at once; null: 1 without a GPU, else the GPU count

Every error names the key it is about (``sweep.dataset.top_conceps: not a key of the
pipeline config``), and ``validate`` loads the pipeline config of every point, so a
sweep whose third value is ill-typed fails before the first point runs. The points are
counted before they are expanded: more than ``max_points`` (default 1,000) is refused.

URL credentials never pass the loading: the spec holds every URL redacted (so do the artifact,
the points' flow parameters and every message); an LLM's credentialed ``base_url`` is kept
aside (``Experiment.credentials``) for the flow to hand over, and credentials anywhere else
are refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from nuner_core.annotation.config import endpoint_urls
from nuner_core.basemodel import Int, StrictModel
from nuner_core.config import ConfigError, PipelineConfig, load_config
from nuner_core.hashing import short_hash
from nuner_core.redaction import credentialed_urls, redact_values, safe_message, shown_value
from nuner_core.yamlfile import YAMLTooLarge, load_file

MAX_POINTS = 1000  # points of one experiment unless the caller allows more (nuner experiment --max-points)


class ExperimentError(ValueError):
    """An experiment file is invalid; the message names the file and the key (URL credentials masked, length capped)."""

    def __init__(self, message: str):
        super().__init__(safe_message(message))


class ReportSpec(StrictModel):
    # the stage a point is done at and collated from: evaluate (protocol, k, benchmarks, encoder below), or
    # finetune (each point's entity F1 per seed from its finetune artifact, base beside it; the fields below unused)
    stage: Literal["evaluate", "finetune"] = "evaluate"
    protocol: Literal["frozen", "finetune"] = "frozen"  # which evaluation protocol's scores to collate
    k: Int = Field(default=8, ge=1)  # the few-shot k of the figure and table (the paper's ablations: 8)
    benchmarks: tuple[str, ...] | None = None  # benchmark names to report; None: every evaluated one
    encoder: str = "nuner"  # the pre-trained encoder plotted against its base (a pretrain run name)


class FigureSpec(StrictModel):
    x: str | None = None  # the swept key on the x axis; None: the first swept key
    y: Literal["f1", "gain"] = "f1"  # f1: F1 (%) of the encoder; gain: F1 minus its base's F1 (paired by sampling)
    log_x: bool = False  # logarithmic x axis (numeric values only)
    title: str | None = None  # figure title; None: the experiment's name


class ExperimentSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # names the reports and the figure file
    description: str = ""  # what the experiment shows and how it departs from the paper
    profile: str = "demo"  # base profile: shipped name or YAML path (a relative path is relative to the file)
    overrides: dict[str, Any] = Field(default_factory=dict)  # fixed dotted overrides of every point
    sweep: dict[str, list[Any]]  # swept dotted key -> its values (null where the setting means "all")
    mode: Literal["grid", "zip"] = "grid"  # grid: product of the swept keys; zip: their i-th values together
    labels: list[str] | None = None  # the points' names in point order (table, figure); None: from the swept values
    report: ReportSpec = Field(default_factory=ReportSpec)  # what the table and figure show
    figure: FigureSpec = Field(default_factory=FigureSpec)  # the figure's axes
    max_parallel: Int | None = Field(default=None, ge=1)  # points at once; None: 1 without a GPU, else the GPU count

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not sweep:
            raise ValueError("sweep names no key: give at least one dotted key with a list of values")
        return sweep

    @property
    def x_key(self) -> str:
        return self.figure.x or next(iter(self.sweep))


@dataclass(frozen=True)
class Point:
    """One pipeline run of an experiment: its swept values and the overrides they make."""

    index: int
    values: dict[str, Any]  # swept key -> value
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed overrides plus the swept values
    name: str | None = None  # the file's label for it

    @property
    def label(self) -> str:
        """The file's label, else ``top_concepts=16`` (the last part of each swept key), ``all`` for null."""
        if self.name:
            return self.name
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in self.values.items())


def format_value(value: Any) -> str:
    if value is None:
        return "all"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and abs(value) >= 1000:  # 1500 -> 1.5k, 80000 -> 80k, 1000000 -> 1M: the paper's labels
        for unit, size in (("M", 1_000_000), ("k", 1000)):
            if abs(value) >= size and value % (size // 10) == 0:
                return f"{value / size:g}{unit}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: the spec, where it came from, its content hash and its points."""

    spec: ExperimentSpec
    source: str  # the file it was read from ("<inline>" for a mapping)
    profile: str  # the base profile as the pipeline takes it (a relative path made absolute)
    content_hash: str  # of the normalised spec: the experiment artifact's key includes it
    points: tuple[Point, ...]
    # (where, URL as given) of each credentialed LLM base_url, redacted in the spec: for the flow to hand over
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)

    def endpoints(self, deployment: str | None = None) -> tuple[str, ...]:
        """The credentialed LLM base_urls for ``annotation.config.hand_over`` (ExperimentError where none can be)."""
        try:
            return endpoint_urls(self.credentials, deployment=deployment)
        except ValueError as exc:
            raise ExperimentError(f"{self.source}: {exc}") from None


# ---------------------------------------------------------------- loading and validation


def load_experiment(source: str | Path | Mapping[str, Any], max_points: int | None = None) -> Experiment:
    """Read, validate and expand an experiment file (or an already parsed mapping) of at most ``max_points`` points."""
    if isinstance(source, Mapping):
        raw, where, base_dir = dict(source), "<inline>", Path.cwd()
    else:
        path = Path(source)
        where, base_dir = str(path), path.resolve().parent
        raw = _read(path)
    credentials = tuple(credentialed_urls({k: raw.get(k) for k in ("overrides", "sweep")}))
    try:
        endpoint_urls(credentials)
    except ValueError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    try:
        spec = ExperimentSpec.model_validate(redact_values(raw))
    except ValidationError as exc:
        raise ExperimentError(f"{where}: invalid experiment:\n  " + "\n  ".join(_explain(e) for e in exc.errors())) from None
    experiment = validate(spec, where, base_dir, max_points=max_points)
    return dataclasses.replace(experiment, credentials=credentials)


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = load_file(path)
    except FileNotFoundError:
        raise ExperimentError(f"experiment file {path} does not exist") from None
    except YAMLTooLarge as exc:
        raise ExperimentError(f"experiment file {path}: refused: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"experiment file {path}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ExperimentError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: an experiment file is a mapping (name, profile, sweep, ...)")
    return raw


def _explain(err: Any) -> str:
    loc = list(err["loc"])
    key = ".".join(str(p) for p in loc)
    # A swept key's values are a list under the key: name the dotted key as it is written.
    if loc and loc[0] == "sweep" and len(loc) >= 2:
        key = f"sweep.{loc[1]}" + (f"[{loc[2]}]" if len(loc) > 2 else "")
    if err["type"] == "extra_forbidden":
        sections: dict[tuple[Any, ...], type[BaseModel]] = {(): ExperimentSpec, ("report",): ReportSpec, ("figure",): FigureSpec}
        known = sections.get(tuple(loc[:-1]))
        hint = f"; known keys: {', '.join(known.model_fields)}" if known else ""
        return f"{key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{key}: required"
    return f"{key}: {err['msg']} (got {shown_value(err.get('input'))})"


def resolve_profile(profile: str, base_dir: Path) -> str:
    """A shipped profile name stays a name; a YAML path is made absolute (relative to the file)."""
    candidate = Path(profile)
    if candidate.suffix in {".yaml", ".yml"} and not candidate.is_absolute():
        return str((base_dir / candidate).resolve())
    return profile


def validate(spec: ExperimentSpec, source: str = "<inline>", base_dir: Path | None = None, max_points: int | None = None) -> Experiment:
    """Check the spec against the pipeline config and expand its points (at most ``max_points``, default ``MAX_POINTS``)."""
    where = source
    _check_size(spec, where, MAX_POINTS if max_points is None else max_points)
    problems: list[str] = []
    for key, values in spec.sweep.items():
        if not values:
            problems.append(f"sweep.{key}: empty list of values")
        if not is_config_key(key):
            problems.append(f"sweep.{key}: not a key of the pipeline config ({_near(key)})")
        elif key in spec.overrides:
            problems.append(f"sweep.{key}: also a fixed override; set it in one place")
        # zip: a value recurs across points (the same data set with two methods); what must not recur is a point
        if spec.mode == "grid" and len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            problems.append(f"sweep.{key}: a value is listed twice")
    for key in spec.overrides:
        if not is_config_key(key):
            problems.append(f"overrides.{key}: not a key of the pipeline config ({_near(key)})")
    if spec.mode == "zip" and len({len(v) for v in spec.sweep.values()}) > 1:
        lengths = ", ".join(f"{k}: {len(v)}" for k, v in spec.sweep.items())
        problems.append(f"mode: zip needs value lists of one length ({lengths})")
    elif spec.mode == "zip":
        seen: dict[str, int] = {}
        for i, combo in enumerate(zip(*spec.sweep.values())):
            first = seen.setdefault(json.dumps(combo, sort_keys=True, default=str), i)
            if first != i:
                problems.append(f"sweep: point {i} has the same values as point {first}")
    n_points = len(next(iter(spec.sweep.values()))) if spec.mode == "zip" else _product(len(v) for v in spec.sweep.values())
    if spec.labels is not None and len(spec.labels) != n_points:
        problems.append(f"labels: {len(spec.labels)} labels for {n_points} points")
    if spec.figure.x is not None and spec.figure.x not in spec.sweep:
        problems.append(f"figure.x: {spec.figure.x!r} is not a swept key (swept: {', '.join(spec.sweep)})")
    if problems:
        raise ExperimentError(f"{where}: invalid experiment:\n  " + "\n  ".join(problems))

    profile = resolve_profile(spec.profile, base_dir or Path.cwd())
    points = expand(spec)
    for point in points:  # every point's pipeline config must load, and must report what is asked
        try:
            config = load_config(profile, point.overrides, overrides_source=f"point {point.index} ({point.label}):")
        except ConfigError as exc:
            problems.append(f"profile {spec.profile!r} with point {point.index} ({point.label}): {exc}")
            continue
        problems += _check_report(spec, config, point)
        if len(problems) > 5:
            break
    if problems:
        raise ExperimentError(f"{where}: invalid experiment:\n  " + "\n  ".join(problems))
    return Experiment(spec, source, profile, content_hash(spec), tuple(points))


def _check_size(spec: ExperimentSpec, where: str, max_points: int) -> None:
    """Refuse more points than allowed, counted before anything is expanded or loaded per point."""
    sizes = [len(v) for v in spec.sweep.values()]
    n_points = min(sizes) if spec.mode == "zip" else _product(sizes)
    if n_points > max_points:
        raise ExperimentError(
            f"{where}: {n_points:,} points ({' x '.join(map(str, sizes)) if spec.mode == 'grid' else spec.mode}), "
            f"more than the {max_points:,} allowed: check the sweep, or allow more with --max-points "
            f"(nuner experiment) or the flow's max_points parameter"
        )


def _check_report(spec: ExperimentSpec, config: Any, point: Point) -> list[str]:
    if spec.report.stage == "finetune":  # a full run fine-tunes only with labelled data
        if config.finetune.data is None:
            return [f"report.stage: finetune, but finetune.data is not set for point {point.index} ({point.label})"]
        return []
    evaluate = config.evaluate
    protocol = getattr(evaluate, spec.report.protocol)
    where = f"point {point.index} ({point.label})"
    out = []
    if not protocol.enabled:
        out.append(f"report.protocol: {spec.report.protocol!r} is not enabled for {where}; set evaluate.{spec.report.protocol}.enabled: true")
    if spec.report.k not in protocol.ks:
        out.append(f"report.k: {spec.report.k} is not among evaluate.{spec.report.protocol}.ks {list(protocol.ks)} of {where}")
    names = [_benchmark_name(b) for b in evaluate.benchmarks]
    for name in spec.report.benchmarks or ():
        if name not in names:
            out.append(f"report.benchmarks: {name!r} is not among the evaluated benchmarks {names} of {where}")
    if not evaluate.use_pretrain:
        out.append(f"evaluate.use_pretrain is false for {where}: the experiment compares the pre-trained encoder with its base")
    return out


def _benchmark_name(item: Any) -> str:
    from nuner_core.evaluation.benchmarks import resolve_spec
    from nuner_core.stage_api import StageError

    try:
        return resolve_spec(item).name
    except StageError:  # the evaluate stage reports an unknown benchmark itself
        return str(item)


def expand(spec: ExperimentSpec) -> list[Point]:
    """The points: the product of the swept values (grid) or their i-th values together (zip)."""
    keys = list(spec.sweep)
    if spec.mode == "zip":
        combos = list(zip(*(spec.sweep[k] for k in keys)))
    else:
        combos = list(itertools.product(*(spec.sweep[k] for k in keys)))
    points = []
    for index, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        name = spec.labels[index] if spec.labels and index < len(spec.labels) else None
        points.append(Point(index, values, {**spec.overrides, **values}, name))
    return points


def _product(sizes: Any) -> int:
    n = 1
    for size in sizes:
        n *= size
    return n


def content_hash(spec: ExperimentSpec) -> str:
    """Hash of what the experiment asks for (``max_parallel`` aside: it changes how, not what)."""
    payload = spec.model_dump(mode="json", exclude={"max_parallel"}, exclude_defaults=True)  # a new optional field changes no hash
    return short_hash(json.dumps(payload, sort_keys=True, separators=(",", ":")))


# ---------------------------------------------------------------- dotted keys of the pipeline config


def is_config_key(dotted: str) -> bool:
    """Whether ``dotted`` names a field of the pipeline config (walking nested config models).

    Below a field that is not a config model (a mapping, a list, a union of specs) any
    deeper path is accepted here and checked when the point's config is loaded.
    """
    model: type[BaseModel] | None = PipelineConfig
    for part in dotted.split("."):
        if model is None:
            return True
        fields = model.model_fields
        if part not in fields:
            return False
        model = _model_of(fields[part].annotation)
    return True


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:  # Optional[Model] -> Model; other generics: not walked
        models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        others = [a for a in get_args(annotation) if a is not type(None) and a not in models]
        if len(models) == 1 and not others:
            return models[0]
    return None


def _near(dotted: str) -> str:
    """What exists where the path goes wrong: ``dataset has: source, path, ...``."""
    model: type[BaseModel] | None = PipelineConfig
    walked: list[str] = []
    for part in dotted.split("."):
        if model is None or part not in model.model_fields:
            break
        walked.append(part)
        model = _model_of(model.model_fields[part].annotation)
    if model is None:
        return "unknown key"
    names = [n for n in model.model_fields if n != "profile"]
    return f"{'.'.join(walked) or 'the config'} has: {', '.join(names)}"
