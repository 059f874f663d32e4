from launcher.backends.local.backend import LocalBackend


class ToyBackend(LocalBackend):
    name = "toy"

    def render(self, plan):
        return {**super().render(plan), "label": plan.job.options.label}
