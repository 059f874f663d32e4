"""The slurm backend: the launch path's verbs over one Slurm batch job.

    launch --backend slurm --partition gpu --gpu A100:4 --num-nodes 2 --datapool s3://bucket/pool train.py

The client places the code snapshot, the node bootstrap and the batch script on the cluster's shared filesystem
(here, or over SFTP on a login node), submits with `sbatch --parsable`, and leaves. Slurm runs the batch script on
the first node; it starts one agent per node under `srun`, and only rank 0 pushes outputs and result.json. Results,
logs and the cancel marker meet in the store as on every remote backend; Slurm's own record (`scontrol show job`)
says the rest: a reason it will never start, a pending timeout, an end without a result.

Preemption and requeue: with --max-restarts the job is submitted with --requeue, and Slurm itself reruns the batch
script after a preemption, a node failure or `scontrol requeue` (SLURM_RESTART_COUNT counts them): the agent
resumes from the checkpoints it pushed. The client never relaunches on top (capabilities.retries_itself).
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from datetime import datetime
from typing import Iterator

from pydantic import ConfigDict, Field

from ... import progress
from ...errors import CapacityError, UserError
from ...job import Job
from ...plan import Plan
from ...spec import CANCEL_MARKER, DEADMAN_MARGIN_S, PUSH_FAILED_EXIT
from ...units import format_duration
from ..base import Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation, observed
from ...node import bootstrap
from . import reasons, script
from .cli import SlurmCli, Unreachable, last_line
from .options import SlurmOptions

MAX_NODES = 64
DEFAULT_PENDING_TIMEOUT = 600
# How long a job may take to leave the queue once killed (Slurm's KillWait and the epilog come first).
GONE_TIMEOUT = 90


def _opts(job: Job) -> SlurmOptions:
    return getattr(job, "slurm", None) or SlurmOptions()


def _mark(job_id: str) -> str:
    """Shell (in the base dir): the cancel marker into every node's state dir of the job, so the agents read the
    SIGTERM that follows as a cancel, not as a preemption."""
    jd = script.job_dir(job_id)
    return f'for s in nodes/*/{jd}; do [ -d "$s" ] && touch "$s/{CANCEL_MARKER}"; done; '


class SlurmTarget(SlurmOptions):
    """The cluster as a handle records it: the job's `slurm:` options, lenient about a key a later version dropped
    (an old record still reads)."""

    model_config = ConfigDict(extra="ignore")


class SlurmHandle(HandleData):
    """The Slurm job. `slurm` is recorded before start (`locator`), the rest by `start`: a record that never got
    that far (a failed start) has the defaults."""

    slurm: SlurmTarget = Field(default_factory=SlurmTarget)  # which cluster, how reached (stored as a plain dict)
    slurm_job: str | None = None  # Slurm's job id (sbatch --parsable)
    submitted: float | None = None  # when sbatch took it (epoch seconds, this machine's clock)
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT
    num_nodes: int = 1
    experiment: str = "default"
    secrets: bool = False  # a secrets.env was written beside the job (release removes it)
    kill_wait: int | None = None  # the cluster's KillWait (seconds), when preflight read it


class SlurmBackend(Backend):
    name = "slurm"
    handle_type = SlurmHandle
    where_fields = ("host", "partition", "slurm_job")
    # file:// is the cluster's shared filesystem, reached by sbatch here; from a laptop over SSH only s3:// is
    # (check() refuses the other). Capabilities are static: both are declared.
    capabilities = Capabilities(remote=True, gpus=None, spot=False, max_nodes=MAX_NODES,
                                datapool_schemes=("file", "s3"), resources_enforced=True, retries_itself=True,
                                preempts_on_demand=True)

    # -- plan (pure) ---------------------------------------------------------------------------------------------

    def check(self, job: Job) -> list[str]:
        opts, notes = _opts(job), []
        on_disk = job.datapool is not None and job.datapool.scheme == "file"
        if opts.host and on_disk:
            raise UserError(f"--datapool file:// with a login node (--host {opts.host}): this machine cannot read "
                            "the cluster's disk; use an s3:// datapool, or launch where sbatch runs and the path is "
                            "on the cluster's shared filesystem")
        if job.gpu and opts.gres and any(item.split(":")[0] == "gpu" for item in opts.gres.split(",")):
            raise UserError(f"GPUs twice: --gpu {job.gpu} and --gres {opts.gres}; give them once (--gpu TYPE:N, the "
                            "type mapped with slurm: gres_types)")
        if on_disk:
            notes.append("file:// datapool: the path must be the same on every node of the cluster (a shared "
                         "filesystem)")
        if job.max_restarts:
            notes.append(f"--max-restarts {job.max_restarts}: submitted with --requeue; Slurm reruns the job itself "
                         "after a preemption, a node failure or `scontrol requeue`, and it resumes from its pushed "
                         "checkpoints (Slurm holds a requeued job ~2 min before it starts again)")
        if job.keep_on_failure:
            notes.append("--keep-on-failure on slurm: the allocation ends with the job; its folder "
                         f"{script.shown(opts.remote_dir)}/nodes/<rank>/jobs/<id>/ keeps the logs")
        if job.terminate_after:
            notes.append("--terminate-after on slurm: the allocation ends with the job anyway")
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        # Relative to each node's own folder, nodes/<rank>/ (script.py).
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root="datapool", state_dir=f"jobs/{job_id}")

    def render(self, plan: Plan) -> dict:
        return script.render(plan)

    def price(self, job: Job) -> dict:
        return {"usd_per_hour": None, "note": "your cluster's allocation: no price known"}

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        job, opts = plan.job, _opts(plan.job)
        part = [opts.partition or "the cluster's default"] + [f"{k} {v}" for k, v in
                                                               (("account", opts.account), ("qos", opts.qos)) if v]
        machine = [f"{job.num_nodes} node(s)", f"gpu {job.gpu}" if job.gpu else "no GPU"]
        machine += [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in (("cpus", job.cpus), ("memory", job.memory), ("gres", opts.gres)) if v]
        return [("cluster", f"login node {opts.host}" if opts.host else "sbatch on this machine"),
                ("partition", ", ".join(part)), ("machine", ", ".join(machine)),
                ("node dir", f"{script.shown(opts.remote_dir)}; python {opts.python}")]

    def locator(self, plan: Plan) -> dict:
        return {"slurm": _opts(plan.job).model_dump()}

    # -- submit --------------------------------------------------------------------------------------------------

    def preflight(self, plan: Plan) -> None:
        """The login node (or sbatch here) answers; the partition exists and its MaxTime fits the job's limit."""
        job, opts = plan.job, _opts(plan.job)
        cli = SlurmCli(opts.model_dump())
        cli.check_reachable()
        try:
            code, out, err = cli.sh("scontrol -o show partition; echo @@CONFIG@@; scontrol show config")
        except Unreachable as e:
            raise UserError(f"--backend slurm: {e}; check that Slurm runs (and SLURM_CONF, or slurm: slurm_env)") \
                from None
        parts_text, _, config = out.partition("@@CONFIG@@")
        if code != 0 and not parts_text.strip():
            raise UserError(f"--backend slurm: scontrol failed on {cli.where}: {last_line(err)}")
        self._kill_wait = reasons.seconds(reasons.config_value(config, "KillWait"))
        parts = reasons.partition_limits(parts_text)
        wanted = (opts.partition or "").split(",")[0]
        part = parts.get(wanted)
        if part is None:
            names = ", ".join(sorted(p for p in parts if p)) or "none"
            if wanted:
                raise UserError(f"--partition {wanted}: no such partition on this cluster; partitions: {names}")
            return  # no default partition: sbatch says what it wants
        limit = script.time_limit_minutes(plan)
        max_time = reasons.minutes(part.get("MaxTime"))
        if max_time is not None and limit > max_time:
            overhead = job.grace_period + job.push_timeout + DEADMAN_MARGIN_S
            fits = max_time * 60 - overhead
            hint = (f"ask for --max-runtime {format_duration(fits)} or less, or another --partition" if fits > 0
                    else "use another --partition")
            raise UserError(f"--max-runtime {format_duration(job.max_runtime)} needs a Slurm time limit of {limit} min "
                            f"(max runtime + grace period + {job.push_timeout}s push timeout + {DEADMAN_MARGIN_S}s "
                            f"dead-man margin), above partition {part['PartitionName']}'s MaxTime of {max_time} min; "
                            f"{hint}")

    def start(self, plan: Plan, *, detach: bool) -> dict:
        job, opts = plan.job, _opts(plan.job)
        cli = SlurmCli(opts.model_dump())
        sha = plan.snapshot.sha256
        jd = script.job_dir(plan.job_id)
        if not bootstrap.snapshot_present(cli.size, lambda rel: _sha256_of(cli, rel), sha, plan.snapshot.size):
            cli.put(plan.snapshot.path, f"code/{sha}.tar.gz")
            progress.report(progress.SNAPSHOT, f"uploaded {progress.human_bytes(plan.snapshot.size)} to the cluster")
        else:
            progress.report(progress.SNAPSHOT, "already on the cluster")
        if job.secrets:
            cli.write(f"{jd}/secrets.env", script.secrets_file(job.secrets, os.environ), mode=0o600)
        for rel, (text, mode) in script.files(plan).items():
            cli.write(rel, text.encode(), mode)
        kill_wait = getattr(self, "_kill_wait", None)
        if kill_wait is not None and kill_wait < job.grace_period:
            sys.stderr.write(f"[launcher] note: this cluster's KillWait is {kill_wait} s: a requeue, a preemption or "
                             f"Slurm's time limit SIGKILLs the job {kill_wait} s after its SIGTERM, before "
                             f"--grace-period {format_duration(job.grace_period)} ends (`launch down` still gives "
                             "the whole grace period)\n")
        try:
            code, out, err = cli.sh(shlex.join(plan.request["sbatch"]), in_base=True, timeout=120)
        except Unreachable as e:
            raise UserError(f"Slurm did not take the job: {e}") from None
        if code != 0:
            line = last_line(err) or f"sbatch exited {code}"
            if "MaxSubmitJob" in err:
                raise CapacityError(f"Slurm refused the job: {line}", quota=True)
            raise UserError(f"Slurm refused the job: {line}")
        slurm_id = out.strip().splitlines()[-1].split(";")[0].strip()
        if not slurm_id.isdigit():
            raise UserError(f"sbatch gave no job id: {out.strip()!r}")
        return {"slurm": opts.model_dump(), "slurm_job": slurm_id, "submitted": time.time(),
                "pending_timeout": getattr(job, "pending_timeout", None) or DEFAULT_PENDING_TIMEOUT,
                "num_nodes": job.num_nodes, "experiment": job.experiment, "secrets": bool(job.secrets),
                "kill_wait": kill_wait}

    # -- after submit --------------------------------------------------------------------------------------------

    def _cli(self, handle: Handle) -> SlurmCli:
        return SlurmCli(handle.data.slurm.model_dump())

    def _record(self, cli: SlurmCli, slurm_id: str) -> tuple[dict | None, datetime | None]:
        """Slurm's record of the job (None once it forgot it: MinJobAge after the end) and the login node's clock
        (Slurm's times are its local time)."""
        code, out, err = cli.sh(f"scontrol -o show job {slurm_id}; echo @@NOW@@; date +%FT%T")
        text, _, now = out.partition("@@NOW@@")
        if "Invalid job id" in err:
            return None, reasons.parse_time(now.strip())
        if code != 0 and not text.strip():
            raise Unreachable(f"scontrol show job {slurm_id} failed on {cli.where}: {last_line(err)}")
        return reasons.parse_record(text.strip().splitlines()[0]), reasons.parse_time(now.strip())

    def status(self, handle: Handle) -> Observation:
        d, job_id = handle.data, handle.job_id
        cli, slurm_id = self._cli(handle), d.slurm_job
        try:
            rec, now = self._record(cli, slurm_id)
            if rec is None:
                # Slurm purged the job (MinJobAge after its end). Its result is the store's to give; the node's
                # copy answers if the store never got it. Not lost by itself: the deadline's sweep ends the wait.
                result = self._node_result(cli, job_id)
                if result is not None:
                    return observed(result)
                return Observation(JobState.UNREACHABLE, None, f"Slurm no longer knows job {slurm_id} (it ended "
                                   "longer ago than the cluster's MinJobAge); waiting for its result in the store")
            slurm_state = rec.get("JobState", "")
            if reasons.ACTIVE_STATES.get(slurm_state) == "pending":
                return self._pending(handle, cli, rec, now)
            if slurm_state in reasons.ACTIVE_STATES:
                return Observation(JobState.RUNNING)
            result = self._node_result(cli, job_id)
        except Unreachable as e:
            return Observation(JobState.UNREACHABLE, None, str(e))
        if result is not None:
            return observed(result)
        state = reasons.ENDED_STATES.get(slurm_state, "lost")
        code = rec.get("ExitCode", "")
        if code.split(":")[0] == str(PUSH_FAILED_EXIT):  # the agent's own: the store never answered its last push
            state = JobState.PUSH_FAILED
        why = f"Slurm job {slurm_id} ended {slurm_state} (exit code {code}) and left no result in the store"
        tail = self._tail(cli, job_id, slurm_id)
        return Observation(JobState(state), None, why + (f"; {tail}" if tail else ""))

    def _node_result(self, cli: SlurmCli, job_id: str) -> dict | None:
        import json

        data = cli.read(f"nodes/0/jobs/{job_id}/result.json")
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def _tail(self, cli: SlurmCli, job_id: str, slurm_id: str) -> str:
        try:
            _, out, _ = cli.sh(f"tail -n 3 nodes/0/jobs/{job_id}/setup.log jobs/{job_id}/slurm-{slurm_id}.out "
                               "2> /dev/null", in_base=True)
        except Unreachable:
            return ""
        return " | ".join(ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("==>"))[-600:]

    def _pending(self, handle: Handle, cli: SlurmCli, rec: dict, now: datetime | None) -> Observation:
        d, slurm_id = handle.data, handle.data.slurm_job
        reason = rec.get("Reason") or "None"
        name = reasons.reason_name(reason)
        # Pending since its submission (a requeue resubmits) or since it became eligible (a requeued job is held
        # ~2 min first): that wait is Slurm's, not a shortfall.
        since = max(filter(None, (reasons.parse_time(rec.get("SubmitTime")),
                                  reasons.parse_time(rec.get("EligibleTime")))), default=None)
        pended = max(0.0, (now - since).total_seconds()) if now and since else 0.0
        alone = None
        if reasons.PER_USER.match(name):
            _, out, _ = cli.sh('squeue -h -u "$(id -un)" -t RUNNING,COMPLETING -o %i')
            alone = not out.strip()
        # Only read here: a job that will never start, or waited past its pending timeout, is observed failed with
        # the launcher's own exit code (2: the request; 75: capacity short, try later or elsewhere); reconcile
        # records it and `release` takes it out of the queue.
        why = reasons.permanent(reason, pended_s=pended, alone=alone)
        if why:
            return Observation(JobState.FAILED, UserError.exit_code,
                               f"Slurm job {slurm_id} cannot start: {reason}: {why}; cancelled")
        timeout = d.pending_timeout or DEFAULT_PENDING_TIMEOUT
        if pended > timeout and name not in ("JobHeldUser", "JobHeldAdmin", "BeginTime"):
            return Observation(JobState.FAILED, CapacityError.exit_code,
                               f"Slurm job {slurm_id} still pending after {format_duration(int(pended))} "
                               f"(--pending-timeout {format_duration(int(timeout))}): {reason}; cancelled, "
                               + ("an account or QOS limit: waiting does not raise it, try another account, QOS or "
                                  "partition" if reasons.is_quota(reason) else "try later or elsewhere"))
        return Observation(JobState.PENDING, None, None if name == "None" else f"Slurm: {reason}")

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        # The store's copy of log.txt, pushed every --push-interval (a file:// store: as it is written): the caller
        # reads it from `offset` itself; Slurm is never asked, so an outage of the login node costs no output.
        return None

    # -- cancel: the base class's policy; Slurm's answers ---------------------------------------------------------

    def stop_softly(self, handle: Handle) -> None:
        """The cancel marker into every node's state dir (so the agent reads the SIGTERM as a cancel, not a
        preemption), then SIGTERM to the job's steps (the agents): not to the batch shell and its srun, which
        answers a SIGTERM by killing its step at once ("forcing job termination"), grace or not."""
        body = f"{_mark(handle.job_id)}scancel --signal=TERM {handle.data.slurm_job} 2> /dev/null; true"
        try:
            self._cli(handle).sh(body, in_base=True)
        except Unreachable as e:
            sys.stderr.write(f"[launcher] warning: {e}; the cancel marker in the store still stops the job\n")

    interrupt = stop_softly  # Ctrl-C in the foreground: the same request

    def still_running(self, handle: Handle) -> bool:
        try:
            rec, _ = self._record(self._cli(handle), handle.data.slurm_job)
        except Unreachable:
            return True
        # A pending job has nothing to push: it goes at once.
        return rec is not None and reasons.ACTIVE_STATES.get(rec.get("JobState", "")) == "running"

    def kill_now(self, handle: Handle) -> None:
        """The job out of the queue, confirmed gone. Slurm has no kill without its KillWait (even `scancel -s
        KILL` is a cancel: SIGTERM to every process, SIGKILL KillWait later); the marker makes that SIGTERM a cancel
        to the agents, not a preemption."""
        sid = handle.data.slurm_job
        body = (f"{_mark(handle.job_id)}scancel {sid} 2> /dev/null; "
                f"for i in $(seq {GONE_TIMEOUT * 2}); do "
                f"s=$(squeue -h -j {sid} -o %T 2> /dev/null); [ -z \"$s\" ] && exit 0; sleep 0.5; done; "
                "echo \"$s\"; exit 1")
        code, out, _ = self._cli(handle).sh(body, timeout=GONE_TIMEOUT + 30, in_base=True)
        if code != 0:
            raise RuntimeError(f"Slurm job {sid} is still {out.strip() or 'in the queue'} "
                               f"{GONE_TIMEOUT} s after scancel")

    def release(self, handle: Handle) -> None:
        """The job is final: one still in the queue (it will never start, or waited past its pending timeout)
        leaves it; a requeueable job kept its secrets file for a rerun."""
        self._cli(handle).sh(f"scancel --state=PENDING {handle.data.slurm_job}")
        if handle.data.secrets:
            self._cli(handle).sh(f"rm -f {script.job_dir(handle.job_id)}/secrets.env", in_base=True)

    def confirm_teardown(self, handle: Handle) -> str:
        sid = handle.data.slurm_job
        try:
            rec, _ = self._record(self._cli(handle), sid)
        except Unreachable as e:
            return f"Slurm job {sid}: not confirmed ({e})"
        if rec is not None and rec.get("JobState") in reasons.ACTIVE_STATES:
            self.kill_now(handle)
            return f"Slurm job {sid} cancelled; its allocation is released"
        state = rec.get("JobState") if rec else "gone from the queue"
        return f"Slurm job {sid} {state.lower()}; its allocation is released"

    def sweep(self, now: float, options=None, *, dry_run: bool = False) -> list[str]:
        """Every job of yours tagged by launcher (its --comment) past its deadline, on the cluster that `options`
        (or the profile's slurm: section, else sbatch here) reaches. Other users' jobs are never touched."""
        opts = options if isinstance(options, SlurmOptions) else SlurmOptions.model_validate(options or {})
        cli = SlurmCli(opts.model_dump())
        cli.check_reachable()
        try:
            code, out, err = cli.sh('squeue -h -u "$(id -un)" -o "%i|%j|%k|%T"')
        except Unreachable as e:
            raise UserError(f"--backend slurm: {e}") from None
        if code != 0:
            raise UserError(f"squeue failed on {cli.where}: {last_line(err)}")
        ended = []
        for line in out.splitlines():
            sid, _, rest = line.partition("|")
            _, _, rest = rest.partition("|")
            tag, _, state = rest.rpartition("|")
            found = script.parse_comment(tag)
            if found is None or found[1] >= now:
                continue
            if not dry_run:
                cli.sh(f"scancel {sid}")
            ended.append(f"{found[0]} (Slurm job {sid}, {state.lower()})")
        return ended


def _sha256_of(cli: SlurmCli, rel: str) -> str | None:
    code, out, _ = cli.sh(f"sha256sum {shlex.quote(rel)}", in_base=True, timeout=120)
    return out.split()[0] if code == 0 and out.split() else None
