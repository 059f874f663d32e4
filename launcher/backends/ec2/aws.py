"""The EC2 backend's calls to AWS (boto3, imported here only). Each function does one thing the backend needs.

RunInstances goes out with botocore's retries off (`total_max_attempts=1`): botocore would otherwise repeat a
500 (InsufficientInstanceCapacity is one) five times in the same zone; we handle it ourselves by moving on.

Every call is bounded (launcher/netpolicy.py): EC2_CONNECT_S / EC2_READ_S per attempt, at most EC2_ATTEMPTS attempts
(botocore's standard mode: a connection error, a timeout, a 5xx or throttling is tried again after a short backoff).
`unreachable(exc)` says whether an error means "AWS could not be asked" (then `status` reports the job
`unreachable`, never `lost`).
"""
from __future__ import annotations

import os
import time

from ...errors import CapacityError, UserError

# Capacity: try the next zone. Quota: nothing another zone fixes; say which quota and how to raise it.
CAPACITY_ERRORS = ("InsufficientInstanceCapacity", "Unsupported", "InsufficientCapacity")
QUOTA_ERRORS = ("VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded")
# The vCPU quota codes (Service Quotas, service code ec2) by instance family letter.
QUOTA_CODES = {
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "p": ("L-417A185B", "Running On-Demand P instances"),
    "std": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
}
SPOT_QUOTA_CODES = {
    "g": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "p": ("L-7212CCBC", "All P Spot Instance Requests"),
    "std": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
# Answers that say nothing about the job: AWS could not (or would not now) answer the question.
UNANSWERED_CODES = ("RequestLimitExceeded", "Throttling", "ThrottlingException", "Unavailable", "ServiceUnavailable",
                    "InternalError", "InternalFailure", "RequestTimeout", "RequestExpired", "ExpiredToken",
                    "AuthFailure", "UnrecognizedClientException")
SG_NAME = "launcher-no-ingress"


def region_of(job) -> str:
    if job.ec2 and job.ec2.region:
        return job.ec2.region
    return default_region()


def default_region() -> str:
    """$AWS_REGION, $AWS_DEFAULT_REGION, the AWS profile's region, else us-east-1 (as botocore resolves it)."""
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    import botocore.session

    return botocore.session.Session().get_config_variable("region") or "us-east-1"


def client(service: str, region: str, *, retries: bool = True):
    import boto3
    import botocore.config
    import botocore.exceptions

    from ... import netpolicy

    attempts = netpolicy.EC2_ATTEMPTS if retries else 1
    cfg = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts},
                                 connect_timeout=netpolicy.seconds(netpolicy.EC2_CONNECT_S),
                                 read_timeout=netpolicy.seconds(netpolicy.EC2_READ_S))
    try:
        return boto3.session.Session().client(service, region_name=region, config=cfg)
    except botocore.exceptions.NoRegionError:
        raise UserError("no AWS region: pass --region or set AWS_REGION") from None


