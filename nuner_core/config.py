"""The pipeline config (one section per registered stage), profiles and overrides.

Each stage's frozen config class lives in its own package; ``PipelineConfig`` has exactly one
field per registered stage, in pipeline order, written out so that type checkers see each
section's class (a test checks the fields against the registry).

A profile is a YAML file (shipped ones live in ``nuner_core/profiles/``). Overrides are
dotted keys (``pretrain.lr=1e-4``) given on the command line or as a flow parameter; their
values are parsed as YAML scalars. Every error names the offending key and where it came
from, so a typo in a 40-line profile is found in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import Field, ValidationError

from nuner_core.annotation.config import AnnotateConfig
from nuner_core.basemodel import StrictModel
from nuner_core.corpus.config import CorpusConfig
from nuner_core.dataset.config import DatasetConfig
from nuner_core.evaluation.config import EvaluateConfig
from nuner_core.finetuning.config import FinetuneConfig
from nuner_core.pretraining.config import PretrainConfig
from nuner_core.redaction import safe_message, shown_value
from nuner_core.tagging.config import TagConfig
from nuner_core.yamlfile import YAMLTooLarge, load_file, load_text

PROFILES_DIR = Path(__file__).parent / "profiles"


class ConfigError(ValueError):
    """A profile or override is invalid; the message names the key and its source.

    It is printed, logged and stored in a flow run's state: URL credentials it quotes are masked
    and its length is capped here, whatever raised it.
    """

    def __init__(self, message: str):
        super().__init__(safe_message(message))


class PipelineConfig(StrictModel):
    """The profile's name, then a section per stage of ``registry.STAGES`` (same names, same order) with its defaults."""

    profile: str  # the name of the profile this config was built from
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tag: TagConfig = Field(default_factory=TagConfig)


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(profile: str | Path) -> Path:
    """A shipped profile name (``demo``) or a path to a user's YAML file."""
    candidate = Path(profile)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"profile file {candidate} does not exist")
        return candidate
    shipped = PROFILES_DIR / f"{profile}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown profile {profile!r}; shipped profiles: {', '.join(shipped_profiles())}")
    return shipped


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` or ``{"a.b": 1}`` -> ``{"a.b": 1}`` with YAML-typed values."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            parsed[key.strip()] = load_text(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc, column_offset=len(key) + 1)})") from None
        except YAMLTooLarge as exc:
            raise ConfigError(f"override {key.strip()}: the value is refused: {exc}") from None
    return parsed


def _yaml_problem(exc: yaml.YAMLError, column_offset: int = 0) -> str:
    """``line L, column C: problem`` from a YAML error (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1 + column_offset}: {problem}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config(
    profile: str | Path = "demo",
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    overrides_source: str = "--set",
) -> PipelineConfig:
    """Build the pipeline config from a profile plus dotted overrides."""
    path = profile_path(profile)
    try:
        tree = load_file(path) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {path}: not valid YAML at {_yaml_problem(exc)}") from None
    except YAMLTooLarge as exc:
        raise ConfigError(f"profile {path}: refused: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path}: cannot be read ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"profile {path} must be a mapping of stage sections")
    tree.setdefault("profile", Path(profile).stem)
    parsed = parse_overrides(overrides)
    for dotted, value in parsed.items():
        _set_dotted(tree, dotted, value)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, parsed, overrides_source)) from None


def _explain(exc: ValidationError, path: Path, overrides: dict[str, Any], source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        # An override of a.b.c explains errors at a, a.b and a.b.c (an unknown section is reported at a).
        given = [o for o in overrides if o == key or o.startswith(key + ".") or key.startswith(o + ".")]
        origin = f"{source} {given[0]}" if given else f"profile {path}"
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {problem} (from {origin}; got {shown_value(err.get('input'))})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
