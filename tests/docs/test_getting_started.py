"""Every shell block of docs/getting-started.md marked runnable runs, as a newcomer would run it after the demo.

A block is marked by the line ``<!-- runnable -->`` right before its fence. The blocks run in
order with bash, in a scratch copy of the clone's root (a link to each of its entries, a fresh
``data/``, and ``../shared`` beside it, as a clone has), so that what a block writes stays in
``tmp_path``; ``NUNER_DATA_DIR`` is that ``data/`` and ``PREFECT_HOME`` is in ``tmp_path`` too.
What the demo leaves that a block needs is made first, small: the pretrain artifact (a tiny
two-encoder model, ``tagging_helpers.build_planted``) that ``pretrain:latest`` names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
MARK = "<!-- runnable -->"
sys.path.insert(0, str(ROOT / "tests" / "tagging"))  # tagging_helpers: one builder of tiny models

from tagging_helpers import build_planted  # noqa: E402


def runnable_blocks(text: str) -> list[str]:
    """The body of each fenced block right after a ``<!-- runnable -->`` line; a mark before anything else is an error."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        assert re.fullmatch(r"```(bash|sh)", fence.strip()), f"{PAGE.name} line {i + 1}: {MARK} must come right before a ```bash fence"
        end = lines.index("```", i + 2)
        blocks.append("\n".join(lines[i + 2 : end]))
    return blocks


def test_a_mark_finds_its_block_and_nothing_else():
    text = "intro\n\n<!-- runnable -->\n```bash\necho one\necho two\n```\n\n```bash\necho not marked\n```\n"
    assert runnable_blocks(text) == ["echo one\necho two"]
    with pytest.raises(AssertionError, match="right before"):
        runnable_blocks("<!-- runnable -->\n\n```bash\necho x\n```\n")


@pytest.fixture
def clone(tmp_path, assets) -> Path:
    """The clone's root as a newcomer has it after the demo (see the module docstring)."""
    root = tmp_path / "nuner"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"data", ".git"}:
            (root / entry.name).symlink_to(entry)
    (tmp_path / "shared").symlink_to(assets.parent)
    from nuner_core.store import open_store

    store = open_store(root / "data")
    model = build_planted(tmp_path / "planted")
    with store.publish("pretrain", "0123456789abcdef", {"stage": "pretrain", "base_model": "tiny", "encoders": {"nuner": "text_encoder"}}) as out:
        for item in model.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy)(item, out / item.name)
    return root


@pytest.mark.slow
def test_every_runnable_block_of_the_getting_started_page_runs(clone, tmp_path):
    blocks = runnable_blocks(PAGE.read_text(encoding="utf-8"))
    joined = "\n".join(blocks)
    assert "nuner run --profile demo" in joined and "nuner tag" in joined, "the page's runnable blocks lost the run or the tag"
    env = {**os.environ, "NUNER_DATA_DIR": str(clone / "data"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "OMP_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1"}  # fmt: skip
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"this block of {PAGE.name} failed ({done.returncode}):\n{block}\n--- stderr:\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if "nuner run " in block:
            assert re.search(r"^corpus\s+(Completed|Cached)\s", done.stdout, flags=re.M), done.stdout  # Cached after the demo
        for output in re.findall(r"(?:-o|--output) (\S+)", block):
            assert (clone / output).is_file() and (clone / output).stat().st_size > 0, f"{output} was not written"
