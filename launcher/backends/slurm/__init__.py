"""The slurm backend: one batch job per launch (`sbatch`), one agent per node under `srun`, gone when it ends.

options.py is the `slurm:` profile section and its flags (light: the registry reads it); script.py renders the
batch script, the per-node wrapper and the exact `sbatch` argv (pure: what `--dry-run` prints); reasons.py reads
Slurm's job records and sorts pending reasons into "wait" and "never" (pure); cli.py runs Slurm's commands and
places files, here or on a login node over SSH; backend.py is the Backend the launch path drives. Nothing here
imports paramiko at import time.
"""
from ..entry import BackendEntry
from .options import FLAGS, SlurmOptions

ENTRY = BackendEntry(
    name="slurm", cls="launcher.backends.slurm.backend:SlurmBackend",
    summary="a Slurm batch job, sbatch here or on a login node over SSH, one agent per node",
    options=SlurmOptions, flags=FLAGS,
    example="launch --backend slurm --partition gpu --gpu A100:4 --num-nodes 2 --datapool s3://bucket/pool "
            "runners/hrm_lm_run.py --config c.yaml",
)
