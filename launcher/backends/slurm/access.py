"""`launch check --backend slurm`: sbatch here, or a login node (host key checked, login), and the controller
answering `sinfo` there (bounded by netpolicy.SSH_COMMAND_S)."""
from __future__ import annotations

from ...errors import UserError
from ..access import attempt
from ..base import Check


def checks(options=None) -> list[Check]:
    from .cli import SlurmCli, Unreachable
    from .options import SlurmOptions

    opts = options or SlurmOptions()
    cli = SlurmCli(opts.model_dump())

    def reach() -> str:
        cli.check_reachable()
        return f"logged in to {opts.host} (host key known)" if opts.host else "sbatch found on this machine"

    out = [attempt("login node" if opts.host else "sbatch", reach)]
    if not out[0].ok:
        return out

    def partitions() -> str:
        try:
            code, stdout, stderr = cli.sh("sinfo -h -o %P")
        except Unreachable as exc:
            raise UserError(f"{exc}; check that Slurm runs (and SLURM_CONF, or slurm: slurm_env)") from None
        if code != 0:
            raise UserError(f"sinfo failed on {cli.where}: {(stderr.strip().splitlines() or ['?'])[-1]}; check that "
                            "Slurm runs (and SLURM_CONF, or slurm: slurm_env)")
        names = stdout.split()
        return f"the controller answers: partitions {', '.join(names) or 'none'}"

    out.append(attempt("controller", partitions))
    return out
