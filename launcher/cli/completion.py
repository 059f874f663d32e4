"""`launch completion bash|zsh|fish`: the shell's completion script for `launch` (click's shell completion: the
script calls `launch` back with _LAUNCH_COMPLETE set to complete a word)."""
from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
INSTALL = {
    "bash": 'eval "$(launch completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(launch completion zsh)"    # in ~/.zshrc',
    "fish": "launch completion fish > ~/.config/fish/completions/launch.fish",
}


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
      eval "$(launch completion bash)"    # add to ~/.bashrc
      eval "$(launch completion zsh)"     # add to ~/.zshrc
      launch completion fish > ~/.config/fish/completions/launch.fish
    """
    from click.shell_completion import get_completion_class

    from .app import cli

    comp = get_completion_class(shell)(cli, {}, "launch", "_LAUNCH_COMPLETE")
    click.echo(f"# launch completion for {shell}; install: {INSTALL[shell]}")
    click.echo(comp.source())
