"""Train HRM-LM (hierarchical-reasoning encoder + LM decoder). See docs/hrm_lm.md."""
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# `python runners/x.py` puts runners/ first on sys.path, where a module named like a stdlib one (tokenize.py)
# would shadow the stdlib; drop it and import through the package instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from runners.hrm_lm.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
