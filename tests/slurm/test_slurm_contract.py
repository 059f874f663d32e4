"""The backend contract (tests/backends/test_contract.py) on the slurm backend against the real two-node test
cluster: the foreground exit code, detach + `logs -f`, `down` (SIGTERM first, exit 143, cancelled), --max-runtime ->
timeout, the client killed while the job goes on, the sweeper. The scenarios are imported, not copied: what every
backend must do, this one does too."""
from __future__ import annotations

import pytest

from ..backends.test_contract import (  # noqa: F401 - collected here with this module's `target`
    test_client_killed_the_job_goes_on, test_detach_then_logs_follow_to_the_end, test_down_cancels_a_running_job,
    test_foreground_run_returns_the_scripts_exit_code, test_max_runtime_ends_in_timeout,
    test_plan_shows_the_one_deadline, test_sweeper_ends_jobs_past_their_deadline)
from .target import slurm_target

pytestmark = pytest.mark.xdist_group("slurm")


@pytest.fixture
def target(tmp_path, slurm_cluster):
    return slurm_target(tmp_path, slurm_cluster)
