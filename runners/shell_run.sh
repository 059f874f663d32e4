#!/usr/bin/env bash
# Runs its arguments as one shell command, under the env contract (CHECKPOINT_DIR, EXPERIMENT_DIR, ...): the
# relay's `command:` (and the seed's SLIME_SFT_CMD / SLIME_RL_CMD) puts any trainer in a worker this way.
#   launch runners/shell_run.sh 'python my_trainer.py --resume "$CHECKPOINT_DIR"'
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: shell_run.sh 'COMMAND ...'" >&2
  exit 2
fi
# eval, not `bash -c`: a fresh bash may re-run the login setup (pyenv shims first on PATH) and lose the agent's
# interpreter, which the agent put first on PATH for this script.
set +euo pipefail  # the command runs as `bash -c` would run it
eval "$*"
