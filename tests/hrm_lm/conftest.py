import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parents[1])):
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def datapool(tmp_path, monkeypatch):
    """A private datapool through the env contract (as the agent would set it)."""
    root = tmp_path / "pool"
    monkeypatch.setenv("DATAPOOL_ROOT", str(root))
    for key in ("EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR"):
        monkeypatch.delenv(key, raising=False)
    return root
