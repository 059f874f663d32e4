"""`launch check --backend ssh`: paramiko, a host, a login (host key checked, never added), python on the box."""
from __future__ import annotations

import shlex

from ..access import attempt, library
from ...errors import UserError
from ..base import Check

NO_HOST = ("no host set: pass --host [USER@]HOST[:PORT], or put `ssh: {host: USER@HOST}` in "
           "~/.config/launcher/config.yaml")


def checks(options=None) -> list[Check]:
    out = [library("paramiko", "paramiko")]
    if not out[0].ok:
        return out
    if options is None or not getattr(options, "host", None):
        return [*out, Check("host", False, NO_HOST)]
    from ... import netpolicy
    from ...sshclient import SshClient

    box: dict = {}

    def login() -> str:
        box["client"] = SshClient(options.host, identity=options.identity,
                                  known_hosts=options.known_hosts).connect()
        return f"logged in to {options.host} (host key known)"

    out.append(attempt("login", login))
    client = box.get("client")
    if client is None:
        return out

    def python() -> str:
        cmd = f"{options.python} -c 'import sys; print(sys.version.split()[0])'"
        code, stdout, stderr = client.run(cmd, timeout=netpolicy.seconds(netpolicy.SSH_COMMAND_S),
                                         check=False)
        if code != 0:
            raise UserError(f"{shlex.quote(options.python)} does not run on {options.host}: install Python 3 "
                               "there, or set ssh: python: in the profile")
        return f"{options.python} {stdout.decode().strip()} on {options.host}"

    try:
        out.append(attempt("python", python))
    finally:
        client.close()
    return out
