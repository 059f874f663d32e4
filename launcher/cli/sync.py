"""`launch sync up|down`: mirror the local datapool root with its store (file://, s3:// or modal-volume://)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

_EXPERIMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _common(f):
    opts = [
        click.option("--experiment", metavar="NAME", help="Only experiments/NAME/ on both sides."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Only paths matching GLOB (relative to the synced folder; repeatable)."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths matching GLOB (repeatable)."),
        click.option("--delete", is_flag=True, help="Delete destination files that the source does not have."),
        click.option("--dry-run", is_flag=True, help="List what would move; change nothing."),
        click.option("--datapool", metavar="URL", envvar="LAUNCH_DATAPOOL",
                     help="The store: file:///abs/dir, s3://bucket/prefix or modal-volume://NAME/path "
                          "(default: $LAUNCH_DATAPOOL)."),
        click.option("--root", metavar="DIR", type=click.Path(path_type=Path),
                     help="Local datapool root (default: $DATAPOOL_ROOT or ./datapool)."),
        click.option("--endpoint-url", metavar="URL",
                     help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL, else AWS)."),
        click.option("--region", metavar="REGION", help="AWS region (default: $AWS_REGION / profile)."),
        click.option("--aws-profile", metavar="NAME", help="AWS profile (default: $AWS_PROFILE)."),
        click.option("--profile", "launch_profile", metavar="FILE",
                     help="Launch profile (YAML): its datapool and experiment are the defaults here."),
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
    """


@sync.command("up")
@_common
def up(**kw) -> None:
    """Local root -> store."""
    _run("up", **kw)


@sync.command("down")
@_common
def down(**kw) -> None:
    """Store -> local root."""
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
        if launch_profile:
            from ..profile import load_profile

            prof = load_profile(launch_profile)
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


if __name__ == "__main__":
    sync(prog_name="launch sync")
