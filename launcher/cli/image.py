"""`launch image build`: the node image from images/Dockerfile, tagged with the lock's hash (launcher/images.py).

Docker runs it when it is on PATH; otherwise the exact command is printed for a machine that has Docker, since the
tag depends only on the lock and the build only on files in this repository.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import click

# Docker's reference grammar, minus digests: [host[:port]/]path[:tag], path components lowercase.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@click.group("image")
def image() -> None:
    """The node image every remote backend runs, built from images/requirements.lock.

    \b
    Examples:
      launch image build --dry-run                    # print the docker command, run nothing
      launch image build                              # build ghcr.io/launcher-ml/node:<lock hash> here
      launch image build --push registry.example.com/team/node
      launch image build --push registry.example.com/team/node:latest --no-gpu
    """


@image.command("build")
@click.option("--push", "push", metavar="REPO[:TAG]",
              help="Push to REPO after building. The image is always tagged REPO:<lock hash> (what container "
                   "backends run by default with LAUNCHER_IMAGE_REPO=REPO); a TAG is added as a second tag. "
                   "Default repo without --push: $LAUNCHER_IMAGE_REPO, else ghcr.io/launcher-ml/node.")
@click.option("--gpu/--no-gpu", default=True, show_default=True,
              help="Install the gpu extra's lock (unsloth, vllm, bitsandbytes) on top of the base lock.")
@click.option("--dry-run", is_flag=True, help="Print the docker command(s); run nothing.")
def build(push: str | None, gpu: bool, dry_run: bool) -> None:
    """Build the node image from images/Dockerfile, tagged with the lock's hash (and push it with --push).

    Without Docker on PATH the exact command is printed instead (exit 0), to run where Docker is.
    """
    from .. import images
    from ..errors import UserError

    repo, extra_tag = _parse_push(push) if push is not None else (images.default_repo(), None)
    for path, fix in ((images.DOCKERFILE, "build from a checkout of launcher's repository"),
                      (images.LOCK_FILE, "generate it with `python images/lock.py`"),
                      (images.GPU_LOCK_FILE, "generate it with `python images/lock.py`")):
        if not path.is_file():
            raise UserError(f"{path} is missing: {fix}")
    problems = images.lock_mismatches()
    if problems:
        raise UserError(f"the locks in images/ are out of date with pyproject.toml ({problems[0]}"
                        f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}): "
                        "regenerate it with `python images/lock.py`")

    tags = [f"{repo}:{images.lock_hash()}"] + ([f"{repo}:{extra_tag}"] if extra_tag else [])
    docker = shutil.which("docker")
    root = images.IMAGES_DIR.parent
    buildx = _has_buildx(docker) if docker else True
    if docker and not buildx and not dry_run and _docker_major(docker) >= 23:
        raise UserError("this Docker has no buildx plugin, and since Docker 23 BuildKit (images/Dockerfile caches "
                        "its uv downloads with RUN --mount) comes only with it: install it (the docker-buildx or "
                        "docker-buildx-plugin package), or print the commands with --dry-run")
    commands = build_commands(tags, gpu=gpu, push=push is not None, buildx=buildx)
    if dry_run or not docker:
        click.echo(f"cd {shlex.quote(str(root))}")
        for cmd in commands:
            click.echo(_shell(cmd))
        if not docker and not dry_run:
            click.echo("note: docker is not on PATH, so nothing was built: run the commands above where Docker "
                       "(with buildx) is installed, from a checkout of this repository", err=True)
        return
    for cmd in commands:
        click.echo(f"$ {_shell(cmd)}", err=True)
        # BuildKit: the classic builder would ignore images/Dockerfile.dockerignore and send all of .venv.
        rc = subprocess.call([docker, *cmd[1:]], cwd=root, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        if rc != 0:
            click.echo(f"error: `{shlex.join(cmd[:3])}` failed with exit code {rc} (its output is above)", err=True)
            sys.exit(rc)
    click.echo(tags[0])


def build_commands(tags: list[str], *, gpu: bool, push: bool, buildx: bool) -> list[list[str]]:
    """The docker command lines, run from the repository root: one `buildx build` (it pushes itself), or
    `docker build` then `docker push` per tag."""
    from .. import images

    args = ["-f", images.DOCKERFILE.relative_to(images.IMAGES_DIR.parent).as_posix(),
            # The lock pins Linux x86_64 wheels: an arm64 builder (a Mac) must still build amd64.
            "--platform", "linux/amd64",
            "--build-arg", f"CUDA_BASE={images.CUDA_BASE}",
            "--build-arg", f"PYTHON_VERSION={images.PYTHON_VERSION}",
            "--build-arg", f"GPU={1 if gpu else 0}"]
    for tag in tags:
        args += ["-t", tag]
    if buildx:
        return [["docker", "buildx", "build", *args, "--push" if push else "--load", "."]]
    return [["docker", "build", *args, "."]] + ([["docker", "push", tag] for tag in tags] if push else [])


def _shell(cmd: list[str]) -> str:
    return ("DOCKER_BUILDKIT=1 " if cmd[1] == "build" else "") + shlex.join(cmd)


def _has_buildx(docker: str) -> bool:
    try:
        return subprocess.run([docker, "buildx", "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _docker_major(docker: str) -> int:
    """The client's major version from `docker --version` (no daemon needed); 0 when it does not say."""
    try:
        out = subprocess.run([docker, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(r"version (\d+)\.", out)
    return int(found.group(1)) if found else 0


def _parse_push(value: str) -> tuple[str, str | None]:
    from ..errors import UserError

    slash = value.rfind("/")
    repo, tag = (value.rsplit(":", 1) if value.rfind(":") > slash else (value, None))
    if not _REPO.match(repo) or (tag is not None and not _TAG.match(tag)):
        raise UserError(f"bad --push {value!r}: use REPO or REPO:TAG with a lowercase repository, e.g. "
                        "--push registry.example.com/team/node or --push ghcr.io/me/node:latest")
    return repo, tag
