"""Backends by name. A backend module plugs in by adding one line here; the CLI never names a backend."""
from __future__ import annotations

import importlib

from ..errors import UserError, did_you_mean

# name -> "module:Class"; imported only when used, so `launch --help` stays light.
BACKENDS: dict[str, str] = {
    "local": "launcher.backends.local:LocalBackend",
    "ssh": "launcher.backends.ssh:SshBackend",
    "ec2": "launcher.backends.ec2:Ec2Backend",
    "k8s": "launcher.backends.k8s.backend:K8sBackend",
    "modal": "launcher.backends.modal.backend:ModalBackend",
}
# Named in the design but not built yet: a clear message beats "unknown backend".
PLANNED: tuple[str, ...] = ()


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        if name in PLANNED:
            raise UserError(f"backend '{name}' is not built yet; available now: {', '.join(BACKENDS)}")
        # Suggest among planned names too: `modall` means modal, and "not built yet" is then one step away.
        planned = [p for p in PLANNED if p not in BACKENDS]
        later = f" (designed, not built yet: {', '.join(planned)})" if planned else ""
        raise UserError(f"unknown backend '{name}'{did_you_mean(name, [*BACKENDS, *planned])}; "
                        f"use --backend {' or '.join(BACKENDS)}{later}")


def get_backend(name: str):
    check_backend(name)
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
