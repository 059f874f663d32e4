"""Job records in a launcher-made bucket expire; the datapool in it never does.

`launch` on ec2 with no store named uses a bucket it creates, `launcher-<account>-<region>`, whose lifecycle rule
expires objects tagged RECORD_TAG after RECORD_DAYS. Everything written under a job's folder
(`.../reports/jobs/<id>/`: log, result, markers, setup and agent logs) carries that tag when the bucket is such a
bucket, decided from its name alone, so the client and the node agree without a field in the AgentSpec. A bucket
the user named is never tagged (tagging needs s3:PutObjectTagging, which a narrow IAM policy may not grant).
Stdlib only: the agent imports it on the node.
"""
from __future__ import annotations

import re

RECORD_TAG_KEY, RECORD_TAG_VALUE = "launcher-record", "job"
RECORD_DAYS = 90
_DEFAULT_BUCKET = re.compile(r"launcher-\d{12}-[a-z]{2}(?:-[a-z]+)+-\d")


def default_bucket(account: str, region: str) -> str:
    return f"launcher-{account}-{region}"


def default_bucket_region(bucket: str) -> str:
    """`launcher-<account>-<region>` -> region."""
    return bucket.split("-", 2)[2]


def is_default_bucket(bucket: str) -> bool:
    return bool(_DEFAULT_BUCKET.fullmatch(bucket))


def is_job_record(key: str) -> bool:
    return "/reports/jobs/" in f"/{key}"


def record_headers(bucket: str, key: str) -> dict[str, str]:
    """The tagging header for a PUT (or a multipart upload's start) of `key`: set only for a job record in a
    launcher-made bucket."""
    if is_default_bucket(bucket) and is_job_record(key):
        return {"x-amz-tagging": f"{RECORD_TAG_KEY}={RECORD_TAG_VALUE}"}
    return {}
