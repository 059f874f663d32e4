"""The ec2 backend: one GPU instance per job that terminates itself, found and ended by tag if anything is left.

request.py renders RunInstances (pure: what `--dry-run` prints); aws.py talks to EC2, SSM and S3 (boto3);
backend.py is the Backend the launch path drives; catalog.py picks the instance, the AMI and the price.
"""
from .backend import Ec2Backend

__all__ = ["Ec2Backend"]
