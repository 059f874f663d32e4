"""One lock feeds every node: images/Dockerfile, the Modal image and the bootstrap's venv all install
images/requirements.lock (launcher/images.py), the lock pins what pyproject asks for, and `launch image build`
runs (or prints) the docker command that tags the image with the lock's hash.

The bootstrap runs for real with bash, with stubs first on PATH: `python3` that sees only the standard library (so
no interpreter with launcher's dependencies is found), `python3.11` whose `-m venv` makes a venv whose `pip` only
records its arguments and whose `python` is this test's interpreter, so the agent really runs the job after it.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import images
from launcher.node import bootstrap
from launcher.cli import main
from launcher.snapshot import build
from launcher.spec import SPEC_VERSION, AgentSpec

REPO = Path(__file__).resolve().parents[1]
LOCK_REL = images.LOCK_FILE.relative_to(REPO).as_posix()
GPU_LOCK_REL = images.GPU_LOCK_FILE.relative_to(REPO).as_posix()


# -- the lock and pyproject ------------------------------------------------------------------------------------

def test_the_lock_pins_everything_pyproject_asks_for():
    assert images.lock_mismatches() == []


def test_the_lock_is_resolved_for_the_nodes_and_the_gpu_lock_only_adds():
    base, gpu = images.pins(images.LOCK_FILE), images.pins(images.GPU_LOCK_FILE)
    assert base["torch"] == "2.13.0"  # the project's pin, not whatever was newest
    assert "boto3" in base and "transformers" in base  # the aws and train extras
    assert any(name.startswith("nvidia-") for name in base), "torch's Linux CUDA wheels: resolved for Linux x86_64"
    assert {"unsloth", "vllm", "bitsandbytes"} <= set(gpu)
    # A package in both would be installed twice at possibly different versions; the gpu lock is additive.
    assert not set(base) & set(gpu), sorted(set(base) & set(gpu))
    for lock in (images.LOCK_FILE, images.GPU_LOCK_FILE):
        text = lock.read_text()
        assert "python images/lock.py" in text  # says how it was made
        # One platform: no environment markers, so every node installs exactly these versions.
        assert not [line for line in text.splitlines() if ";" in line and not line.lstrip().startswith("#")]


def _edited_pyproject(tmp_path: Path, old: str, new: str) -> Path:
    text = images.PYPROJECT.read_text()
    assert text.count(old) == 1, old
    copy = tmp_path / "pyproject.toml"
    copy.write_text(text.replace(old, new))
    return copy


@pytest.mark.parametrize("old, new, expected", [
    # a new dependency of a locked extra
    ('"pyarrow>=15",', '"pyarrow>=15",\n    "sentencepiece>=0.2",', "sentencepiece>=0.2: not pinned in requirements.lock"),
    # of launcher itself
    ('"rich>=13",', '"rich>=13",\n    "tenacity>=8",', "tenacity>=8: not pinned in requirements.lock"),
    # a pin moved in pyproject and not in the lock
    ('"torch==2.13.0"', '"torch==2.12.0"', "torch==2.12.0: requirements.lock pins 2.13.0"),
    # the gpu extra, checked against both locks
    ('gpu = ["unsloth", "vllm", "bitsandbytes"]', 'gpu = ["unsloth", "vllm", "bitsandbytes", "flash-attn"]',
     "flash-attn: not pinned in requirements-gpu.lock"),
])
def test_a_dependency_added_to_pyproject_and_not_to_the_lock_fails(tmp_path, old, new, expected):
    assert images.lock_mismatches(pyproject=_edited_pyproject(tmp_path, old, new)) == [expected]


def test_an_extra_the_nodes_do_not_install_is_not_checked(tmp_path):
    edited = _edited_pyproject(tmp_path, 'k8s = ["kubernetes>=29"]', 'k8s = ["kubernetes>=29", "not-in-any-lock"]')
    assert images.lock_mismatches(pyproject=edited) == []


# -- the Dockerfile ----------------------------------------------------------------------------------------------

def _dockerfile() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", images.DOCKERFILE.read_text())
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_installs_the_lock_then_launcher_without_dependencies():
    lines = _dockerfile()
    args = dict(line[4:].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line)
    # `launch image build` passes these from launcher/images.py; a bare `docker build` gets the same defaults.
    assert args["CUDA_BASE"] == images.CUDA_BASE and args["PYTHON_VERSION"] == images.PYTHON_VERSION
    assert "FROM ${CUDA_BASE}" in lines

    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from" not in line]
    assert LOCK_REL in copies[0] and GPU_LOCK_REL in copies[0]
    runs = [line for line in lines if line.startswith("RUN ")]
    install_lock = next(i for i, r in enumerate(runs) if f"-r {LOCK_REL}" in r)
    assert f"-r {GPU_LOCK_REL}" in runs[install_lock] and '"$GPU" = 1' in runs[install_lock]
    install_self = next(i for i, r in enumerate(runs) if "--no-deps ." in r)
    assert install_self > install_lock
    assert lines[-1] == 'ENTRYPOINT ["python", "-m", "launcher.node.agent"]'

    # Everything COPY names gets past images/Dockerfile.dockerignore (an allow-list after `*`).
    allowed = [line[1:].rstrip("/") for line in images.DOCKERFILE.with_name("Dockerfile.dockerignore")
               .read_text().splitlines() if line.startswith("!")]
    for src in (s for c in copies for s in c):
        assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is not in the build context"
        assert (REPO / src).exists(), src


# -- the Modal image ---------------------------------------------------------------------------------------------

def _modal_layers(image) -> list:
    """The DockerfileSpecs of a modal.Image, base first, built offline from the loader closures. modal's private
    structure (pinned in constraints.txt): a change there fails here, not silently."""
    from modal._utils.async_utils import synchronizer

    def cells(fn) -> dict:
        return dict(zip(fn.__code__.co_freevars, [c.cell_contents for c in fn.__closure__ or ()]))

    def walk(raw) -> list:
        cv = cells(raw._load)
        if "single_layer_image" in cv:  # from_registry(add_python=...) wraps its one layer
            return walk(cv["single_layer_image"])
        assert "dockerfile_function" in cv, f"modal.Image internals changed: {sorted(cv)}"
        out = [spec for base in (cv["base_images"] or {}).values() for spec in walk(base)]
        if cv["dockerfile_function"]:
            out.append(cv["dockerfile_function"]("2025.06"))
        return out

    return walk(synchronizer._translate_in(image))


def test_the_modal_image_installs_the_same_lock_on_the_same_base():
    try:
        from launcher.backends.modal.image import node_image
    except ImportError as exc:
        pytest.fail(f"launcher.backends.modal.image.node_image() is missing ({exc}): the Modal image must be built "
                    "from launcher.images.LOCK_FILE")
    layers = _modal_layers(node_image())
    assert layers[0].commands[0] == f"FROM {images.CUDA_BASE}"
    lock_layers = [spec for spec in layers if str(images.LOCK_FILE) in map(str, spec.context_files.values())]
    assert lock_layers, [(s.commands, s.context_files) for s in layers]
    target = next(k for k, v in lock_layers[0].context_files.items() if str(v) == str(images.LOCK_FILE))
    assert any("install" in cmd and target in cmd for cmd in lock_layers[0].commands), lock_layers[0].commands


# -- the bootstrap's venv ----------------------------------------------------------------------------------------

HELLO = 'import os\nprint("hello from the venv", os.environ["JOB_ID"], flush=True)\n'


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """bin/ of stubs, a project snapshot placed as the ssh backend places it, and run(job, gpu) -> (rc, output)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    real = sys.executable
    # No python3 with launcher's dependencies here: -S hides site-packages, the stdlib still unpacks the snapshot.
    _stub(stubs / "python3", f'exec {shlex.quote(real)} -S "$@"\n')
    venv_log, pip_log = tmp_path / "venv.log", tmp_path / "pip.log"
    parts = tmp_path / "venv-parts"
    parts.mkdir()
    _stub(parts / "pip", f'echo "$*" >> {shlex.quote(str(pip_log))}\n')
    _stub(parts / "python", f'exec {shlex.quote(real)} "$@"\n')
    # Its version asked (launcher/node/venvsetup.py checks the minor before it uses it): the real one's answer.
    _stub(stubs / "python3.11", f"""[ "$1" = -c ] && exec {shlex.quote(real)} -S "$@"
[ "$1 $2" = "-m venv" ] || exit 9
echo "$3" >> {shlex.quote(str(venv_log))}
mkdir -p "$3/bin" && cp {shlex.quote(str(parts))}/* "$3/bin/"
""")
    for name in ("shutdown", "poweroff", "halt"):
        _stub(stubs / name, "exit 0\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO)
    snap = build(project, cache_dir=tmp_path / "snapshots")
    base = tmp_path / "node"
    (base / "code").mkdir(parents=True)
    shutil.copyfile(snap.path, base / "code" / f"{snap.sha256}.tar.gz")
    store = tmp_path / "store"
    store.mkdir()

    def run(job_id: str, gpu: bool) -> tuple[int, str]:
        spec = AgentSpec(
            version=SPEC_VERSION, job_id=job_id, backend="ssh", run_name="venv", script="hello.py", args=[], env={},
            secrets=[], experiment="img", workdir=f"code/{snap.sha256}", datapool_root="datapool",
            store_url=store.as_uri(), endpoint_url=None, https_proxy=None, no_proxy=None, ca_bundle=None,
            state_dir=f"jobs/{job_id}", deadline_at=None,
            grace_period=5, push_interval=30, push_timeout=300, preemptible=False, attempt=1, relay=None)
        script = tmp_path / f"{job_id}.sh"
        script.write_text(bootstrap.render(spec, base=shlex.quote(str(base)), snapshot_sha=snap.sha256,
                                           snapshot_tar=f"code/{snap.sha256}.tar.gz", teardown="none"))
        if gpu:
            _stub(stubs / "nvidia-smi", "exit 0\n")
        else:
            (stubs / "nvidia-smi").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL")}
        # Only the stubs and the system's tools: no nvidia-smi, python3 or docker of this machine's.
        env.update(PATH=f"{stubs}:/usr/bin:/bin", OMP_NUM_THREADS="1")
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120,
                             start_new_session=True)
        state = base / "jobs" / job_id
        logs = "".join(p.read_text() for p in (state / "setup.log", state / "agent.log", state / "step.err")
                       if p.exists())
        return out.returncode, out.stdout + out.stderr + logs

    run.base, run.snap, run.venv_log, run.pip_log = base, snap, venv_log, pip_log
    return run


