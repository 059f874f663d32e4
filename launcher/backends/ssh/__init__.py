"""The ssh backend: a job on a box you already have, over OpenSSH (backend.py)."""
from ..entry import BackendEntry
from .options import HOST, IDENTITY, SshOptions

ENTRY = BackendEntry(
    name="ssh", cls="launcher.backends.ssh.backend:SshBackend",
    summary="a box you can ssh into",
    options=SshOptions, flags=(HOST, IDENTITY),
    needs="a box: pass --host [user@]host[:port] (or an ssh: section in the profile)",
    example="launch --backend ssh --host ubuntu@gpu-box --datapool s3://bucket/pool runners/sft_run.py --config c.yaml",
)
