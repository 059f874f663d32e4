"""The store an ec2 job uses when none is named: a bucket `launcher-<account>-<region>` made on first use.

Private (every public access blocked), encrypted at rest (SSE-S3), and with one lifecycle rule: objects tagged as
job records (launcher/datapool/records.py: logs, results, markers under reports/jobs/) expire after 90 days. The
datapool itself (data, models, checkpoints, code snapshots) never expires. boto3 here, on the client only.
"""
from __future__ import annotations

from ...datapool.records import RECORD_DAYS, RECORD_TAG_KEY, RECORD_TAG_VALUE, default_bucket, default_bucket_region
from ...datapool.url import StoreUrl
from ...errors import UserError
from . import aws

ACCOUNT_AT_LAUNCH = "<account>"  # the offline plan's placeholder: the account needs STS
LIFECYCLE_RULE_ID = "launcher-job-records-expire"


def url(options, *, online: bool) -> str:
    """`options`: the job's ec2 section (its region), None for the defaults."""
    region = (options.region if options is not None and options.region else None) or aws.default_region()
    account = ACCOUNT_AT_LAUNCH
    if online:
        try:
            account = aws.client("sts", region).get_caller_identity()["Account"]
        except Exception as exc:  # noqa: BLE001 - one line: no credentials, unreachable, refused
            raise UserError(f"no datapool given and the ec2 default store needs your AWS account: "
                            f"{aws.unreachable(exc) or aws.error_code(exc) or exc}; pass --datapool s3://bucket/prefix "
                            "or fix the credentials (launch check -b ec2)") from None
    return f"s3://{default_bucket(account, region)}"


def create(store_url: str, *, dry_run: bool = False) -> bool:
    """The bucket, made private and encrypted with its lifecycle rule (`dry_run`: only looked for); False when it is
    there already (its settings are then left as they are: someone may have tuned them)."""
    bucket = StoreUrl(store_url).netloc
    region = default_bucket_region(bucket)
    s3 = aws.client("s3", region)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except Exception as exc:  # noqa: BLE001 - only "not found" means make it; anything else is the user's to fix
        if aws.error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise UserError(f"the ec2 default store s3://{bucket} cannot be used "
                            f"({aws.unreachable(exc) or aws.error_code(exc) or exc}); pass --datapool s3://bucket/prefix"
                            ) from None
    if dry_run:
        return True
    create_args = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **create_args)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [{
        "ID": LIFECYCLE_RULE_ID, "Status": "Enabled",
        "Filter": {"Tag": {"Key": RECORD_TAG_KEY, "Value": RECORD_TAG_VALUE}},
        "Expiration": {"Days": RECORD_DAYS}}]})
    return True