def error_code(exc) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def unreachable(exc: BaseException) -> str | None:
    """Why AWS could not be asked, in one line, when `exc` means that (no connection, a timeout, a 5xx, throttling,
    credentials that ran out); None for a real answer (InvalidInstanceID.NotFound, say) or a bug."""
    import botocore.exceptions as bx

    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):  # refused, reset, connect/read timeouts
        return f"cannot reach EC2: {_one_line(exc)}"
    if isinstance(exc, (bx.NoCredentialsError, bx.TokenRetrievalError)):
        return f"no usable AWS credentials to ask EC2: {_one_line(exc)}"
    if isinstance(exc, bx.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500 or error_code(exc) in UNANSWERED_CODES:
            return f"EC2 did not answer: {error_code(exc) or status}: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def check_credentials(region: str) -> None:
    import botocore.exceptions

    try:
        client("sts", region).get_caller_identity()
    except botocore.exceptions.NoCredentialsError:
        raise UserError("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                        "(the ec2 backend starts instances in your account)") from None
    except botocore.exceptions.ClientError as exc:
        raise UserError(f"AWS refused your credentials ({error_code(exc)}): check AWS_PROFILE / the keys") from None


def resolve_ami(ssm, source: str) -> str:
    """An SSM parameter name -> the image id it holds; an image id stays as it is."""
    if not source.startswith("/"):
        return source
    import botocore.exceptions

    try:
        return ssm.get_parameter(Name=source)["Parameter"]["Value"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            raise UserError(f"AMI parameter {source} does not exist in this region: pass --ami ami-... or an "
                            "SSM parameter name that exists") from None
        raise


def vpc_of_subnet(ec2, subnet: str) -> str:
    import botocore.exceptions

    try:
        return ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    except botocore.exceptions.ClientError as exc:
        raise UserError(f"subnet {subnet}: {error_code(exc)}; check ec2: subnet (or --region)") from None


def no_ingress_group(ec2, vpc_id: str | None = None) -> str:
    """The security group with no inbound rule at all, made once per region (VPC) and tagged as ours."""
    filters = [{"Name": "group-name", "Values": [SG_NAME]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    found = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    kwargs = {"GroupName": SG_NAME, "Description": "launcher jobs: no inbound traffic; logs and results go through S3",
              "TagSpecifications": [{"ResourceType": "security-group",
                                     "Tags": [{"Key": "launcher:owner", "Value": "launcher"}]}]}
    if vpc_id:
        kwargs["VpcId"] = vpc_id
    group = ec2.create_security_group(**kwargs)["GroupId"]
    # A new group allows all egress and no ingress: exactly what the node needs (S3, package mirrors).
    return group


def presign(method: str, store_url: str, key: str, expires_s: int, endpoint_url: str | None, region: str) -> str:
    """A URL that lets the node GET (its code) or PUT (a setup failure's result) one object, without credentials."""
    from urllib.parse import urlparse

    import boto3

    url = urlparse(store_url)
    prefix = url.path.strip("/")
    s3 = boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url)
    return s3.generate_presigned_url(method, Params={"Bucket": url.netloc, "Key": f"{prefix}/{key}" if prefix else key},
                                     ExpiresIn=max(60, min(expires_s, 7 * 24 * 3600)))


def zones(ec2, pinned: str | None) -> list[str]:
    if pinned:
        return [pinned]
    out = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
    return sorted(z["ZoneName"] for z in out["AvailabilityZones"] if z.get("ZoneType", "availability-zone")
                  == "availability-zone")


def quota_message(code: str, itype: str, spot: bool, region: str) -> str:
    family = itype[:1] if itype[:1] in ("g", "p") else "std"
    qcode, qname = (SPOT_QUOTA_CODES if spot else QUOTA_CODES)[family]
    return (f"{code}: your account's vCPU quota '{qname}' ({qcode}) in {region} is too low for {itype}; raise it: "
            f"aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {qcode} "
            f"--desired-value N --region {region}")


def run_instance(ec2, request_for, zone_list: list[str], *, spot: bool, region: str) -> tuple[str, str]:
    """RunInstances, zone after zone while capacity is short; `request_for(zone)` is the request of that try (the
    rendered one, its slots filled). Returns (instance id, zone). After any error the instances this request may
    have started (found by its ClientToken) are terminated before raising."""
    import botocore.exceptions

    tried = []
    request: dict = {}
    for zone in zone_list:
        request = request_for(zone)
        try:
            out = ec2.run_instances(**request)
            inst = out["Instances"][0]
            return inst["InstanceId"], inst.get("Placement", {}).get("AvailabilityZone", zone)
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            terminate_by_token(ec2, request["ClientToken"])
            if code in CAPACITY_ERRORS:
                tried.append(f"{zone} ({code})")
                continue
            if code in QUOTA_ERRORS:
                raise CapacityError(quota_message(code, request["InstanceType"], spot, region), quota=True) from None
            if code == "AuthFailure.ServiceLinkedRoleCreationNotPermitted" or (
                    spot and "AWSServiceRoleForEC2Spot" in exc.response.get("Error", {}).get("Message", "")):
                raise UserError("the account's first spot request needs the service-linked role "
                                "AWSServiceRoleForEC2Spot, and you may not create it; have an admin run once: "
                                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com") from None
            if code.startswith(("InvalidAMIID", "InvalidKeyPair", "InvalidParameterValue", "InvalidSubnet",
                                "InvalidGroup", "UnauthorizedOperation", "InvalidInstanceType")):
                msg = exc.response.get("Error", {}).get("Message", "")
                raise UserError(f"EC2 refused the request: {code}: {msg}") from None
            raise
        except BaseException:
            terminate_by_token(ec2, request["ClientToken"])
            raise
    itype = request.get("InstanceType", "the instance type")
    raise CapacityError(f"no capacity for {itype} in {region}: tried {', '.join(tried)}; try "
                        "later, another region (--region), another GPU type, or --spot / on-demand the other way")


def terminate_by_token(ec2, token: str) -> list[str]:
    """Whatever a failed or interrupted RunInstances may have started: find it by token and job tag, end it."""
    ids = set()
    for filters in ([{"Name": "client-token", "Values": [token]}], [{"Name": "tag:launcher:job", "Values": [token]}]):
        try:
            for r in ec2.describe_instances(Filters=filters)["Reservations"]:
                ids.update(i["InstanceId"] for i in r["Instances"] if i["State"]["Name"] in LIVE_STATES)
        except Exception:  # noqa: BLE001 - best effort here; the sweeper is the layer that never gives up
            pass
    if ids:
        terminate(ec2, sorted(ids))
    return sorted(ids)


def tagged(ec2, job_id: str) -> list[str]:
    """Instances carrying the job's tag, oldest launch first."""
    res = ec2.describe_instances(Filters=[{"Name": "tag:launcher:job", "Values": [job_id]}])["Reservations"]
    found = sorted((i["LaunchTime"], i["InstanceId"]) for r in res for i in r["Instances"])
    return [iid for _, iid in found]


def terminate(ec2, ids: list[str]) -> None:
    import botocore.exceptions

    try:
        ec2.terminate_instances(InstanceIds=ids)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "InvalidInstanceID.NotFound":  # already gone counts as done
            raise


def describe(ec2, instance_id: str) -> dict | None:
    import botocore.exceptions

    try:
        res = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidInstanceID.NotFound":
            return None
        raise
    return res[0]["Instances"][0] if res and res[0]["Instances"] else None


def expired(ec2, now: float) -> list[dict]:
    """Every instance launcher tagged whose deadline has passed, in any state but terminated."""
    out = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag-key", "Values": ["launcher:deadline"]},
                 {"Name": "instance-state-name", "Values": list(LIVE_STATES)}])
    for page in pages:
        for r in page["Reservations"]:
            for inst in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                try:
                    deadline = float(tags["launcher:deadline"])
                except (KeyError, ValueError):
                    continue
                if deadline < now:
                    out.append({"id": inst["InstanceId"], "job": tags.get("launcher:job"),
                                "state": inst["State"]["Name"], "deadline": deadline})
    return out


def wait_terminated(ec2, instance_id: str, timeout: float = 600) -> str:
    end = time.time() + timeout
    state = "unknown"
    while time.time() < end:
        inst = describe(ec2, instance_id)
        state = inst["State"]["Name"] if inst else "terminated"
        if state == "terminated":
            return state
        time.sleep(2)
    return state


from .request import SECRETS_ROOT, secrets_path  # noqa: E402 - the names live with the request that uses them


def put_secrets(ssm, job_id: str, names: list[str], deadline: float) -> None:
    """--secret values as SecureString parameters under /launcher/jobs/<job>/ (the node reads them with its
    instance role; they never enter user-data, tags or a plan), tagged so the sweeper can delete them."""
    import botocore.exceptions

    tags = [{"Key": "launcher:job", "Value": job_id}, {"Key": "launcher:deadline", "Value": str(int(deadline))}]
    for name in names:
        if name not in os.environ:
            # A relaunch from a terminal without the variable: the parameter from the first attempt serves.
            try:
                ssm.get_parameter(Name=f"{secrets_path(job_id)}/{name}")
                continue
            except botocore.exceptions.ClientError:
                raise UserError(f"secret {name} is not set in your environment; export {name}=...") from None
        try:
            ssm.put_parameter(Name=f"{secrets_path(job_id)}/{name}", Value=os.environ[name], Type="SecureString",
                              Tags=tags, Description=f"launcher job {job_id}: --secret {name}")
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code == "ParameterAlreadyExists":  # a relaunch of the same job: the value is already there
                continue
            if code in ("AccessDeniedException", "UnauthorizedOperation"):
                raise UserError(f"--secret {name}: AWS refused ssm:PutParameter on {secrets_path(job_id)}/ ({code}); "
                                "add the SSM statement of docs/backends/ec2.md to your IAM policy") from None
            raise


def delete_secrets(ssm, job_id: str) -> int:
    """Delete a job's secret parameters; none left is fine. Returns how many went."""
    names = []
    kw = {"Path": secrets_path(job_id), "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kw)
        names += [p["Name"] for p in page["Parameters"]]
        if not page.get("NextToken"):
            break
        kw["NextToken"] = page["NextToken"]
    for i in range(0, len(names), 10):  # DeleteParameters takes at most 10
        ssm.delete_parameters(Names=names[i:i + 10])
    return len(names)


def expired_params(ssm, now: float, root: str = SECRETS_ROOT) -> list[str]:
    """Job ids whose parameters under `root` (secrets, host keys) outlived the job's deadline: their client never
    cleaned up."""
    import botocore.exceptions

    jobs: dict[str, str] = {}
    kw = {"Path": root, "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kw)
        for p in page["Parameters"]:
            jobs.setdefault(p["Name"][len(root) + 1:].split("/")[0], p["Name"])
        if not page.get("NextToken"):
            break
        kw["NextToken"] = page["NextToken"]
    out = []
    for job_id, name in sorted(jobs.items()):
        try:
            tags = {t["Key"]: t["Value"] for t in
                    ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name).get("TagList", [])}
            if float(tags["launcher:deadline"]) < now:
                out.append(job_id)
        except (KeyError, ValueError, botocore.exceptions.ClientError):
            continue
    return out


def _expired_tagged(items, now: float) -> bool:
    tags = {t["Key"]: t["Value"] for t in items.get("Tags", [])}
    try:
        return float(tags["launcher:deadline"]) < now
    except (KeyError, ValueError):
        return False


def expired_groups(ec2, now: float) -> list[dict]:
    """Security groups made for one job (launcher-ssh-<job>) past its deadline."""
    found = ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": ["launcher:deadline"]}])
    return [g for g in found["SecurityGroups"] if _expired_tagged(g, now)]


def expired_volumes(ec2, now: float) -> list[dict]:
    """Detached volumes of a job past its deadline (a root volume is deleted with its instance; this catches
    what survived anyway)."""
    found = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["launcher:deadline"]},
                                          {"Name": "status", "Values": ["available"]}])
    return [v for v in found["Volumes"] if _expired_tagged(v, now)]
