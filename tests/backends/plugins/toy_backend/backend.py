from dataclasses import replace
from pathlib import Path

from launcher.backends.local.backend import LocalBackend
from launcher.errors import CapacityError
from launcher.spec import CANCEL_MARKER


class ToyBackend(LocalBackend):
    name = "toy"
    capabilities = replace(LocalBackend.capabilities, preempts_on_demand=True)

    def render(self, plan):
        return {**super().render(plan), "label": plan.job.options.label}

    def restart(self, plan, previous):
        state = Path(plan.spec.state_dir)
        tries = state / "toy-relaunch-tries"
        n = int(tries.read_text()) if tries.exists() else 0
        tries.write_text(str(n + 1))
        if n < plan.job.options.short_restarts:
            raise CapacityError(f"toy: no capacity for relaunch {n + 1}")
        # One state dir serves every attempt here: the last attempt's cancel (api ends it before a relaunch) must
        # not stop the new one.
        (state / CANCEL_MARKER).unlink(missing_ok=True)
        return self.start(plan, detach=True)
