#!/usr/bin/env bash
# The lint and type gate: ruff (pyflakes, bugbear, pycodestyle, import order) and mypy (strict on
# nuner_core/, the default checks on flows/ and tasks/), both configured in pyproject.toml.
# A finding fails it; scripts/test.sh runs it before the tests, so CI fails on one too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .
.venv/bin/mypy --no-error-summary
echo "lint: ruff and mypy clean"
