"""The k8s backend: one batch/v1 Job per launch (an Indexed Job for --num-nodes N), gone when it ends.

options.py is the `k8s:` profile section (light: job.py imports it); request.py renders the manifests (pure: what
`--dry-run` prints); kube.py holds the kubernetes client calls; stuck.py turns pod conditions and events into a
reason; backend.py is the Backend the launch path drives. Nothing here imports `kubernetes` at import time.
"""
from ..entry import BackendEntry
from .options import FLAGS, K8sOptions

ENTRY = BackendEntry(
    name="k8s", cls="launcher.backends.k8s.backend:K8sBackend",
    summary="a Kubernetes Job, Indexed for several nodes",
    options=K8sOptions, flags=FLAGS,
    example="launch --backend k8s --gpu H100:8 --num-nodes 2 --datapool s3://bucket/pool runners/hrm_lm_run.py --config c.yaml",
)
