"""The ec2 backend: the launch path's verbs over EC2. Status, logs and cancel meet the node in the S3 store."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from ...errors import UserError
from ...gpus import CATALOG
from ...job import Job
from ...plan import Plan
from ..base import Backend, Capabilities, Handle, NodePaths
from . import aws, catalog, request


class Ec2Backend(Backend):
    name = "ec2"
    capabilities = Capabilities(remote=True, gpus=tuple(n for n, g in CATALOG.items() if g.ec2), spot=True,
                                max_nodes=1, datapool_schemes=("s3",), resources_enforced=True)

    def check(self, job: Job) -> list[str]:
        notes = []
        itype = catalog.instance_type(job)  # an impossible GPU count is refused here, with the valid counts
        if job.secrets:
            raise UserError("--secret on ec2 is not built yet: values must not travel in user-data; use the "
                            "instance role (ec2: instance_profile) for AWS access, or --backend ssh for now")
        if job.memory or (job.cpus and (job.gpu or (job.ec2 and job.ec2.instance_type))):
            notes.append(f"--cpus / --memory: the instance type {itype} decides them (only a CPU-only job "
                         "picks its type by --cpus)")
        if job.ec2 and job.ec2.key_path:
            notes.append("--key-path: kept for SSH access; live logs over SSH are not built yet, they come "
                         "through S3")
        if job.keep_on_failure:
            notes.append("--keep-on-failure: a node whose job fails stays up (and billed) until its dead-man switch "
                         "at the deadline; end it sooner with `launch down JOB`; reach it with SSM Session Manager "
                         "(if its instance role allows) or SSH with --key-name")
        if job.ec2 and job.ec2.key_name:
            notes.append("--key-name: the node gets the key pair, but logs still come through S3 (no inbound "
                         "port is opened)")
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root="datapool", state_dir=f"jobs/{job_id}")

    def render(self, plan: Plan) -> dict:
        itype = catalog.instance_type(plan.job)
        region = plan.job.ec2.region if plan.job.ec2 and plan.job.ec2.region else "<$AWS_REGION at submit>"
        return {"region": region, "RunInstances": request.run_instances(plan, itype)}

    def price(self, job: Job) -> dict:
        return catalog.price(job, catalog.instance_type(job))

    def preflight(self, plan: Plan) -> None:
        aws.check_credentials(aws.region_of(plan.job))

    def start(self, plan: Plan, *, detach: bool) -> dict:
        from ...snapshot import Snapshot, upload

        job = plan.job
        region = aws.region_of(job)
        itype = plan.request["RunInstances"]["InstanceType"]
        ec2 = aws.client("ec2", region)
        launcher_ec2 = aws.client("ec2", region, retries=False)  # RunInstances only: we handle its errors ourselves
        image = aws.resolve_ami(aws.client("ssm", region), catalog.ami_source(job, itype))
        subnet = job.ec2.subnet if job.ec2 else None
        group = (job.ec2.security_group if job.ec2 and job.ec2.security_group else None) \
            or aws.no_ingress_group(ec2, aws.vpc_of_subnet(ec2, subnet) if subnet else None)
        # The code goes to the store once per content hash; the node fetches it by a presigned URL.
        snap = Snapshot(plan.snapshot["sha256"], plan.snapshot["size"], plan.snapshot["files"],
                        Path(plan.snapshot_file))
        upload(snap, job.datapool, endpoint_url=job.endpoint_url)
        valid = int(plan.deadline_at - time.time()) + 3600
        url = aws.presign("get_object", job.datapool, snap.key, valid, job.endpoint_url, region)
        result_url = aws.presign("put_object", job.datapool,
                                 f"experiments/{job.experiment}/reports/jobs/{plan.job_id}/result.json", valid,
                                 job.endpoint_url, region)
        req = request.run_instances(plan, itype, image_id=image, security_group=group, snapshot_url=url,
                                    result_url=result_url)
        if subnet:
            zone_list = [f"the zone of {subnet}"]  # a subnet lives in one zone: nowhere to move to
        else:
            zone_list = aws.zones(ec2, job.ec2.zone if job.ec2 else None)
        instance, zone = aws.run_instance(launcher_ec2, req, zone_list, spot=job.spot, region=region)
        return {"region": region, "instance": instance, "zone": zone, "instance_type": itype, "spot": job.spot}

    def status(self, handle: Handle) -> tuple[str, int | None, str | None]:
        d = handle.data
        inst = aws.describe(aws.client("ec2", d["region"]), d["instance"])
        if inst is None:
            return "lost", None, f"instance {d['instance']} is gone and left no result in the store"
        state = inst["State"]["Name"]
        if state == "pending":
            return "pending", None, None
        if state in ("running", "stopping", "stopped"):
            return "running", None, None
        reason = (inst.get("StateReason") or {}).get("Message", "")
        if "Spot" in reason or "spot" in (inst.get("StateReason") or {}).get("Code", "").lower():
            return "preempted", None, f"instance {d['instance']}: {reason}"
        # shutting-down / terminated with no result.json: the node ended before the agent could report.
        return "lost", None, f"instance {d['instance']} {state} without a result ({reason or 'no reason given'})"

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[bytes] | None:
        return None  # the store's copy of log.txt (no inbound port to stream from)

    def cancel(self, handle: Handle, grace: float | None = None) -> None:
        d = handle.data
        ec2 = aws.client("ec2", d["region"])
        if grace is None or grace > 0:
            # The cancel marker is in the store: give the agent its grace to push a last time, then terminate.
            grace = float(d.get("grace_period", 30)) if grace is None else grace
            end = time.time() + min(grace + 15, 120)
            while time.time() < end:
                inst = aws.describe(ec2, d["instance"])
                if inst is None or inst["State"]["Name"] in ("shutting-down", "terminated"):
                    return
                time.sleep(3)
        aws.terminate(ec2, [d["instance"]])

    def confirm_teardown(self, handle: Handle) -> str:
        """--terminate-after: the job is over; make sure the instance is gone and say what it cost."""
        d = handle.data
        ec2 = aws.client("ec2", d["region"])
        inst = aws.describe(ec2, d["instance"])
        state = aws.wait_terminated(ec2, d["instance"], timeout=120)
        if state != "terminated":  # the node did not end itself in time: layer 3 does it
            aws.terminate(ec2, [d["instance"]])
            state = aws.wait_terminated(ec2, d["instance"], timeout=300)
        line = f"instance {d['instance']} {state}"
        if inst is not None and inst.get("LaunchTime"):
            hours = max(0.0, time.time() - inst["LaunchTime"].timestamp()) / 3600
            hourly = catalog.usd_per_hour(d["instance_type"])
            line += f"; ran {hours * 60:.0f} min" + (f", about ${hourly * hours:.2f} at ${hourly}/h on-demand"
                                                      if hourly else "")
        return line

    def sweep(self, now: float, *, region: str | None = None, dry_run: bool = False) -> list[str]:
        """Teardown layer 4, registry or not: every tagged instance past its deadline, in any live state."""
        region = region or aws.default_region()
        ec2 = aws.client("ec2", region)
        found = aws.expired(ec2, now)
        if found and not dry_run:
            aws.terminate(ec2, [f["id"] for f in found])
        return [f"{f['id']} ({f['job']}, {f['state']})" for f in found]
