"""The modal backend: the launch path's verbs over Modal. Status and cancel meet the agent in the datapool store
(a Modal Volume or S3); logs stream from the app; Modal's timeout is the dead-man switch.

Teardown layers: the function returns when the agent is done; Modal's `timeout` (the deadline, 24 h at most per
attempt); `launch down` (cancel marker, then the call cancelled with its containers, then the app stopped); the
sweeper (`launch down --expired --backend modal`: every app of ours past the deadline in its tag).
"""
from __future__ import annotations

from typing import Iterator

from ...errors import UserError
from ...job import Job
from ...plan import Plan
from ...spec import PUSH_FAILED_EXIT
from ...units import format_duration
from ..base import Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation
from . import request


def _observation(status):
    """`status`'s answer as an Observation, whichever shape a branch returns it in."""
    import functools

    @functools.wraps(status)
    def look(self, handle: Handle) -> Observation:
        state, code, why = status(self, handle)
        return Observation(JobState(state), code, why)

    return look


class ModalHandle(HandleData):
    """The app and the function call `start` (app.submit) made; None in a record written before start returned."""

    app_id: str | None = None
    call_id: str | None = None


# The store a job uses when none is named: one volume per workspace, made on first use.
DEFAULT_VOLUME_URL = "modal-volume://launcher-datapool"


class ModalBackend(Backend):
    name = "modal"
    handle_type = ModalHandle
    where_fields = ("app_id",)
    capabilities = Capabilities(remote=True, gpus=request.gpus_offered(), spot=True, max_nodes=1,
                                datapool_schemes=("modal-volume", "s3"), resources_enforced=True, retries_itself=True)

    def check(self, job: Job) -> list[str]:
        notes = []
        request.gpu(job)  # a count Modal cannot give: exit 2 now, the client would only fail at submit
        if request.is_volume(job.datapool):
            request.volume_of(job.datapool)
        notes += request.check_runtime(job)
        if job.gpu and not job.spot:
            notes.append("Modal may preempt any GPU function (rarely) and restarts it on the same input; "
                         "--spot changes nothing there")
        if not job.gpu and not job.spot:
            notes.append("CPU-only without --spot: the function is non-preemptible, which Modal bills at 3x for "
                         "CPU and memory; --spot drops that")
        if job.max_restarts and not request.is_volume(job.datapool):
            notes.append("--max-restarts on Modal: a retried attempt finds its checkpoints only in a "
                         "modal-volume:// datapool; from an s3:// one it pulls data/ and model/base/ afresh")
        if job.keep_on_failure:
            notes.append("--keep-on-failure: a Modal container ends with its function; the job's files stay in "
                         "the datapool, its output in `launch logs`")
        notes.append(f"a store outage longer than --push-timeout ({format_duration(job.push_timeout)}) loses the "
                     "outputs not pushed by then: the container ends with its function")
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root=request.datapool_root(job),
                         state_dir=f"jobs/{job_id}")

    def render(self, plan: Plan) -> dict:
        return request.function_spec(plan)

    def price(self, job: Job) -> dict:
        return request.price(job)

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def gpu_offers(self, options=None) -> list:
        from .access import gpu_offers

        return gpu_offers(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        from ..base import CHECKED_AT_LAUNCH

        job = plan.job
        machine = [f"gpu {request.gpu(job)}" if job.gpu else "no GPU"]
        machine += [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in (("cpus", job.cpus), ("memory", job.memory), ("disk", job.disk)) if v]
        image = request.image_spec(job)
        token = "token accepted" if online else CHECKED_AT_LAUNCH  # online: after preflight's hello
        return [("workspace", f"your Modal token's ({token}); app {plan.job_id}"),
                ("machine", ", ".join(machine)),
                ("image", f"{image['base']}, python {image['python']}, lock {image['lock_hash'][:12]}")]

    def default_datapool(self, options=None, *, online: bool = False) -> str | None:
        return DEFAULT_VOLUME_URL

    def create_datapool(self, url: str, *, dry_run: bool = False) -> bool:
        from ...datapool.modal_volume import ensure_volume

        return ensure_volume(url, dry_run=dry_run)

    def preflight(self, plan: Plan) -> None:
        from . import app

        app.check_token()
        app.check_named_secrets(plan)

    def start(self, plan: Plan, *, detach: bool) -> dict:
        from . import app

        if plan.snapshot is None or plan.snapshot.path is None:
            raise UserError("no code snapshot to send: launch builds one from the project (run from its root)")
        submitted = app.submit(plan)
        from ... import progress  # the client uploads the snapshot as the function's mount, with the spawn

        progress.report(progress.SNAPSHOT, f"{progress.human_bytes(plan.snapshot.size)} sent with the function call")
        return submitted

    @_observation
    def status(self, handle: Handle) -> tuple[str, int | None, str | None]:
        from . import app

        d: ModalHandle = handle.data
        try:
            state, code, why = app.call_result(d.call_id)
        except app.Unreachable as exc:  # the control plane could not be asked: the job goes on, never `lost`
            return Observation(JobState.UNREACHABLE, None, str(exc))
        if state == "running":  # the reason: the call's state, for the launch's progress (waiting for the machine)
            return "running", None, f"function call {d.call_id} not returned yet"
        if state == "exited" and code == PUSH_FAILED_EXIT:  # the agent's own: the volume never took the last commit
            return "push_failed", code, (f"function call {d.call_id}: the store did not take the last push within "
                                         "--push-timeout; the outputs went with the container")
        if state == "exited":
            # Returned, yet no result.json in the store (status looked there first).
            return "lost", code, (f"function call {d.call_id} returned {code} but left no result in the store; "
                                  f"see `launch logs {handle.job_id}`")
        return state, code, why

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        """The app's output (its stdout: the agent's and the script's). `offset`: the bytes of this stream the
        caller has; it goes on right after them (from the app's last log entry id seen at or before that point,
        the rest skipped). A dropped or silent connection raises app.Unreachable; the caller reconnects."""
        from . import app

        return app.app_logs(handle.data.app_id, follow, offset=offset)

    def still_running(self, handle: Handle) -> bool:
        from . import app

        try:
            return app.call_result(handle.data.call_id)[0] == "running"
        except app.Unreachable:
            return True  # cannot tell: the cancel waits out its grace, then kills

    def kill_now(self, handle: Handle) -> None:
        from . import app

        app.cancel_call(handle.data.call_id)
        app.stop_app(handle.data.app_id)

    def sweep(self, now: float, options=None, *, dry_run: bool = False) -> list[str]:
        """Teardown layer 4, registry or not: every app of ours whose deadline tag has passed."""
        from . import app

        app.check_token()  # no token is one line, not the client's traceback
        found = app.expired(now)
        if not dry_run:
            for f in found:
                app.stop_app(f["app_id"])
        return [f"{f['app_id']} ({f['job']}, {f['state']})" for f in found]
