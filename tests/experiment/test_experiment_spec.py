"""The experiment file: every error names its key; points; every shipped file loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nuner_core.experiment.spec import ExperimentError, expand, format_value, is_config_key, load_experiment

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "experiments").glob("*/*.yaml"))


def _write(tmp_path: Path, spec: dict | str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


BASE = {"name": "t", "profile": "demo", "sweep": {"dataset.top_concepts": [4, 16]}, "report": {"k": 4}}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"colour": "red"}, "colour: unknown key; known keys: name, description, profile"),
        ({"report": {"k": 4, "kk": 8}}, "report.kk: unknown key; known keys: stage, protocol, k, benchmarks, encoder"),
        ({"figure": {"logx": True}}, "figure.logx: unknown key"),
        ({"sweep": {"dataset.top_conceps": [4]}}, "sweep.dataset.top_conceps: not a key of the pipeline config (dataset has: source,"),
        ({"sweep": {"pretraining.lr": [1e-4]}}, "sweep.pretraining.lr: not a key of the pipeline config (the config has: corpus,"),
        ({"sweep": {"evaluate.frozen.kz": [1]}}, "sweep.evaluate.frozen.kz: not a key of the pipeline config (evaluate.frozen has: enabled, ks,"),
        ({"sweep": {"dataset.top_concepts": []}}, "sweep.dataset.top_concepts: empty list of values"),
        ({"sweep": {"dataset.top_concepts": 4}}, "sweep.dataset.top_concepts: Input should be a valid list"),
        ({"sweep": {}}, "sweep: Value error, sweep names no key"),
        ({"sweep": {"dataset.top_concepts": [4, 4]}}, "sweep.dataset.top_concepts: a value is listed twice"),
        ({"overrides": {"dataset.top_concepts": 3}}, "sweep.dataset.top_concepts: also a fixed override"),
        ({"overrides": {"pretrain.lrr": 3}}, "overrides.pretrain.lrr: not a key of the pipeline config"),
        ({"sweep": {"dataset.top_concepts": [4, 16], "pretrain.lr": [1e-4]}, "mode": "zip"},
         "mode: zip needs value lists of one length (dataset.top_concepts: 2, pretrain.lr: 1)"),
        ({"sweep": {"dataset.top_concepts": [4, 4, 16], "pretrain.lr": [1e-4, 1e-4, 1e-4]}, "mode": "zip"},
         "sweep: point 1 has the same values as point 0"),
        ({"report": {"stage": "finetune"}}, "report.stage: finetune, but finetune.data is not set for point 0 (top_concepts=4)"),
        ({"figure": {"x": "pretrain.lr"}}, "figure.x: 'pretrain.lr' is not a swept key (swept: dataset.top_concepts)"),
        ({"labels": ["a"]}, "labels: 1 labels for 2 points"),
        ({"report": {"k": 8}}, "report.k: 8 is not among evaluate.frozen.ks [1, 4, 16] of point 0 (top_concepts=4)"),
        ({"report": {"k": 4, "benchmarks": ["conll"]}}, "report.benchmarks: 'conll' is not among the evaluated benchmarks"),
        ({"report": {"k": 4, "protocol": "finetune"}}, "report.protocol: 'finetune' is not enabled for point 0"),
        ({"sweep": {"dataset.top_concepts": [4, "many"]}}, "point 1 (top_concepts=many)"),
        ({"profile": "nosuch"}, "unknown profile 'nosuch'"),
        ({"name": "a b"}, "name: String should match pattern"),
        ({"max_parallel": 0}, "max_parallel: Input should be greater than or equal to 1"),
    ],
)
def test_errors_name_the_key(tmp_path, change, expected):
    path = _write(tmp_path, BASE | change)
    with pytest.raises(ExperimentError) as err:
        load_experiment(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)  # and the file


def test_a_missing_sweep_and_bad_yaml(tmp_path):
    with pytest.raises(ExperimentError, match="sweep: required"):
        load_experiment(_write(tmp_path, {"name": "t"}))
    with pytest.raises(ExperimentError, match="not valid YAML at line 2, column"):
        load_experiment(_write(tmp_path, "name: t\nsweep: {a: [1}\n"))
    with pytest.raises(ExperimentError, match="does not exist"):
        load_experiment(tmp_path / "none.yaml")


def test_points_grid_zip_and_labels(tmp_path):
    grid = load_experiment(_write(tmp_path, BASE | {"sweep": {"dataset.top_concepts": [4, None], "pretrain.seed": [0, 1, 2]}}))
    assert [p.values for p in grid.points][:3] == [
        {"dataset.top_concepts": 4, "pretrain.seed": 0},
        {"dataset.top_concepts": 4, "pretrain.seed": 1},
        {"dataset.top_concepts": 4, "pretrain.seed": 2},
    ]
    assert len(grid.points) == 6 and grid.points[3].label == "top_concepts=all, seed=0"
    zipped = load_experiment(_write(tmp_path, BASE | {
        "overrides": {"pretrain.epochs": 1},
        "sweep": {"pretrain.base_model": ["a", "b"], "pretrain.freeze_layers": [1, 2]},
        "mode": "zip", "labels": ["small", "large"],
    }))  # fmt: skip
    assert [(p.label, p.overrides) for p in zipped.points] == [
        ("small", {"pretrain.epochs": 1, "pretrain.base_model": "a", "pretrain.freeze_layers": 1}),
        ("large", {"pretrain.epochs": 1, "pretrain.base_model": "b", "pretrain.freeze_layers": 2}),
    ]
    assert zipped.spec.x_key == "pretrain.base_model"
    # zip: a value may recur across points (one data set, two methods), as long as no point does
    linked = load_experiment(_write(tmp_path, BASE | {
        "sweep": {"dataset.top_concepts": [4, 4, 16], "pretrain.lr": [1e-4, 5e-5, 1e-4]}, "mode": "zip",
    }))  # fmt: skip
    assert [p.values for p in linked.points] == [
        {"dataset.top_concepts": 4, "pretrain.lr": 1e-4}, {"dataset.top_concepts": 4, "pretrain.lr": 5e-5},
        {"dataset.top_concepts": 16, "pretrain.lr": 1e-4},
    ]  # fmt: skip


def test_content_hash_ignores_max_parallel_but_not_the_sweep(tmp_path):
    a = load_experiment(_write(tmp_path, BASE)).content_hash
    assert load_experiment(_write(tmp_path, BASE | {"max_parallel": 3})).content_hash == a
    assert load_experiment(_write(tmp_path, BASE | {"sweep": {"dataset.top_concepts": [4, 17]}})).content_hash != a


def test_a_profile_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "mine.yaml").write_text((ROOT / "nuner_core" / "profiles" / "demo.yaml").read_text())
    exp = load_experiment(_write(tmp_path, BASE | {"profile": "mine.yaml"}))
    assert exp.profile == str(tmp_path / "mine.yaml")


def test_dotted_keys_and_values():
    assert is_config_key("evaluate.frozen.ks") and is_config_key("corpus.sources") and is_config_key("pretrain.concept_map")
    assert not is_config_key("evaluate.frozen.kz") and not is_config_key("nothing")
    assert [format_value(v) for v in (None, 4, 1500, 80_000, 1_000_000, 1234, True)] == ["all", "4", "1.5k", "80k", "1M", "1234", "true"]


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_every_shipped_experiment_file_loads(path):
    exp = load_experiment(path)
    assert exp.points and exp.spec.report.protocol == "frozen" and exp.spec.report.k == 8  # the paper's ablations
    assert exp.spec.description
    assert len(SHIPPED) >= 6
    expand(exp.spec)


def test_the_command_line_rejects_a_bad_file_before_prefect_starts(tmp_path, capsys):
    from flows.cli import main

    assert main(["experiment", str(_write(tmp_path, BASE | {"sweep": {"dataset.top_concepts": []}}))]) == 2
    assert "sweep.dataset.top_concepts: empty list of values" in capsys.readouterr().err


# ---------------------------------------------------------------- credentials and bounds (issue 20, items 3 and 9)

SECRET = "tok3n-SECRET-9f8e7d"
LLM = {"name": "qwen", "model": "q", "api_key_env": None, "offline": True}


def test_url_credentials_in_an_experiment_file_reach_no_dump_label_or_message(tmp_path, capsys):
    """Fixed and swept base_urls were written in clear (experiment.yaml, points.json, summary, point parameters)."""
    annotate = f"http://me:{SECRET}@10.0.0.1/v1"
    llms = [[{**LLM, "base_url": f"https://proxy-{i}/v1?api-key={SECRET}"}] for i in (1, 2)]
    path = _write(tmp_path, BASE | {"overrides": {"annotate.base_url": annotate}, "sweep": {"evaluate.llms": llms},
                                    "description": f"asks https://proxy-1/v1?api-key={SECRET}"})
    exp = load_experiment(path)
    shown = [exp.spec.model_dump_json(), repr(exp), *(repr(p) for p in exp.points), *(p.label for p in exp.points)]
    assert not [s for s in shown if SECRET in s]
    assert exp.points[0].overrides["annotate.base_url"] == "http://***@10.0.0.1/v1"
    assert sorted(url for _, url in exp.credentials) == sorted([annotate] + [m[0]["base_url"] for m in llms])
    # a typo elsewhere: the error message quotes the redacted values only
    bad = _write(tmp_path, BASE | {"overrides": {"annotate.base_url": annotate}, "sweep": {"evaluate.llms": [[{**LLM, "base_url": annotate, "nme": 1}]]}})
    with pytest.raises(ExperimentError) as err:
        load_experiment(bad)
    assert "nme" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"overrides": {"corpus.sources": [{"kind": "files", "path": f"https://h/x?token={SECRET}"}]}},
         "overrides.corpus.sources.path: https://h/x?token=*** carries credentials"),
        ({"sweep": {"annotate.base_url": [f"http://a:{SECRET}@h/v1", f"http://b:{SECRET}x@h/v1"]}},
         "two URLs differ only in their credentials (http://***@h/v1)"),
    ],
)
def test_credentials_that_cannot_be_handed_over_are_refused_pointing_to_api_key_env(tmp_path, change, expected):
    with pytest.raises(ExperimentError) as err:
        load_experiment(_write(tmp_path, BASE | change))
    assert expected in str(err.value) and "api_key_env" in str(err.value) and SECRET not in str(err.value)


def test_credentials_cannot_go_to_the_runs_of_a_deployment(tmp_path, capsys):
    from flows.cli import main

    path = _write(tmp_path, BASE | {"overrides": {"annotate.base_url": f"http://me:{SECRET}@h/v1"}})
    assert main(["experiment", str(path), "--deployment", "nuner/full-pipeline"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach runs of nuner/full-pipeline" in err and "api_key_env" in err and SECRET not in err


def test_a_10000_point_grid_is_refused_in_well_under_a_second(tmp_path, capsys):
    import time

    from flows.cli import main

    sweep = {"pretrain.seed": list(range(100)), "corpus.seed": list(range(100))}
    path = _write(tmp_path, BASE | {"sweep": sweep})
    started = time.perf_counter()
    with pytest.raises(ExperimentError, match=r"10,000 points \(100 x 100\), more than the 1,000 allowed.*--max-points"):
        load_experiment(path)
    assert time.perf_counter() - started < 0.5
    assert main(["experiment", str(path), "--max-points", "9999"]) == 2
    assert "10,000 points (100 x 100), more than the 9,999 allowed" in capsys.readouterr().err
    small = _write(tmp_path, BASE | {"sweep": {"pretrain.seed": [0, 1, 2]}})
    with pytest.raises(ExperimentError, match="3 points"):
        load_experiment(small, max_points=2)
    assert len(load_experiment(small, max_points=3).points) == 3


def test_a_yaml_alias_bomb_fails_fast_with_a_short_message(tmp_path, capsys):
    """533 bytes naming 10^9 values: before the fix, over a minute and 4 GB (then killed), quoting them in the error."""
    import time

    from flows.cli import main

    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = _write(tmp_path, "name: bomb\nsweep: {pretrain.seed: [0, 1]}\nmode: [" + ", ".join(anchors) + "]\n")
    assert path.stat().st_size < 700
    started = time.perf_counter()
    assert main(["experiment", str(path)]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - started < 2 and len(err) < 500
    assert "expands to more than 100,000 values" in err


def test_an_oversized_experiment_file_is_refused_before_it_is_read(tmp_path):
    path = _write(tmp_path, "name: big\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ExperimentError, match="bytes, more than the 1,048,576"):
        load_experiment(path)
