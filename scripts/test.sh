#!/usr/bin/env bash
# Set up, run the lint and type gate, build the docs site, then run the test suite offline, with
# Prefect's state in a throwaway directory. NUNER_NO_LINT=1 skips the gate (handy while iterating on one test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ "${NUNER_NO_LINT:-}" = 1 ] || bash scripts/lint.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The docs site (mkdocs.yml): a broken link, a missing page or an anchor that is gone fails here (strict).
# tests/docs reads the built site (NUNER_DOCS_SITE) instead of building it again.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d "$tmp/site"
export NUNER_DOCS_SITE="$tmp/site"
export PREFECT_HOME="$tmp/prefect" NUNER_DATA_DIR="$tmp/data"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
