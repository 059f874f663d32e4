"""The modal backend: one Modal app per job, one function whose body runs the node bootstrap and the agent.

options.py is the `modal:` profile section (validated by launcher/job.py without importing modal); request.py
renders the function spec (pure: what `--dry-run` prints); image.py builds the node image from the lock; node.py is
the function body (stdlib only: it runs inside the container); app.py makes the Modal calls; backend.py is the
Backend the launch path drives. Nothing here imports `modal` at import time.
"""
from ..entry import BackendEntry
from .options import ModalOptions

ENTRY = BackendEntry(
    name="modal", cls="launcher.backends.modal.backend:ModalBackend",
    summary="a Modal function per job",
    options=ModalOptions,
    example="launch --backend modal --gpu A100 --datapool modal-volume://pool/demo runners/rl_run.py --config c.yaml",
)
