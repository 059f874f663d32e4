"""Train HRM-LM (hierarchical-reasoning encoder + LM decoder). See docs/hrm_lm.md.

    python runners/hrm_lm_run.py                                             # no dataset named: one dry-run batch
    python runners/hrm_lm_run.py --config configs/hrm_lm/smoke.yaml --run_name demo
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.hrm_lm.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