def test_the_bootstrap_builds_its_venv_from_the_lock_that_travels_with_the_agent(node):
    rc, out = node("venv-cpu", gpu=False)
    assert rc == 0, out
    assert "hello from the venv venv-cpu" in out
    # The project has no images/ of its own: the snapshot carries launcher's lock, byte for byte.
    code = node.base / "code" / node.snap.sha256
    assert not (code / "images").exists()
    assert (code / ".launcher-agent" / LOCK_REL).read_bytes() == images.LOCK_FILE.read_bytes()
    calls = node.pip_log.read_text().splitlines()
    assert calls == [f"install -q --requirement=code/{node.snap.sha256}/.launcher-agent/{LOCK_REL}"]
    venvs = node.venv_log.read_text().splitlines()
    assert len(venvs) == 1 and Path(venvs[0]).parent == node.base / "venvs"

    # The next job on the box reuses the venv: nothing created, nothing installed.
    rc, out = node("venv-again", gpu=False)
    assert rc == 0, out
    assert len(node.pip_log.read_text().splitlines()) == 1 and len(node.venv_log.read_text().splitlines()) == 1

    # Where CUDA is, the gpu lock goes on top, in a venv of its own.
    rc, out = node("venv-gpu", gpu=True)
    assert rc == 0, out
    agent = f"code/{node.snap.sha256}/.launcher-agent"
    assert node.pip_log.read_text().splitlines()[-1] == \
        f"install -q --requirement={agent}/{LOCK_REL} --requirement={agent}/{GPU_LOCK_REL}"
    assert len(set(node.venv_log.read_text().splitlines())) == 2


