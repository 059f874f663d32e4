"""The docs' commands run as written, so the docs cannot rot: every command line of every bash/sh/console block in
README.md, docs/*.md and docs/backends/*.md (and the README's runners table), and every Python block, either runs
here or is excluded by a named rule below that says why (a cloud account, a GPU, a remote box, a server that never
ends, your own data, a run too long for this module that another test runs). A line no rule covers fails the
collection, so a new docs line cannot rot silently: give it a rule, or make it run.

They run from the repo root like a user who followed the setup line: a bare environment whose PATH starts with
this venv's bin (what `source .venv/bin/activate` does), a private HOME and LAUNCHER_HOME, and a private datapool
($LAUNCHER_DATAPOOL for the CLI, $DATAPOOL_ROOT for the runners and the Python API), so nothing lands in the repo.
Each README block is a unit with its own datapool; each docs page is one unit, its blocks in order (each block its
own shell) sharing one datapool, as a reader who follows the page. A cloud plan (`launch --dry-run --backend ec2
...`) is offline and runs; so does `launch gpus`.

Two units run at a time (the module's budget is 3 minutes on 2 cores; every run is a single-threaded tiny job).
`python tests/test_readme_commands.py` prints every excluded line with its rule.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "docs" / "backends").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
# Fences that hold no commands: output, diagrams, file contents (`""` is a diagram or a listing).
OTHER_FENCES = {"python", "text", "yaml", "json", ""}

# ---------------------------------------------------------------------------------------------------------------
# The rules for what is not run here, each named, with its reason. The first that matches a command decides.
# ---------------------------------------------------------------------------------------------------------------
# The setup line made the venv this test runs in, and the test commands are this suite.
SELF = re.compile(r"^(?:bash scripts/setup\.sh|bash scripts/test\.sh|(?:\.venv/bin/)?python -m pytest)\b")
# Activating the venv is what this test's PATH already does.
ACTIVATE = "source .venv/bin/activate"
# A usage synopsis (`prepare.py --input FILES... [options]`, `relay serve ... --tls-cert`), not a command.
SYNOPSIS = re.compile(r"\.\.\.|\s\[-")
# A placeholder stands for your own job id or experiment (`launch logs JOB -f`, `--experiment EXP`).
PLACEHOLDER = re.compile(r"(?<![$\w])(?:JOB|EXP)\b(?!=)")
# A server runs until it is stopped (the relay commander itself is run by `launch relay up` below).
SERVER = re.compile(r"^launch relay serve\b|^tensorboard\b")
# GPU-only: the CUDA smoke and the GPU benchmark (its CPU rehearsal has its own rule).
GPU = re.compile(r"^bash bench/gpu_smoke\.sh\b|^python bench/hrm_lm_bench\.py\b")
# On (or about) a remote box: ssh to it, its host key, a pip install on the instance.
REMOTE = re.compile(r"^(?:ssh|ssh-keyscan|ssh-keygen -lf /etc/ssh/)\b|^/opt/\S+/pip\b")
# A real account: the AWS CLI, kubectl on a cluster, a Modal token, a W&B or Hugging Face key (or setting one).
ACCOUNT = re.compile(r"^(?:aws|kubectl|modal)\s|--secret (?:WANDB_API_KEY|HF_TOKEN)\b|^export \w*(?:TOKEN|KEY)\w*=")
# A heredoc that writes a file into your HOME (the private HOME here: a profile the lines after it use) runs.
HEREDOC = re.compile(r"^cat > ~/\S+ <<")
# A shared filesystem this machine does not mount.
SHARED_FS = re.compile(r"file:///(?:mnt|shared)/")
# Pointing what follows at a cloud store, a corporate endpoint or proxy: this line and the rest of its block.
CLOUD_ENV = re.compile(r"^export (?:LAUNCHER_DATAPOOL=(?!file://)|AWS_ENDPOINT_URL|HTTPS?_PROXY|NO_PROXY|AWS_CA_BUNDLE)")
# Your own model or data, not in the repo.
USER_DATA = {
    r"model/base/my-model": "your own model (model/base/my-model)",
    r"--mixture configs/data/pretrain/example\.yaml": "your own raw data (web/, code.parquet, books.txt in data/raw/cpt)",
    r"(?:^|\s)squad/|squad_prompts": "the SQuAD download (squad/train.jsonl)",
    r"datapool/experiments/hrm/data/raw/cpt": "your own corpus (data/raw/cpt of experiment hrm)",
}
# A cloud plan is offline, and the GPU catalog is data: both run whatever the backend.
OFFLINE = re.compile(r"^launch (?:gpus\b|(?:-\S*(?: (?!-)(?!\S+\.py\b)\S+)? )*--dry-run\b)")
# Needs a cloud account or a remote box: a cloud store, another backend, an S3 endpoint, an ssh host, a cluster
# context, a relay commander elsewhere, a profile whose backend is one of those.
CLOUD = re.compile(r"s3://|modal-volume://|sftp://|--endpoint-url|--host\b|--context\b|--relay http"
                   r"|(?:^|\s)(?:--backend|-b)[ =](?!local\b)")
# A command that runs here: `launch` (bare, through the venv, captured `JOB=$(launch ...)`, or loading the
# completion `eval "$(launch completion bash)"`), a runner through `python` (variables before it are fine), a
# variable set for the lines after it, a file written by a heredoc (into the private HOME), an offline validator,
# a folder made or a file copied within your HOME (the private HOME here; docs/hrm_lm.md copies a checkpoint alone).
RUNNABLE = re.compile(r"^export [A-Z_][A-Z0-9_]*=|^(?:[A-Z_]+=\$\(|eval \"\$\()?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*"
                      r"(?:(?:\.venv/bin/)?launch|python3?|cat > \S+ <<|kubernetes-validate)(?:\s|$)"
                      r"|^(?:mkdir -p|cp)(?: ~/\S+)+$")

# Lines too long for this module's budget, each run by the test named (that test file must hold it).
RUN_ELSEWHERE = {
    ("docs/benchmarks.md", "DEVICE=cpu RL_STEPS=2 SFT_STEPS=2 bash bench/gpu_smoke.sh"):
        ("tests/test_gpu_smoke.py::test_cpu_rehearsal_runs_every_job_and_prints_the_table",
         "four trainings through launch (~1 min of CPU)"),
    ("docs/hrm_lm.md", "python runners/hrm_lm_run.py --config configs/hrm_lm/smoke.yaml --run_name add --seed 1 "
                       "--steps 400 --batch_size 64 --weight_decay 1.0 --warmup_steps 20 --val_every 100 "
                       "--save_best_model"):
        ("tests/hrm_lm/test_hrm_addition.py::test_reaches_90_percent_exact_match_on_held_out",
         "400 training steps (~20 s of CPU)"),
    ("docs/hrm_lm.md", 'python runners/hrm_lm/generate.py --run_name add --prompt "What is 3 + 4?"'):
        ("tests/hrm_lm/test_hrm_addition.py::test_generate_cli_answers_held_out_prompts",
         "reads the run of the 400-step line above"),
    ("docs/hrm_lm.md", "python runners/hrm_lm_run.py --config configs/hrm_lm/addition_strict.yaml "
                       "--run_name add-strict"):
        ("tests/hrm_lm/test_hrm_addition_strict.py::test_strict_held_out_exact_match_is_well_above_baseline",
         "1500 training steps (~30 s of CPU)"),
    ("docs/runners.md", "python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py"):
        ("tests/runners/test_runner_sft.py::test_sft_loss_falls_eval_loop_tensorboard_finished",
         "30 SFT steps, then the same again (a no-op): two processes (~15 s of CPU)"),
    ("docs/runners.md", "python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py "
                        "--set trainer.max_steps=50"):
        ("tests/runners/test_runner_sft.py::test_sft_loss_falls_eval_loop_tensorboard_finished",
         "extends the run of the two lines above (~10 s)"),
    ("docs/pipelines.md", "launch pipeline -c configs/experiments/demo/pipeline.py --from train_rl_0"):
        ("tests/pipeline/test_pipeline_steps.py::test_only_from_force_and_a_missing_output",
         "GRPO and eval again (~16 s of CPU)"),
    ("docs/pipelines.md", "launch pipeline -c configs/experiments/demo/pipeline.py --only eval_0"):
        ("tests/pipeline/test_pipeline_steps.py::test_only_from_force_and_a_missing_output", "eval again (~6 s)"),
    ("docs/runners.md", "python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py "
                        "--set output.report_to=[tensorboard] --set run_name=sft-tb"):
        ("tests/runners/test_runner_sft.py::test_sft_loss_falls_eval_loop_tensorboard_finished",
         "an SFT smoke run with TensorBoard (~12 s)"),
    ("docs/runners.md", "WANDB_MODE=offline python runners/rl_run.py --config configs/rl/smoke.yaml "
                        "--task tasks/smoke_task.py --wandb_project p --set run_name=rl-wandb"):
        ("tests/runners/test_runner_rl.py::test_grpo_raises_reward_and_writes_outputs",
         "a GRPO smoke run with wandb offline (~20 s)"),
    ("docs/runners.md", "python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py "
                        "--eval_interval 10 --eval_batches 2 --set run_name=dpo-eval"):
        ("tests/runners/test_runner_dpo.py::test_dpo_reward_accuracy_rises", "a DPO smoke run with evals (~20 s)"),
    ("docs/runners.md", "python runners/sft_run.py --config configs/sft/smoke.yaml --task-module tasks.smoke_task "
                        "--data_config configs/data/posttrain/sft/raw_chat.yaml --eval_interval 10 --eval_batches 1 "
                        "--set run_name=sft-mix"):
        ("tests/runners/test_runner_seed_cli.py::test_minimind_data_config_use_prepared_eval_and_wandb",
         "tokenize + SFT smoke (~15 s), and the raw chat rows it needs are yours"),
    ("docs/runners.md", "python runners/sft_run.py --config configs/sft/smoke.yaml --task-module tasks.smoke_task "
                        "--data_config configs/data/posttrain/sft/raw_chat.yaml --use_prepared "
                        "--set run_name=sft-again"):
        ("tests/runners/test_runner_seed_cli.py::test_minimind_data_config_use_prepared_eval_and_wandb",
         "reads what the line above tokenized (~15 s)"),
    ("docs/runners.md", "python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/dpo/smoke.yaml --set trainer.max_steps=2 --set "
                        "run_name=dpo-mix"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, dpo (a training each)"),
    ("docs/runners.md", "python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/dpo/smoke.yaml --use_prepared --set trainer.max_steps=2 "
                        "--set run_name=dpo-prep"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, dpo (a training each)"),
    ("docs/runners.md", "python runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/rlaif/grpo.yaml --set trainer.max_steps=2 --set "
                        "run_name=grpo-mix"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, grpo (a training each)"),
    ("docs/runners.md", "python runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/rlaif/grpo.yaml --use_prepared --set "
                        "trainer.max_steps=2 --set run_name=grpo-prep"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, grpo (a training each)"),
    ("docs/runners.md", "python runners/ppo_run.py --config configs/ppo/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/rlaif/ppo.yaml --set trainer.max_steps=2 --set "
                        "run_name=ppo-mix"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, ppo (a training each)"),
    ("docs/runners.md", "python runners/spo_run.py --config configs/spo/smoke.yaml --task tasks/smoke_task.py "
                        "--data_config configs/data/posttrain/rlaif/spo.yaml --set trainer.max_steps=2 --set "
                        "run_name=spo-mix"):
        ("tests/runners/test_runner_mixtures.py::test_seed_data_config_then_use_prepared",
         "the seed's --data_config/--use_prepared line, spo (a training each)"),
    ("docs/runners.md", "python runners/cpt_run.py --config configs/cpt/smoke.yaml --data_config "
                        "configs/data/pretrain/smoke.yaml --set trainer.max_steps=4 --set run_name=cpt-mix"):
        ("tests/runners/test_runner_mixtures.py::test_cpt_data_config_on_the_shipped_config",
         "tokenize + train a tokenizer + CPT (the test runs the line without overrides)"),
}
# Python blocks that are not run here: (doc, first line) -> reason.
PYTHON_NOT_RUN = {
    ("docs/api.md", "import launcher"):
        "run as written (and type-checked) by tests/test_sdk.py::test_docs_api_example_runs_as_written",
    ("docs/contract.md", "import sys"): "the first lines of a script in runners/ (uses __file__), not a program",
    ("docs/tokenize.md", "from runners.data.pretokenized import load_pretokenized_sft"):
        "reads data/tokenized/sft/chat, made from your own model's tokenizer (model/base/my-model)",
}
# Each PYTHON_NOT_RUN entry that names a test: that test must exist.
PYTHON_RUN_ELSEWHERE = {("docs/api.md", "import launcher"): "tests/test_sdk.py::test_docs_api_example_runs_as_written"}


@dataclass
class Verdict:
    rule: str  # "run", or the rule that excludes it
    reason: str = ""


@dataclass
class Step:
    kind: str  # "bash" | "python"
    doc: str
    start: int  # the fence's line
    commands: list[tuple[int, str]] = field(default_factory=list)  # bash: (line, command); python: [(line, code)]


@dataclass
class Unit:
    id: str
    steps: list[Step]
    outputs: set[str] = field(default_factory=set)  # files its `> name` lines write into the repo root

    @property
    def commands(self) -> list[str]:
        return [c for s in self.steps for _, c in s.commands]

    @property
    def cost(self) -> int:
        """How many runner processes it starts (each ~5-15 s): the longest units start first."""
        return sum(1 for c in self.commands if _trains(c) or re.match(r"^import|.*relay up", c))


def _trains(command: str) -> bool:
    """The line starts a runner or a pipeline (seconds of CPU each), not a plan or a status."""
    command = _uncommented(command)
    return bool(re.search(r"(?:^|\s)runners/\S+\.py|pipeline -c", command)) and "--dry-run" not in command \
        and "pipeline status" not in command


def _rel(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def _same(command: str) -> str:
    """What makes two docs lines the same command: not the venv prefix, spacing or a trailing comment."""
    return " ".join(re.sub(r"\s#\s.*$", "", command.replace(".venv/bin/launch", "launch", 1)).split())


def _fences(doc: Path):
    """(info string, fence line, [(line, text)]) for each fenced block."""
    fence, start, body = None, 0, []
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        if fence is None and line.startswith("```"):
            fence, start, body = line[3:].strip(), n, []
        elif fence is not None and line.startswith("```"):
            yield fence, start, body
            fence = None
        elif fence is not None:
            body.append((n, line))


def _joined(fence: str, body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """A shell block's commands: continuation lines and heredocs joined, comments and blank lines dropped; in a
    console block only the `$ ` lines are commands."""
    out, cur, first, heredoc = [], "", 0, None
    for n, line in body:
        if heredoc is not None:
            cur += "\n" + line
            if line.strip() == heredoc:
                out.append((first, cur))
                cur, heredoc = "", None
            continue
        if not cur:
            if fence == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = n
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip() + " "
            continue
        if m := re.search(r"<<-?'?\"?(\w+)'?\"?\s*$", cur):
            heredoc = m.group(1)
            continue
        out.append((first, cur.strip()))
        cur = ""
    assert not cur, f"a command never ends (continuation or heredoc) at line {first}"
    return out


def _parts(command: str) -> list[str]:
    """A line's commands, split at `&&` and `;` outside quotes and `$(...)` (a pipeline or a heredoc stays one
    command)."""
    if "\n" in command:
        return [command]
    parts, cur, quote, depth, i = [], "", None, 0, 0
    while i < len(command):
        ch = command[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif command.startswith("$(", i):
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0 and (command.startswith("&&", i) or ch == ";"):
            parts.append(cur)
            cur, i = "", i + (2 if ch == "&" else 1)
            continue
        cur += ch
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _profile_backend(doc: Path, command: str, block_text: str) -> str | None:
    """The backend of a `--profile FILE` on the line: from a heredoc on the page that writes FILE, a yaml block of
    the page headed `# FILE`, or the repo's file. None: no profile; "?": a profile of your own the docs do not
    show."""
    m = re.search(r"--profile[ =](\S+)", command)
    if not m:
        return None
    path = m.group(1)
    if h := re.search(rf"cat > {re.escape(path)} <<'?(\w+)'?\n(.*?)\n\1", block_text + doc.read_text(), re.S):
        text = h.group(2)
    elif y := re.search(rf"```yaml\n# {re.escape(path)}\n(.*?)```", doc.read_text(), re.S):
        text = y.group(1)
    elif (REPO / path).is_file():
        text = (REPO / path).read_text()
    else:
        return "?"
    b = re.search(r"^backend:\s*(\S+)", text, re.M)
    return b.group(1) if b else "local"


def _uncommented(command: str) -> str:
    """The command without its trailing `# comment` (a `#` outside quotes after a space)."""
    quote = None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i and command[i - 1].isspace() and "\n" not in command[:i]:
            return command[:i].rstrip()
    return command


def classify(doc: Path, command: str, block_text: str, tainted: dict[str, str]) -> Verdict:
    """The rule for one command (one part of a line, its trailing comment aside); raises when none applies."""
    rel, command = _rel(doc), _uncommented(command)
    if SELF.match(command):
        return Verdict("SELF", "the setup made this test's venv; the test command is this suite")
    if command.startswith(ACTIVATE):
        return Verdict("ACTIVATE", "this test's PATH starts with the venv's bin already")
    if (rel, _same(command)) in RUN_ELSEWHERE:
        test, why = RUN_ELSEWHERE[rel, _same(command)]
        return Verdict("RUN_ELSEWHERE", f"{why}: run by {test}")
    if ACCOUNT.search(command):
        return Verdict("ACCOUNT", "needs a real account (AWS, a cluster, Modal, W&B or Hugging Face)")
    if HEREDOC.match(command):
        return Verdict("run")
    if SYNOPSIS.search(command):
        return Verdict("SYNOPSIS", "a usage synopsis with placeholders, not a command")
    if PLACEHOLDER.search(command):
        return Verdict("PLACEHOLDER", "JOB/EXP stand for your own job id or experiment")
    if SERVER.search(command):
        return Verdict("SERVER", "a server: it runs until stopped")
    if GPU.search(command) and not command.startswith("DEVICE=cpu"):
        return Verdict("GPU", "GPU-only: needs a CUDA machine")
    if REMOTE.search(command):
        return Verdict("REMOTE", "runs on, or asks, a remote box")
    if SHARED_FS.search(command):
        return Verdict("SHARED_FS", "a shared filesystem this machine does not mount")
    if CLOUD_ENV.search(command):
        return Verdict("CLOUD_ENV", "points the lines after it at a cloud store, endpoint or proxy")
    for pattern, what in USER_DATA.items():
        if re.search(pattern, command):
            return Verdict("USER_DATA", f"needs {what}")
    for var, why in tainted.items():
        if var == "*" or re.search(rf"\${{?{var}\b", command):
            return Verdict("DEPENDS", why)
    if OFFLINE.match(command):
        return Verdict("run")
    backend = _profile_backend(doc, command, block_text)
    if CLOUD.search(command) or backend not in (None, "local", "?"):
        return Verdict("CLOUD", "needs a cloud account or a remote box")
    if backend == "?":
        return Verdict("CLOUD", "a profile of your own (not in the repo)")
    if not RUNNABLE.match(command):
        raise AssertionError(f"{rel}: {command!r}: no rule says whether to run it; add one to {__file__}")
    return Verdict("run")


def _block_commands(doc: Path, fence: str, body) -> list[tuple[int, str, Verdict]]:
    """Every command of one shell block with its verdict; an excluded `X=$(...)` or cloud export excludes what
    uses it."""
    tainted: dict[str, str] = {}
    text = "\n".join(t for _, t in body)
    out = []
    for n, line in _joined(fence, body):
        for part in _parts(_uncommented(line)):
            v = classify(doc, part, text, tainted)
            if v.rule != "run":
                if m := re.match(r"^([A-Z_]+)=\$\(", part):
                    tainted[m.group(1)] = f"uses ${m.group(1)} of line {n}, which is not run ({v.rule})"
                if v.rule == "CLOUD_ENV":
                    tainted["*"] = f"follows line {n}, which points the block at a cloud store ({v.rule})"
            out.append((n, part, v))
    return out


def _plan() -> tuple[list[Unit], list[tuple[str, int, str, Verdict]]]:
    """The units to run and every excluded (doc, line, command, verdict)."""
    units, excluded, seen = [], [], {}
    for doc in DOCS:
        rel = _rel(doc)
        page: list[Step] = []
        for fence, start, body in _fences(doc):
            assert fence in SHELL_FENCES | OTHER_FENCES, f"{rel}:{start}: a ```{fence} block: add it to a fence set"
            if fence in SHELL_FENCES:
                step = Step("bash", rel, start)
                for n, cmd, v in _block_commands(doc, fence, body):
                    key = _same(cmd)
                    # A training line another page runs already is not run twice (cheap lines always run).
                    if v.rule == "run" and "$" not in cmd and _trains(cmd) and key in seen and seen[key][0] != rel:
                        v = Verdict("DUPLICATE", f"the same command as {seen[key][0]}:{seen[key][1]}, run there")
                    if v.rule == "run":
                        seen.setdefault(key, (rel, n))
                        step.commands.append((n, cmd))
                    else:
                        excluded.append((rel, n, cmd, v))
                if step.commands:
                    page.append(step)
            elif fence == "python":
                code = "\n".join(t for _, t in body)
                first = next(t for _, t in body if t.strip())
                if (rel, first) in PYTHON_NOT_RUN:
                    excluded.append((rel, start, first + " ...", Verdict("PYTHON_NOT_RUN", PYTHON_NOT_RUN[rel, first])))
                else:
                    page.append(Step("python", rel, start, [(start, code)]))
        if doc == README:
            # Each README block is its own unit, and each runners-table command no block runs.
            units += [Unit(f"README.md:{s.start}", [s]) for s in page]
            for n, line in enumerate(doc.read_text().splitlines(), 1):
                if not line.startswith("|"):
                    continue
                for code in re.findall(r"`([^`]+)`", line):
                    if RUNNABLE.match(code) and code.startswith("launch"):
                        v = classify(doc, code, "", {})
                        if v.rule == "run" and _same(code) not in seen:
                            seen[_same(code)] = (rel, n)
                            script = next((w for w in code.split() if w.endswith(".py")), "launch")
                            units.append(Unit(f"README.md:{n}-{Path(script).name}", [Step("bash", rel, n, [(n, code)])]))
        elif page:
            units.append(Unit(rel, page))
    for u in units:
        u.outputs = {m for c in u.commands for m in re.findall(r"\s>\s*([\w.-]+)\s*$", c.split("\n")[0])}
    assert units, "found no docs commands: did the code fences change?"
    return units, excluded


UNITS, EXCLUDED = _plan()
BY_ID = {u.id: u for u in UNITS}
# `launch relay up` binds the commander's port (configs/relay/mock-local.yaml): one such unit at a time.
RELAY_PORT = threading.Lock()


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(tmp / "home"),
        "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
        "LAUNCHER_HOME": str(tmp / "launcher-home"),
        # The CLI's store and the Python API's and runners' local root: the same private directory.
        "LAUNCHER_DATAPOOL": f"file://{tmp / 'pool'}", "DATAPOOL_ROOT": str(tmp / "pool"),
        # One thread and offline: the smoke runs build their tiny model locally and take seconds on a CPU.
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }


def _as_run(command: str) -> str:
    """The line as bash runs it here: `.venv/bin/` is this venv's (wherever LAUNCHER_VENV put it), and a cloud plan
    sees no $LAUNCHER_DATAPOOL (this test's private file:// pool is the local backend's; a user planning a cloud
    run has none set, or the cloud's own store): the plan then shows that backend's default store."""
    command = command.replace(".venv/bin/", f"{VENV_BIN}/", 1)
    if OFFLINE.match(command) and CLOUD.search(_uncommented(command)):
        return f"(unset LAUNCHER_DATAPOOL DATAPOOL_ROOT; {command})"
    return command


def _run_unit(unit: Unit, tmp: Path, before: set[str]) -> tuple[bool, str]:
    """Runs the unit's steps in order; (ok, what went wrong or the last output and the time it took)."""
    env, t0 = _env(tmp), time.monotonic()
    for name in unit.outputs:
        assert not (REPO / name).exists(), f"{unit.id} writes {name} into the repo root, and one is there already"
    lock = RELAY_PORT if any("relay up" in c for c in unit.commands) else threading.Lock()
    try:
        with lock:
            for step in unit.steps:
                if step.kind == "bash":
                    # Each line is announced before it runs, so a failure names the docs line that broke.
                    # `.venv/bin/` means this venv's, wherever LAUNCHER_VENV put it.
                    script = "set -euo pipefail\n" + "".join(
                        f"echo {shlex.quote(f'{step.doc}:{n}> ' + c.splitlines()[0])} >&2\n{_as_run(c)}\n"
                        for n, c in step.commands)
                    r = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
                else:
                    r = subprocess.run([sys.executable, "-c", step.commands[0][1]], cwd=REPO, env=env,
                                       capture_output=True, text=True)
                out = f"{step.doc}:{step.start} ({step.kind} block)\n" + (r.stdout + r.stderr)[-4000:]
                if r.returncode != 0:
                    return False, f"exit {r.returncode}: {out}"
                if step.doc == "README.md" and step.kind == "python" and \
                        r.stdout.strip().splitlines()[-1:] != ["0 succeeded"]:
                    return False, f"the README's Python example did not end `0 succeeded`: {out}"
    finally:
        for name in unit.outputs:
            (REPO / name).unlink(missing_ok=True)
    # The runs used the private datapool and left nothing new in the repo (a ./datapool, reports, ...).
    new = {p.name for p in REPO.iterdir()} - before - {"__pycache__"} - {o for u in UNITS for o in u.outputs}
    if new:
        return False, f"{unit.id}: a docs command wrote into the repo: {sorted(new)}"
    if any(re.search(r"(?:^|\s)runners/\S+\.py", c) and "--dry-run" not in c and not c.startswith("python ")
           for c in unit.commands) or any(s.doc == "README.md" and s.kind == "python" for s in unit.steps):
        if not (tmp / "pool" / "experiments").is_dir():
            return False, f"{unit.id}: a launch ran, but not in the private datapool: {out}"
    return True, f"{unit.id}: {time.monotonic() - t0:.1f} s\n{out}"


class _Runner:
    """Runs the selected units two at a time, longest first, as soon as the first test asks; each test then waits
    for its own. Under xdist (workers share the cores already) each test runs its unit when it asks."""

    def __init__(self, ids: list[str], tmp_factory, parallel: bool):
        self.tmp_factory, self.futures = tmp_factory, {}
        self.before = {p.name for p in REPO.iterdir()}
        self.pool = ThreadPoolExecutor(max_workers=2 if parallel else 1)
        if parallel:
            for uid in sorted(ids, key=lambda i: -BY_ID[i].cost):
                self._submit(uid)

    def _submit(self, uid: str) -> Future:
        if uid not in self.futures:
            tmp = self.tmp_factory.mktemp(re.sub(r"\W+", "-", uid))
            self.futures[uid] = self.pool.submit(_run_unit, BY_ID[uid], tmp, self.before)
        return self.futures[uid]

    def result(self, uid: str) -> tuple[bool, str]:
        return self._submit(uid).result()


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    ids = [item.callspec.params["unit"] for item in request.session.items
           if item.module is request.module and hasattr(item, "callspec") and "unit" in item.callspec.params]
    r = _Runner(ids, tmp_path_factory, parallel=not hasattr(request.config, "workerinput"))
    yield r
    r.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("unit", [u.id for u in UNITS])
def test_docs_commands_run_as_written(unit, runner):
    ok, out = runner.result(unit)
    assert ok, out
    print(out.splitlines()[0])


def test_every_docs_line_has_a_rule_and_the_rules_keep_the_examples():
    """Every line either runs or is excluded; the rules keep the runnable examples in and the cloud ones out (a rule
    too broad would skip all), and every named rule is still used."""
    cmds = [c for u in UNITS for c in u.commands]
    assert any(c.startswith("JOB=$(launch --detach") for c in cmds) and any("logs $JOB -f" in c for c in cmds)
    assert any("--profile" in c for c in cmds)
    # Cloud plans and the GPU catalog run offline; nothing else of a cloud does.
    assert {b for c in cmds if "--dry-run" in c for b in re.findall(r"--backend (\w+)", c)} >= {
        "ec2", "modal", "k8s", "slurm", "ssh"}
    assert "launch gpus --backend ec2" in map(_same, cmds)
    assert not any(CLOUD.search(_uncommented(c)) for c in cmds if not OFFLINE.match(c) and not HEREDOC.match(c))
    assert any(u.id.startswith("README.md") and any(s.kind == "python" for s in u.steps) for u in UNITS)
    assert {u.id for u in UNITS} >= {"docs/api.md", "docs/hrm_lm.md", "docs/pipelines.md", "docs/relay.md",
                                      "docs/runners.md", "docs/tokenize.md"}
    # Every exclusion names its rule and reason, and each explicit entry still matches a docs line.
    assert all(v.rule and v.reason for *_, v in EXCLUDED)
    used = {(d, _same(c)) for d, _, c, v in EXCLUDED if v.rule == "RUN_ELSEWHERE"}
    assert set(RUN_ELSEWHERE) == used, f"stale RUN_ELSEWHERE entries: {set(RUN_ELSEWHERE) - used}"
    used_py = {(d, c[:-4]) for d, _, c, v in EXCLUDED if v.rule == "PYTHON_NOT_RUN"}
    assert set(PYTHON_NOT_RUN) == used_py, f"stale PYTHON_NOT_RUN entries: {set(PYTHON_NOT_RUN) - used_py}"
    # A line run by another test: that test exists.
    for test in [t for t, _ in RUN_ELSEWHERE.values()] + list(PYTHON_RUN_ELSEWHERE.values()):
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), f"{test} is gone: run the docs line here again"
    # The rules themselves.
    blk = lambda *lines: [(c, v.rule) for _, c, v in _block_commands(README, "bash", list(enumerate(lines, 1)))]
    assert blk("launch --backend modal --gpu A100 runners/rl_run.py", "launch --backend local x.py",
               "launch --datapool s3://b/p x.py", "launch sync up --datapool s3://b/p",
               "launch --dry-run --backend ec2 x.py", "launch down --expired --backend ec2 --dry-run") == [
        ("launch --backend modal --gpu A100 runners/rl_run.py", "CLOUD"), ("launch --backend local x.py", "run"),
        ("launch --datapool s3://b/p x.py", "CLOUD"), ("launch sync up --datapool s3://b/p", "CLOUD"),
        ("launch --dry-run --backend ec2 x.py", "run"), ("launch down --expired --backend ec2 --dry-run", "CLOUD")]
    assert [r for _, r in blk("JOB=$(launch --backend ec2 --detach x.py)", "launch logs $JOB -f",
                              "export LAUNCHER_DATAPOOL=modal-volume://p/q", "launch sync up --experiment e")] == [
        "CLOUD", "DEPENDS", "CLOUD_ENV", "DEPENDS"]
    assert _parts("a && b; c | python -c 'x; y' && d=$(e; f)") == ["a", "b", "c | python -c 'x; y'", "d=$(e; f)"]
    with pytest.raises(AssertionError, match="no rule"):
        blk("rm -rf datapool")


if __name__ == "__main__":
    from collections import Counter
    for doc, n, cmd, v in EXCLUDED:
        print(f"{v.rule:14} {doc}:{n}: {cmd.splitlines()[0][:100]}\n{'':15}{v.reason}")
    print(Counter(v.rule for *_, v in EXCLUDED), f"{sum(len(u.commands) for u in UNITS)} run in {len(UNITS)} units")
