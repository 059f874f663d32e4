"""`launch check --backend ec2`: boto3, credentials, the region, the account (STS) and EC2 answering there.
Read-only calls, bounded by netpolicy's EC2 timeouts (aws.client)."""
from __future__ import annotations

from ...errors import UserError
from ..access import attempt, library
from ..base import Check

NO_CREDENTIALS = ("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                  "(or run `aws configure`)")


def _call(fn, what: str):
    from . import aws

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one line: unreachable, refused, or the error itself
        why = aws.unreachable(exc)
        if why:
            raise UserError(f"{why}; check your network (and AWS_ENDPOINT_URL, if set)") from None
        code = aws.error_code(exc)
        if code:
            raise UserError(f"AWS refused to {what} ({code}): check AWS_PROFILE / the keys and their "
                            "permissions") from None
        raise


def checks(options=None) -> list[Check]:
    out = [library("boto3", "boto3")]
    if not out[0].ok:
        return out
    import boto3

    from . import aws

    creds = boto3.session.Session().get_credentials()
    if creds is None:
        return [*out, Check("credentials", False, NO_CREDENTIALS)]
    out.append(Check("credentials", True, f"found ({creds.method})"))
    region = (options.region if options is not None and options.region else None) or aws.default_region()
    out.append(Check("region", True, region + ("" if options is not None and options.region
                                                 else " (pass --region or set AWS_REGION for another)")))

    def account() -> str:
        ident = _call(lambda: aws.client("sts", region).get_caller_identity(), "say who you are")
        return f"account {ident.get('Account')} ({ident.get('Arn')})"

    out.append(attempt("account", account))
    if not out[-1].ok:
        return out

    def zones() -> str:
        found = _call(lambda: aws.client("ec2", region).describe_availability_zones(), "list availability zones")
        names = [z["ZoneName"] for z in found.get("AvailabilityZones", [])]
        return f"EC2 answers in {region}: {len(names)} zones ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"

    out.append(attempt("EC2 API", zones))
    return out


def gpu_offers(options=None) -> list:
    """catalog.py's table: the instance type per GPU count, and its on-demand price (us-east-1)."""
    from ..base import GpuOffer
    from .catalog import GPU_INSTANCES, PRICE_TABLE_DATE, usd_per_hour

    return [GpuOffer(gpu, itype.split(".")[0], count, itype, usd_per_hour(itype), PRICE_TABLE_DATE)
            for gpu, counts in GPU_INSTANCES.items() for count, itype in sorted(counts.items())]
