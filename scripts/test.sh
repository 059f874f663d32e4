#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${LAUNCHER_VENV:-.venv}/bin/python" -m pytest -q "$@"
