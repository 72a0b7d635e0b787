#!/usr/bin/env bash
# Check a GPU machine in one command (benchmarks/gpu_check.py): pre-training tokens/s and MFU at the
# paper's shape in bf16, DDP on every visible GPU, the tagger / evaluation encoding / fine-tuning on
# CUDA against the CPU. Writes gpu_report.json (--report PATH); the last line sums it up:
#   pretrain_mfu=… ddp_ok=… tag_sentences_per_s=… cuda_cpu_parity=…
#   bash scripts/gpu_check.sh              # on the GPU machine (<= 8 min on one GPU)
#   bash scripts/gpu_check.sh --dry-run    # on CPU: tiny encoders, every part but the CUDA calls
# Uses .venv/bin/python when there is one (scripts/setup.sh), else $PYTHON or python3 (a GPU
# machine with torch and transformers already installed; the project need not be installed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" "$ROOT/benchmarks/gpu_check.py" "$@"