def test_the_bootstrap_names_the_lock_it_reads():
    assert bootstrap.LOCK == LOCK_REL
    assert f"--python-version {images.PYTHON_VERSION} " in bootstrap.TEMPLATE.replace("@@PYVER@@", images.PYTHON_VERSION)


# -- launch image build ------------------------------------------------------------------------------------------

def _launch(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(["image", "build", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


FAKE_DOCKER = """#!/bin/bash
printf '%s\\n' "$*" >> "$DOCKER_LOG"
[ "$1 $2" = "buildx version" ] && exit "${BUILDX_RC:-0}"
[ "$1" = --version ] && echo "Docker version ${DOCKER_VERSION:-20.10.24}, build 297e128" && exit 0
[ "$1" = push ] && [ -n "${PUSH_RC:-}" ] && exit "$PUSH_RC"
exit 0
"""


@pytest.fixture
def docker(tmp_path, monkeypatch):
    """A fake `docker` first on PATH; returns the path of its argv log (one line per call)."""
    bin_dir = tmp_path / "dockerbin"
    bin_dir.mkdir()
    _stub(bin_dir / "docker", FAKE_DOCKER.removeprefix("#!/bin/bash\n"))
    log = tmp_path / "docker.log"
    monkeypatch.setenv("DOCKER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("LAUNCH_IMAGE_REPO", raising=False)
    return log


def _expected_args(tags: list[str], gpu: str = "1") -> list[str]:
    args = ["-f", "images/Dockerfile", "--platform", "linux/amd64", "--build-arg", f"CUDA_BASE={images.CUDA_BASE}",
            "--build-arg", f"PYTHON_VERSION={images.PYTHON_VERSION}", "--build-arg", f"GPU={gpu}"]
    for tag in tags:
        args += ["-t", tag]
    return args


def test_without_docker_the_exact_command_is_printed(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "nodocker"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("LAUNCH_IMAGE_REPO", "registry.example.com/team/node")
    code, out, err = _launch(capsys)
    assert code == 0, err
    tag = f"registry.example.com/team/node:{images.lock_hash()}"
    lines = out.splitlines()
    assert lines[0] == f"cd {shlex.quote(str(REPO))}"
    assert shlex.split(lines[1]) == ["docker", "buildx", "build", *_expected_args([tag]), "--load", "."]
    assert "docker is not on PATH" in err and "nothing was built" in err


def test_buildx_builds_and_pushes_in_one_call_tagged_with_the_lock_hash(docker, capsys):
    code, out, err = _launch(capsys, "--push", "registry.example.com/team/node:latest", "--no-gpu")
    assert code == 0, err
    repo = "registry.example.com/team/node"
    tags = [f"{repo}:{images.lock_hash()}", f"{repo}:latest"]
    assert docker.read_text().splitlines() == [
        "buildx version", shlex.join(["buildx", "build", *_expected_args(tags, gpu="0"), "--push", "."])]
    assert out.strip() == tags[0]  # the reference to give --image


def test_without_buildx_docker_build_then_push_each_tag(docker, monkeypatch, capsys):
    monkeypatch.setenv("BUILDX_RC", "1")
    code, out, err = _launch(capsys, "--push", "localhost:5000/node")
    assert code == 0, err
    tag = f"localhost:5000/node:{images.lock_hash()}"
    assert docker.read_text().splitlines() == [  # Docker 20: BuildKit without buildx (DOCKER_BUILDKIT=1)
        "buildx version", "--version", shlex.join(["build", *_expected_args([tag]), "."]), f"push {tag}"]


def test_docker_23_or_later_without_buildx_is_one_line_and_builds_nothing(docker, monkeypatch, capsys):
    monkeypatch.setenv("BUILDX_RC", "1")
    monkeypatch.setenv("DOCKER_VERSION", "28.0.1")
    code, out, err = _launch(capsys, "--push", "localhost:5000/node")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: this Docker has no buildx plugin"), err
    assert docker.read_text().splitlines() == ["buildx version", "--version"]


def test_dry_run_runs_nothing(docker, capsys):
    code, out, err = _launch(capsys, "--dry-run")
    assert code == 0, err
    assert docker.read_text().splitlines() == ["buildx version"]  # asked which builder to print, built nothing
    assert f"-t {images.DEFAULT_REPO}:{images.lock_hash()}" in out


def test_a_failed_docker_call_is_the_exit_code_and_stops_there(docker, monkeypatch, capsys):
    monkeypatch.setenv("BUILDX_RC", "1")
    monkeypatch.setenv("PUSH_RC", "3")
    code, out, err = _launch(capsys, "--push", "ghcr.io/me/node:v1")
    assert code == 3
    assert [line.split()[0] for line in docker.read_text().splitlines()] == ["buildx", "--version", "build", "push"]
    assert "failed with exit code 3" in err and out == ""


@pytest.mark.parametrize("argv, message", [
    (["--push", "Registry.example.com/Team/Node"], "bad --push 'Registry.example.com/Team/Node'"),
    (["--push", "ghcr.io/me/node:bad tag"], "bad --push 'ghcr.io/me/node:bad tag'"),
    (["--push", ""], "bad --push ''"),
])
def test_a_bad_push_target_is_one_line_and_nothing_runs(docker, capsys, argv, message):
    code, out, err = _launch(capsys, *argv)
    assert code == 2
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    assert not docker.exists()


def test_a_missing_or_stale_lock_is_refused_before_docker_runs(docker, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images, "LOCK_FILE", tmp_path / "requirements.lock")
    code, _, err = _launch(capsys)
    assert code == 2 and "requirements.lock is missing: generate it with `python images/lock.py`" in err, err

    stale = tmp_path / "requirements.lock"
    stale.write_text(REPO.joinpath(LOCK_REL).read_text().replace("torch==2.13.0", "torch==2.12.0"))
    code, _, err = _launch(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "out of date with pyproject.toml (torch==2.13.0: requirements.lock pins 2.12.0)" in err
    assert "python images/lock.py" in err
    assert not docker.exists()


def test_image_build_help_is_light(launcher_env):
    code = ("import sys\nfrom launcher.cli import main\ntry:\n    main(['image', 'build', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'boto3', 'kubernetes', 'modal', 'packaging') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=launcher_env, timeout=60)
    assert "--push REPO[:TAG]" in out.stdout and out.stdout.strip().endswith("[]"), out.stdout + out.stderr
