"""`launch sync up|down`: mirror the local datapool root with its store (file://, s3://, sftp:// or modal-volume://);
`launch sync up --from-job JOB` finishes a job that ended push_failed, from the outputs its node kept;
`launch sync down --from-job JOB` brings a job's outputs from its store to the local root."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from ..envvars import option_default

_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _common(f):
    opts = [
        click.option("--experiment", metavar="NAME", help="Only experiments/NAME/ on both sides."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Only paths matching GLOB (relative to the synced folder; repeatable)."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths matching GLOB (repeatable)."),
        click.option("--delete", is_flag=True, help="Delete destination files that the source does not have."),
        click.option("--dry-run", is_flag=True, help="List what would move; change nothing."),
        click.option("--datapool", metavar="URL", callback=option_default("DATAPOOL"),
                     help="The store: file:///abs/dir, s3://bucket/prefix, sftp://[user@]host[:port]/~/dir "
                          "or modal-volume://NAME/path (default: $LAUNCHER_DATAPOOL)."),
        click.option("--root", metavar="DIR", type=click.Path(path_type=Path),
                     help="Local datapool root (default: $DATAPOOL_ROOT or ./datapool)."),
        click.option("--endpoint-url", metavar="URL",
                     help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL, else AWS)."),
        click.option("--region", metavar="REGION", help="AWS region (default: $AWS_REGION / profile)."),
        click.option("--aws-profile", metavar="NAME", help="AWS profile (default: $AWS_PROFILE)."),
        click.option("--profile", "launch_profile", metavar="FILE",
                     help="Launch profile (YAML), over the default one (~/.config/launcher/config.yaml): "
                          "its datapool and experiment are the defaults here."),
        click.option("--workers", type=click.IntRange(1, 256), default=16, show_default=True,
                     help="Parallel transfers."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group("sync")
def sync() -> None:
    """Sync the local datapool with its store, by manifest (only changed files move, verified, atomic).

    \b
      launch sync up   --datapool s3://bucket/pool --experiment demo
      launch sync down --datapool s3://bucket/pool --experiment demo --include 'model/base'
      launch sync up   --datapool file:///mnt/pool --delete --dry-run
      launch sync up   --datapool sftp://ubuntu@gpu-box/~/.launcher-node/pool --experiment demo
      launch sync up   --from-job JOB      # a push_failed job: its outputs from its node, pushed from here
      launch sync down --from-job JOB      # a job's outputs (model/, data/tokenized/, reports/) from its store
    """


@sync.command("up")
@_common
@click.option("--from-job", metavar="JOB",
              help="Finish a job that ended push_failed (its store did not answer in time): fetch the outputs its "
                   "node kept, push them to the job's store with your credentials, then record the job's result.")
def up(from_job, **kw) -> None:
    """Local root -> store (or, with --from-job, a push_failed job's node -> its store)."""
    if from_job:
        _from_job(from_job, **kw)
        return
    _run("up", **kw)


@sync.command("down")
@_common
@click.option("--from-job", metavar="JOB",
              help="The job's outputs (its experiment's model/, data/tokenized/, reports/) from the job's own store "
                   "to the local root (--root); --include names other folders instead, --exclude leaves some out.")
def down(from_job, **kw) -> None:
    """Store -> local root (with --from-job, the job's store and experiment)."""
    if from_job:
        _outputs_of_job(from_job, **kw)
        return
    _run("down", **kw)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _run(direction: str, experiment, include, exclude, delete, dry_run, datapool, root, endpoint_url, region,
         aws_profile, launch_profile, workers) -> None:
    from ..datapool import DatapoolUserError, SyncError, open_store, sync as run_sync
    from ..datapool.local import LocalStore
    from ..datapool.report import PlainReporter, RichReporter
    from ..errors import UserError

    local = remote = None
    try:
        from ..profile import launch_profile as profile_fields

        prof = profile_fields(launch_profile)  # the default profile (config.yaml), then --profile
        datapool = datapool or prof.get("datapool")
        experiment = experiment or prof.get("experiment")
        if experiment is not None and (not _EXPERIMENT.match(experiment) or ".." in experiment):
            raise DatapoolUserError(f"bad --experiment {experiment!r}: use letters, digits, '.', '_', '-'")
        sub = f"experiments/{experiment}" if experiment else ""
        root = Path(root or os.environ.get("DATAPOOL_ROOT") or "datapool").expanduser().resolve()
        remote = open_store(datapool, sub, endpoint_url=endpoint_url, region=region, profile=aws_profile,
                            workers=workers, readonly=dry_run)
        local = LocalStore(root, sub, readonly=dry_run)
        if direction == "up" and not local.base.is_dir():
            raise DatapoolUserError(f"nothing to upload: {local.base} does not exist (set --root or DATAPOOL_ROOT)")
        if local.root == getattr(remote, "root", None):
            raise DatapoolUserError(f"--datapool {datapool} is the local root itself: nothing to sync")
        src, dst = (local, remote) if direction == "up" else (remote, local)
        reporter = RichReporter() if sys.stderr.isatty() and not dry_run else PlainReporter()
        run_sync(src, dst, include=include, exclude=exclude, delete=delete, dry_run=dry_run, workers=workers,
                 reporter=reporter)
    except (DatapoolUserError, UserError) as exc:
        _fail(str(exc), 2)
    except SyncError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        # The up-front checks cover a read-only or missing root; this is the disk changing under a running sync
        # (a folder made read-only, a full disk): what landed is whole, so it is a failed sync, not a traceback.
        _fail(f"{exc}; fix it and re-run (every file that landed is whole)", 1)
    except KeyboardInterrupt:
        _fail("interrupted; nothing partial was written, re-run to finish", 130)
    finally:
        for store in (local, remote):
            if store is not None:
                store.close()


def _outputs_of_job(job_id, experiment, include, exclude, delete, dry_run, datapool, root, endpoint_url, region,
                    aws_profile, launch_profile, workers) -> None:
    """`sync down --from-job`: the store and experiment come from the job's record; the rest is `sync down`, limited
    to what a job pushes (work in progress, dot-files and tmp-checkpoint-N/, stays out as the agent leaves it)."""
    from ..datapool import DatapoolUserError
    from ..datapool.node import IN_PROGRESS, OUTPUTS
    from ..errors import UserError

    given = [flag for flag, v in (("--experiment", experiment), ("--delete", delete), ("--datapool", datapool),
                                  ("--profile", launch_profile)) if v]
    try:
        if given:
            raise UserError(f"--from-job takes the job's own store and experiment: drop {', '.join(given)}")
        from ..backends import get_backend
        from ..registry import Registry

        rec = Registry().get(job_id)  # an unknown id is one line
        ref = get_backend(rec.backend).handle(rec.id, rec.handle).data.store
        if not ref.store_url:
            raise UserError(f"job {rec.id} has no store to fetch from: its datapool was a folder on this machine "
                            f"({ref.local_root or 'unknown'}) or one only its nodes mount")
    except (DatapoolUserError, UserError) as exc:
        _fail(str(exc), 2)
    _run("down", ref.experiment, tuple(include) or OUTPUTS, (*IN_PROGRESS, *exclude), False, dry_run, ref.store_url,
         root, endpoint_url or ref.endpoint_url, region, aws_profile, None, workers)


def _from_job(job_id, experiment, include, exclude, delete, dry_run, datapool, root, endpoint_url, region,
              aws_profile, launch_profile, workers) -> None:
    """push_failed -> the state the script earned: the backend fetches what the node kept into a temporary
    experiment folder, the sync engine pushes it (verified: a second look finds nothing left to copy), then
    result.json (reason `exited`, `recovered_by`) goes last, as the agent would have, and the registry follows."""
    from ..datapool import DatapoolUserError, SyncError
    from ..errors import UserError

    given = [flag for flag, v in (("--experiment", experiment), ("--include", include), ("--exclude", exclude),
                                  ("--delete", delete), ("--dry-run", dry_run), ("--datapool", datapool),
                                  ("--root", root), ("--profile", launch_profile)) if v]
    try:
        if given:
            raise UserError(f"--from-job takes the job's own store and experiment: drop {', '.join(given)}")
        _recover(job_id, endpoint_url, region, aws_profile, workers)
    except (DatapoolUserError, UserError) as exc:
        _fail(str(exc), 2)
    except SyncError as exc:
        _fail(f"{exc}; the job stays push_failed", 1)
    except KeyboardInterrupt:
        _fail("interrupted; the job stays push_failed, re-run to finish", 130)


def _recover(job_id, endpoint_url, region, aws_profile, workers) -> None:
    import json
    import tempfile
    import time

    from .. import api
    from ..backends import get_backend
    from ..backends.base import ACTIVE, state_from_result
    from ..datapool import SyncError, open_store, sync as run_sync
    from ..datapool.local import LocalStore
    from ..datapool.node import IN_PROGRESS, OUTPUTS, RESULT_GLOB
    from ..datapool.report import PlainReporter
    from ..errors import UserError
    from ..registry import Registry, launcher_home

    registry = Registry()
    rec = registry.get(job_id)
    job_id = rec.id
    backend = get_backend(rec.backend)
    handle = backend.handle(rec.id, rec.handle)
    state = api.reconcile(job_id)[0]  # records an end it finds
    if state in ACTIVE:
        raise UserError(f"job {job_id} is {state}: --from-job finishes a job that ended push_failed; wait for "
                        f"its end (`launch status {job_id}`)")
    if state != "push_failed":
        raise UserError(f"job {job_id} ended {state}, not push_failed: its outputs went to the store as it ended; "
                        "nothing to recover")
    ref = handle.data.store
    if not ref.store_url:
        raise UserError(f"job {job_id} has no store to push to (its datapool was this machine's folder)")
    sub = f"experiments/{ref.experiment}"
    with tempfile.TemporaryDirectory(prefix="launch-recover-") as tmp:
        exp_dir = Path(tmp) / sub
        exp_dir.mkdir(parents=True)
        backend.fetch_outputs(handle, into=exp_dir)  # UserError where the backend keeps nothing of a job
        report = exp_dir / "reports" / "jobs" / job_id / "result.json"
        try:
            kept = json.loads(report.read_text())
        except (OSError, ValueError):
            kept = {"job_id": job_id, "exit_code": rec.exit_code}
        local = LocalStore(Path(tmp), sub)
        remote = open_store(ref.store_url, sub, endpoint_url=endpoint_url or ref.endpoint_url, region=region,
                            profile=aws_profile, workers=workers)
        try:
            filters = dict(include=list(OUTPUTS), exclude=[RESULT_GLOB, *IN_PROGRESS])
            pushed = run_sync(local, remote, workers=workers, reporter=PlainReporter(), **filters)
            left = run_sync(local, remote, workers=workers, dry_run=True, **filters).plan.copy
            if left:
                raise SyncError(f"{len(left)} file(s) still differ in the store after the push (e.g. {left[0][0]})")
            result = {**kept, "reason": "exited", "recovered_by": "sync up --from-job", "recovered_at": time.time()}
            if "error" in result:
                result["push_error"] = result.pop("error")  # what the agent said when it gave up
            result.pop("stopped_by", None)
            if kept.get("stopped_by"):
                result["reason"] = kept["stopped_by"]  # a timeout or cancel before the push stays what it was
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result, indent=2) + "\n")
            rel = report.relative_to(exp_dir).as_posix()
            run_sync(local, remote, include=[rel], workers=1)  # last, alone: a result means complete outputs
        finally:
            local.close()
            remote.close()
    final = state_from_result(result)
    registry.recover(job_id, final, result.get("exit_code"))
    (launcher_home() / "jobs" / job_id / "reason.txt").unlink(missing_ok=True)  # it said push_failed
    code = result.get("exit_code")
    click.echo(f"{job_id}: {final}" + ("" if code is None else f" (exit code {code})")
               + f"; {pushed.copied} file(s) pushed to {ref.store_url}, then result.json")


if __name__ == "__main__":
    sync(prog_name="launch sync")
