"""`launch completion bash|zsh|fish` prints click's completion script, and that script's callback completes
commands, options and backend names."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F _launch_completion launch"),
                                          ("zsh", "#compdef launch"), ("fish", "complete --no-files --command launch")])
def test_each_shell_gets_its_script(launch, shell, marker):
    r = launch("completion", shell)
    assert r.returncode == 0, r.stderr
    assert "_LAUNCH_COMPLETE" in r.stdout and marker in r.stdout
    assert r.stdout.startswith(f"# launch completion for {shell}; install: ")


def test_an_unknown_shell_is_one_line(launch):
    r = launch("completion", "tcsh")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "bash" in r.stderr


def _complete(launch, words: str, cword: int) -> list[str]:
    r = launch(env={"_LAUNCH_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert r.returncode == 0, r.stderr
    return [line.split(",", 1)[1] for line in r.stdout.splitlines()]


def test_the_callback_completes_commands_options_and_backends(launch):
    assert {"check", "gpus", "completion"} <= set(_complete(launch, "launch ", 1))
    assert _complete(launch, "launch gp", 1) == ["gpus"]
    assert "--dry-run" in _complete(launch, "launch --dry", 1)  # `launch [OPTIONS] SCRIPT` is `launch run`
    assert _complete(launch, "launch --backend e", 2) == ["ec2"]
    assert "k8s" in _complete(launch, "launch check --backend ", 3)
    assert _complete(launch, "launch completion z", 2) == ["zsh"]


def test_help_lists_the_new_commands(launch):
    out = launch("--help").stdout
    for name in ("check", "gpus", "completion"):
        assert f"  {name} " in out
