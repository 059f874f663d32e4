"""The `launch` command: the group, its help page and `main`. `launch SCRIPT` is `launch run SCRIPT`; each
subcommand lives in its own module (run.py, jobs.py: jobs/status/watch/logs/down; sync.py, pipeline.py, image.py,
...), imported only when that command runs. Heavy modules are imported inside commands: `launch --help` must stay
light."""
from __future__ import annotations

import importlib
import sys

import click

EXAMPLES = """
Examples:
  launch runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py
  launch --dry-run --gpu A100 runners/sft_run.py --config configs/sft/wordle.yaml --task tasks/wordle_task.py
  launch --detach --max-runtime 2h --env WANDB_MODE=offline runners/sft_run.py --config c.yaml
  launch jobs;  launch logs JOB -f;  launch down JOB;  launch down --expired
  launch sync up --experiment demo --datapool s3://bucket/pool
"""


class LaunchGroup(click.Group):
    """`launch [OPTIONS] SCRIPT ...` is `launch run [OPTIONS] SCRIPT ...`; other words are subcommands."""

    # Each command's module is imported when it runs (or for --help): `launch sync` need not build every
    # backend's flags for `launch SCRIPT`, nor `launch jobs` the sync engine.
    lazy_commands = {"run": ("launcher.cli.run", "run"), "jobs": ("launcher.cli.jobs", "jobs"),
                     "status": ("launcher.cli.jobs", "status"), "watch": ("launcher.cli.jobs", "watch"),
                     "logs": ("launcher.cli.jobs", "logs"), "down": ("launcher.cli.jobs", "down"),
                     "sync": ("launcher.cli.sync", "sync"), "pipeline": ("launcher.cli.pipeline", "pipeline"),
                     "image": ("launcher.cli.image", "image"), "relay": ("launcher.cli.relay", "relay"),
                     "check": ("launcher.cli.check", "check"), "gpus": ("launcher.cli.gpus", "gpus"),
                     "completion": ("launcher.cli.completion", "completion")}
    # What `launch --help` says of the commands it does not import to say it (their own imports are heavier).
    lazy_help = {"sync": "Sync the datapool with its store (only changed files move, verified).",
                 "pipeline": "Run an experiment's STEPS, each a job.",
                 "image": "Build (and push) the node image from images/requirements.lock.",
                 "relay": "Relay training: one run handed across preemptible workers under leases.",
                 "check": "Check each backend's access from here (library, credentials, region, store).",
                 "gpus": "The GPUs you can ask for, their memory, each backend's name and price.",
                 "completion": "Print the shell completion script (bash, zsh, fish)."}

    def parse_args(self, ctx, args):
        if args and args[0] not in self.list_commands(ctx) and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        if args and args[0] == "run":
            args = ["run", *self._script_option(args[1:])]
        return super().parse_args(ctx, args)

    def _script_option(self, args: list[str]) -> list[str]:
        """`--script PATH` (or `--script=PATH`) among launch's own options is the positional SCRIPT, and like it
        ends them: what follows goes to the script. After SCRIPT it is the script's own argument."""
        takes_value = {name: not (p.is_flag or p.count) for p in self.get_command(None, "run").params
                       if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--script":
                if i + 1 == len(args):
                    raise click.UsageError("--script needs the script's path, e.g. launch --script train.py --lr 3")
                return [*args[:i], args[i + 1], *args[i + 2:]]
            if arg.startswith("--script="):
                return [*args[:i], arg.split("=", 1)[1], *args[i + 1:]]
            if arg == "--" or not arg.startswith("-"):
                return args  # the positional SCRIPT (or the end of options): the rest is the script's
            i += 2 if takes_value.get(arg) else 1
        return args

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx, name):
        if name in self.lazy_commands and name not in self.commands:
            module, attr = self.lazy_commands[name]
            try:
                self.add_command(getattr(importlib.import_module(module), attr), name)
            except ImportError:
                return None
        return self.commands.get(name)

    def shell_complete(self, ctx, incomplete):
        """`launch --<TAB>` offers `launch run`'s options too (`launch [OPTIONS] SCRIPT` is `launch run`)."""
        found = super().shell_complete(ctx, incomplete)
        if incomplete.startswith("-"):
            run = self.get_command(ctx, "run")
            found += run.shell_complete(click.Context(run, info_name="launch", parent=ctx), incomplete)
        return found

    def format_help(self, ctx, formatter):
        formatter.write_usage("launch", "[OPTIONS] SCRIPT [SCRIPT_ARGS]...")
        formatter.write_usage("launch", "COMMAND [ARGS]...", prefix="   or: ")
        self.format_help_text(ctx, formatter)
        run = self.get_command(ctx, "run")
        run.format_options(click.Context(run, info_name="launch", parent=ctx), formatter)
        with formatter.section("Commands"):
            rows = []
            for name in self.list_commands(ctx):
                cmd = self.commands.get(name) or (self.get_command(ctx, name) if name not in self.lazy_help else None)
                rows.append((name, cmd.get_short_help_str(100) if cmd else self.lazy_help.get(name, "")))
            formatter.write_dl(rows)
        with formatter.section("Examples"):
            from ..backends import entries

            lines = [*EXAMPLES.strip().splitlines()[1:], *(e.example for e in entries().values() if e.example)]
            for line in lines:
                formatter.write(" " * formatter.current_indent + line.strip() + "\n")
        formatter.write_paragraph()
        formatter.write_text("Everything after SCRIPT (or --script PATH) goes to the script untouched. "
                             "`launch COMMAND --help` for more.")


@click.group(cls=LaunchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="launcher", prog_name="launch")
def cli():
    """Run an ML script on a GPU machine of any backend (--backend), with its datapool synced and every machine
    torn down when it ends. The same command runs the same job on your laptop's CPU (the default backend)."""



def main(argv=None) -> None:
    from ..errors import CapacityError, NotConfirmed, NotLaunched, UserError

    try:
        from ..backends import check_plugins

        check_plugins()
        cli.main(args=argv, prog_name="launch", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except NotConfirmed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except NotLaunched as exc:  # the user's "no" at a [Y/n]: not an error, nothing was created
        click.echo(f"[launcher] {exc}", err=True)
        sys.exit(exc.exit_code)
    except CapacityError as exc:  # the request is right; the capacity is short now: exit 75, try later/elsewhere
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        # One line, like our own errors, instead of click's three-line usage dump.
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path.replace("launch run", "launch") if ctx else "launch"
        click.echo(f"error: {exc.format_message().rstrip('.')}; see `{path} --help`", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
