import math
import re
from typing import Annotated, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from nuner_core.config import ConfigError, PipelineConfig, load_config, parse_overrides, shipped_profiles


@pytest.mark.parametrize("profile", shipped_profiles())
def test_every_shipped_profile_loads(profile):
    config = load_config(profile)
    assert isinstance(config, PipelineConfig)
    assert config.profile == profile


def test_pipeline_config_has_one_section_per_registered_stage():
    """Adding a stage to the registry without its section in PipelineConfig (or the other way round) fails here."""
    from nuner_core.registry import STAGES

    fields = PipelineConfig.model_fields
    assert list(fields) == ["profile", *(s.name for s in STAGES)]  # same names, pipeline order
    for s in STAGES:
        assert fields[s.name].annotation is s.config, f"PipelineConfig.{s.name} is not typed {s.config.__name__}"
        assert fields[s.name].default_factory is s.config, f"PipelineConfig.{s.name} does not default to {s.config.__name__}()"


def test_shipped_profiles_include_paper_and_demo():
    assert {"paper", "demo"} <= set(shipped_profiles())


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["corpus.seed=7"], 7),
        ({"corpus.seed": 11}, 11),
        (["corpus.seed= 3"], 3),
    ],
)
def test_overrides_are_typed(overrides, expected):
    assert load_config("demo", overrides).corpus.seed == expected


def test_override_of_nested_list_value():
    config = load_config("demo", ["corpus.num_sentences=100", "corpus.min_letter_ratio=0.5"])
    assert config.corpus.num_sentences == 100
    assert config.corpus.min_letter_ratio == 0.5


@pytest.mark.parametrize(
    "overrides, must_mention",
    [
        (["corpus.sed=7"], ["corpus.sed", "unknown key", "--set corpus.sed"]),
        (["corpus.seed=seven"], ["corpus.seed", "--set corpus.seed", "seven"]),
        (["corpuz.seed=1"], ["corpuz", "unknown key"]),
        (["corpus.min_words=0"], ["corpus.min_words", "greater than or equal to 1"]),
    ],
)
def test_bad_override_names_key_and_source(overrides, must_mention):
    with pytest.raises(ConfigError) as err:
        load_config("demo", overrides)
    for text in must_mention:
        assert text in str(err.value)


