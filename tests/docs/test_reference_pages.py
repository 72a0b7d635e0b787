"""The generated reference pages (docs/reference/) are what scripts/gen_docs.py writes from the code now, and cover it all."""

from __future__ import annotations

import argparse
import re
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # gen_docs: the one writer of the reference pages

import gen_docs  # noqa: E402

from flows.cli import DOCS_PAGES, build_parser  # noqa: E402
from nuner_core.config import PipelineConfig  # noqa: E402
from nuner_core.registry import STAGES  # noqa: E402


def test_the_committed_reference_pages_are_what_the_code_writes_now():
    stale = [str(path.relative_to(ROOT)) for path, text in gen_docs.render().items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]  # fmt: skip
    assert not stale, f"stale reference page(s) {stale}: run `{gen_docs.REGENERATE}` and commit the result"


def test_check_mode_names_a_stale_page_and_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen_docs, "REFERENCE", tmp_path)
    assert gen_docs.main([]) == 0 and gen_docs.main(["--check"]) == 0
    (tmp_path / "cli.md").write_text("# an old page\n")
    assert gen_docs.main(["--check"]) == 1
    assert "cli.md is stale: run `.venv/bin/python scripts/gen_docs.py`" in capsys.readouterr().err


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field reachable from ``model`` (lists, mappings and unions of models included), as plain dotted names."""
    paths = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + name)
        for sub in _models(field.annotation):
            paths |= _field_paths(sub, f"{prefix}{name}.")
    return paths


def test_every_field_of_every_stage_config_is_on_the_config_page():
    page = (ROOT / "docs/reference/config.md").read_text(encoding="utf-8")
    # The page writes each item of a list as [] and each key of a mapping as <name>: corpus.sources[].path
    named = {re.sub(r"\[\]|\.<name>", "", name) for name in re.findall(r"^\| `([^`]+)` \|", page, flags=re.M)}
    sections = {s.name for s in STAGES}  # each stage's section is a heading, its fields the rows below it
    assert all(f"\n## {name}\n" in page for name in sections)
    fields = _field_paths(PipelineConfig) - sections
    assert {"finetune.adapt.replay_share", "evaluate.zero_shot.decoding", "corpus.sources.path", "annotate.prices.input_per_mtok",
            "evaluate.benchmarks.source.train", "finetune.data.k"} <= fields  # the walk reaches nested, listed and union models
    assert fields - named == set(), "fields missing from docs/reference/config.md"
    assert named - fields == set(), "docs/reference/config.md names fields the config does not have"


@pytest.mark.parametrize("dotted, key", [("pretrain.device", "run-only"), ("pretrain.lr", "in"),
                                         ("tag.decoding", 'added: in, unless `"words"`'), ("annotate.prices.<name>.input_per_mtok", "run-only")])
def test_the_config_page_says_whether_a_field_is_in_the_artifact_key(dotted, key):
    page = (ROOT / "docs/reference/config.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith(f"| `{dotted}` |"))
    assert row.split(" | ")[3] == key


def test_a_field_comment_is_read_from_beside_it_or_above_it():
    from nuner_core.finetuning.config import AdaptConfig, FinetuneConfig

    assert gen_docs.comment_of(AdaptConfig, "replay_share") == "share of each batch drawn from the pretrain dataset's training sentences"
    assert gen_docs.comment_of(FinetuneConfig, "method") == "dual_encoder: adapt the zero-shot tagger (see adapt)"  # the line above
    assert gen_docs.comment_of(FinetuneConfig, "retention_benchmarks").startswith("zero-shot F1 before/after")  # not the '# ---' header


def _commands(parser: argparse.ArgumentParser, prog: str = "nuner") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prog} {name}")
    return found


def test_every_command_is_on_the_cli_page_with_every_flag():
    page = (ROOT / "docs/reference/cli.md").read_text(encoding="utf-8")
    commands = _commands(build_parser())
    assert {"nuner stack", "nuner store gc", "nuner cache import", "nuner serve"} <= {prog for prog, _ in commands}
    for prog, parser in commands:
        assert f"`{prog}`" in page, f"{prog} is missing from docs/reference/cli.md"
        for action in parser._actions:
            for flag in [] if isinstance(action, argparse._HelpAction) else action.option_strings:
                assert f"`{flag}" in page or f", {flag}" in page, f"{prog} {flag} is missing from docs/reference/cli.md"


def test_every_command_help_names_a_docs_page_that_exists():
    commands = _commands(build_parser())
    assert set(DOCS_PAGES) == {prog.split()[1] for prog, _ in commands if prog.count(" ") == 1}, "a command without a docs page"
    for prog, parser in commands:
        pages = re.findall(r"docs/\S+?\.md", parser.format_help())
        assert pages, f"`{prog} --help` names no docs page"
        for page in pages:
            assert (ROOT / page).is_file(), f"`{prog} --help` names {page}, which does not exist"
