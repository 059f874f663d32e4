#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Two workers (pytest-xdist): most tests wait on subprocesses, servers and deadlines, so two run well on 2 cores
# (~18 min instead of ~35). TEST_WORKERS=0 runs in one process; TEST_WORKERS=auto uses every core.
# loadgroup: tests marked @pytest.mark.xdist_group("slurm") all go to one worker, so one Slurm cluster is started.
exec "${LAUNCHER_VENV:-.venv}/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
