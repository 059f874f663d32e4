"""The AgentSpec: the one contract between the client and the agent on the node.

The client renders it at plan time from the Job; every remote request carries it inline (user-data, the pod's
ConfigMap, the Modal function's argument, the ssh backend's spec file), so `--dry-run` shows exactly what the node
will do. It never holds a secret value: `secrets` are names, and the values reach the agent's environment by the
backend's own channel (a 0600 file over SFTP, a k8s Secret, a Modal Secret, SSM).

Every field is required: defaults live in one place (the Job), never repeated here or in the agent.

Time: one absolute `deadline_at` (epoch seconds) is computed once, at plan time. Everything else derives from it:

    stop_at     = deadline_at - grace_period - push_timeout   the agent SIGTERMs the script (reason: timeout)
    deadline_at                                                the agent is done pushing; the sweeper ends the job
    deadman_at  = deadline_at + DEADMAN_MARGIN_S               the node's own switch kills or powers off

The push reserve is the job's `push_timeout` (`--push-timeout`, default 5 min): the final push keeps trying a store
that does not answer that long, so a job stopped at its max runtime still has room to push before its deadline.
"""
from __future__ import annotations

import json
import math

from pydantic import BaseModel, ConfigDict

from .relay.config import RelayBinding

SPEC_VERSION = 1
# The dead-man switch fires this long after the deadline, so it never races a well-behaved agent.
DEADMAN_MARGIN_S = 60
# `launch down` writes this marker (in the state dir and in the store); the agent reads it as a cancel.
CANCEL_MARKER = "cancel-requested"
# How often the agent looks for the cancel marker in the store (the bound: 5 s).
CANCEL_POLL_S = 5.0
# The agent's exit code when the script ended but its outputs never reached the store within the push timeout
# (EX_IOERR). Backends that know only the agent's exit code (a pod, a Modal call, an instance) read it as
# `push_failed`; the foreground client exits with it too.
PUSH_FAILED_EXIT = 74
# While the final push waits for the store, the agent keeps this file in its state dir, one line saying why
# (the ssh backend's status shows `pushing (<why>)`).
PUSHING_MARKER = "pushing"


class AgentSpec(BaseModel):
    """What the agent needs to run one job. Relative paths are relative to the agent's working directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    job_id: str
    backend: str
    run_name: str
    script: str
    args: list[str]
    env: dict[str, str]
    secrets: list[str]
    experiment: str
    workdir: str
    datapool_root: str
    store_url: str | None
    endpoint_url: str | None
    # The node's network, only from the job's `node:` section (never this machine's environment): the agent sets
    # HTTPS_PROXY / NO_PROXY and AWS_CA_BUNDLE (this PEM text, written to its state dir) for itself and the script.
    https_proxy: str | None
    no_proxy: str | None
    ca_bundle: str | None
    state_dir: str
    deadline_at: float | None
    grace_period: int
    push_interval: int
    # The final push (outputs, then result.json) keeps trying a store that does not answer this long after the
    # script ended; then the job ends push_failed. It is also the deadline's push reserve (stop_at).
    push_timeout: int
    # A SIGTERM nobody asked for (no cancel marker) means the platform took the machine: preempted, not cancelled.
    preemptible: bool
    # 1 for the first run; a relaunch after a preemption (--max-restarts) counts up and resumes from the store.
    attempt: int
    # A worker of a relay run: hold the run's lease while the script runs (launcher/relay/worker.py); its
    # worker_id is set (the job id by default). The shared secret arrives like any secret, by name.
    relay: RelayBinding | None

    @property
    def stop_at(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.grace_period - self.push_timeout

    @property
    def deadman_at(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at + DEADMAN_MARGIN_S

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "AgentSpec":
        return cls.model_validate_json(text)


def deadline_for(created: float, max_runtime: int | None, grace_period: int, push_timeout: int) -> float | None:
    """The job's one absolute deadline: the script may run max_runtime, then gets its grace and the push reserve
    (the job's push timeout)."""
    if max_runtime is None:
        return None
    # Whole seconds: the same width in every rendered request (golden files), and no one needs the fraction.
    return float(math.ceil(created + max_runtime + grace_period + push_timeout))
