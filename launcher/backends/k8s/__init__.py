"""The k8s backend: one batch/v1 Job per launch (an Indexed Job for --num-nodes N), gone when it ends.

options.py is the `k8s:` profile section (light: job.py imports it); request.py renders the manifests (pure: what
`--dry-run` prints); kube.py holds the kubernetes client calls; stuck.py turns pod conditions and events into a
reason; backend.py is the Backend the launch path drives. Nothing here imports `kubernetes` at import time.
"""