def test_bad_key_in_profile_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("corpus:\n  seeed: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "corpus.seeed" in str(err.value) and str(path) in str(err.value)


def test_user_profile_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("corpus:\n  seed: 5\n  num_sentences: 10\n")
    config = load_config(path)
    assert (config.profile, config.corpus.seed, config.corpus.num_sentences) == ("mine", 5, 10)


@pytest.mark.parametrize("bad", ["noequals", "=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides([bad])


def test_unknown_profile_lists_shipped_ones():
    with pytest.raises(ConfigError, match="demo"):
        load_config("nonesuch")


def test_configs_are_frozen():
    config = load_config("demo")
    with pytest.raises(ValidationError):
        config.corpus.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["annotate.model=[unclosed"], r"override 'annotate.model=\[unclosed': the value is not valid YAML \(line 1, column 25"),
        (["nosuchstage.x=1"], r"nosuchstage: unknown key \(from --set nosuchstage.x;"),
        (["pretrain.nosuchfield=1"], r"pretrain.nosuchfield: unknown key \(from --set pretrain.nosuchfield;"),
    ],
)
def test_bad_overrides_name_the_override(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_a_profile_with_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    profile = tmp_path / "broken.yaml"
    profile.write_text("corpus:\n  num_sentences: [1, 2\npretrain: {}\n")
    with pytest.raises(ConfigError, match=rf"profile {profile}: not valid YAML at line 3, column 9"):
        load_config(profile)


@pytest.mark.parametrize("override", ["corpus.num_sentences=yes", "pretrain.epochs=true", "finetune.batch_size=on", "pretrain.lr=yes", "annotate.max_cost=no"])
def test_a_yes_or_no_for_a_number_is_refused_not_read_as_1_or_0(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .*a number, not a yes/no value .*--set {key}"):
        load_config("demo", [override])


def test_yes_and_no_still_set_a_switch():
    assert load_config("demo", ["pretrain.compile=yes"]).pretrain.compile is True


@pytest.mark.parametrize("override", ["pretrain.lr=.inf", "annotate.max_cost=.inf", "pretrain.lr=.nan", "annotate.requests_per_minute=.inf",
                                      "pretrain.bias_init=-.inf", "tag.threshold=.nan", "finetune.head_lr=.inf"])  # fmt: skip
def test_an_infinite_or_nan_rate_or_cost_is_refused(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .*finite number .*--set {key}"):
        load_config("demo", [override])


def _number_fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, is a float) of every int or float field of ``model`` and its sections (lists and unions aside)."""
    for name, field in model.model_fields.items():
        kinds = _leaf_types(field.annotation)
        sections = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if len(sections) == 1 and kinds <= {sections[0], type(None)}:
            yield from _number_fields(sections[0], f"{prefix}{name}.")
        elif kinds & {int, float} and bool not in kinds:
            yield f"{prefix}{name}", float in kinds


def _leaf_types(annotation) -> set:
    if get_origin(annotation) in (tuple, list, dict):
        return {get_origin(annotation)}
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _leaf_types(args[0])
    return set().union(*(_leaf_types(a) for a in args)) if args else {annotation}


NUMBER_FIELDS = sorted(_number_fields(PipelineConfig))


def test_every_number_field_of_the_config_refuses_yes_no_and_its_floats_inf_and_nan():
    assert len(NUMBER_FIELDS) > 90 and ("corpus.num_sentences", False) in NUMBER_FIELDS and ("pretrain.lr", True) in NUMBER_FIELDS
    for key, is_float in NUMBER_FIELDS:
        for value in [True, False] + ([math.inf, -math.inf, math.nan] if is_float else []):
            with pytest.raises(ConfigError, match=rf"\n  {re.escape(key)}: .*(a number, not a yes/no value|finite number)"):
                load_config("demo", {key: value})


# ---------------------------------------------------------------- what an error may show (issue 20, items 3 and 9)

SECRET = "tok3n-SECRET-9f8e7d"


def test_a_config_error_quotes_no_url_credentials():
    """A model validator's error quotes its whole section: the credentialed base_url with it, before the fix."""
    with pytest.raises(ConfigError) as err:
        load_config("demo", {"annotate.base_url": f"http://me:{SECRET}@10.0.0.1/v1?api-key={SECRET}",
                             "annotate.offline": False, "annotate.model": "no-price", "annotate.max_cost": 1.0})
    assert "max_cost is set" in str(err.value) and "http://***@10.0.0.1/v1?api-key=***" in str(err.value)
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError) as err:  # an override that is no override quotes itself
        parse_overrides([f"annotate.base_url http://me:{SECRET}@10.0.0.1/v1"])
    assert SECRET not in str(err.value)


def test_a_yaml_alias_bomb_in_a_profile_fails_fast_with_a_short_message(tmp_path):
    import time

    from nuner_core.redaction import MAX_MESSAGE_CHARS

    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("corpus: {seed: [" + ", ".join(anchors) + "]}\n")  # 10^9 x's in 500 bytes, quoted by the error
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as err:
        load_config(bomb)
    assert time.perf_counter() - started < 2 and len(str(err.value)) <= MAX_MESSAGE_CHARS
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_overrides(["corpus.seed=[" + ", ".join(anchors) + "]"])


def test_an_override_error_quoting_a_huge_value_is_capped():
    from nuner_core.redaction import MAX_MESSAGE_CHARS

    with pytest.raises(ConfigError) as err:
        load_config("demo", {"corpus.seed": ["x" * 1000] * 1000})
    assert "corpus.seed" in str(err.value) and len(str(err.value)) <= MAX_MESSAGE_CHARS
