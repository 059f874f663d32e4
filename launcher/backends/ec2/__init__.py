"""The ec2 backend: one GPU instance per job that terminates itself, found and ended by tag if anything is left.

options.py is the `ec2:` profile section and its flags (light: the registry reads it); request.py renders
RunInstances (pure: what `--dry-run` prints); aws.py talks to EC2, SSM and S3 (boto3); backend.py is the Backend
the launch path drives; catalog.py picks the instance, the AMI and the price.
"""
from ..entry import BackendEntry
from .options import FLAGS, Ec2Options

ENTRY = BackendEntry(
    name="ec2", cls="launcher.backends.ec2.backend:Ec2Backend",
    summary="one AWS instance per job, terminated when it ends",
    options=Ec2Options, flags=FLAGS,
    example="launch --backend ec2 --gpu A10G --spot --datapool s3://bucket/pool runners/sft_run.py --config c.yaml",
)
