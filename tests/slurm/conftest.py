"""Tests of the Slurm test cluster itself (the `slurm_cluster` fixture lives in tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _slurm_clean_slate(request):
    """A test here that uses `slurm_cluster` must run in the "slurm" xdist group, and leaves no job behind."""
    if "slurm_cluster" not in request.fixturenames:
        yield
        return
    groups = [m.args[0] if m.args else m.kwargs.get("name") for m in request.node.iter_markers("xdist_group")]
    if "slurm" not in groups:
        pytest.fail("a test using slurm_cluster needs @pytest.mark.xdist_group(\"slurm\"): one cluster per run")
    yield
    request.getfixturevalue("slurm_cluster").cancel_all()
