"""The ec2 backend: the launch path's verbs over EC2. Status, logs and cancel meet the node in the S3 store."""
from __future__ import annotations

import shlex
import time
from typing import Iterator

from pydantic import BaseModel, ConfigDict

from ...errors import UserError
from ...job import Job
from ...plan import Plan
from ...units import format_duration
from ..base import Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation
from . import aws, catalog, request, sshaccess


class Ec2Ssh(BaseModel):
    """How `logs` reaches the node over SSH (only with --key-name and --key-path): the host key made for it."""

    model_config = ConfigDict(extra="ignore")

    user: str
    identity: str | None = None  # --key-path, the private key of the EC2 key pair
    host_key: str  # the node's public host key, made here and checked
    experiment: str = "default"  # where the log lies under the node's datapool


class Ec2Handle(HandleData):
    """An ec2 job's handle: `locator` records the region; `start` (and `restart`) the rest. Every field but the
    region has a default: a record whose client died inside RunInstances has no instance and no zone yet."""

    region: str
    instance: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    spot: bool = False
    secrets: bool = False  # SSM parameters under request.secrets_path(job) to delete when it ends
    group: str | None = None  # the job's own security group (port 22 for SSH), deleted when it ends
    ssh: Ec2Ssh | None = None


class Ec2Backend(Backend):
    name = "ec2"
    handle_type = Ec2Handle
    where_fields = ("region", "zone", "instance", "instance_type")
    capabilities = Capabilities(remote=True, gpus=catalog.gpus_offered(), spot=True,
                                max_nodes=1, datapool_schemes=("s3",), resources_enforced=True)

    def check(self, job: Job) -> list[str]:
        notes = []
        itype = catalog.instance_type(job)  # an impossible GPU count is refused here, with the valid counts
        if job.secrets:
            notes.append(f"--secret {', '.join(job.secrets)}: stored as SSM SecureString parameters under "
                         f"{request.secrets_path('<job>')}/ for the node's instance role to read, deleted when the "
                         "job ends (the sweeper deletes what a lost client left)")
        if job.memory or (job.cpus and (job.gpu or (job.ec2 and job.ec2.instance_type))):
            notes.append(f"--cpus / --memory: the instance type {itype} decides them (only a CPU-only job "
                         "picks its type by --cpus)")
        if job.keep_on_failure:
            notes.append("--keep-on-failure: a node whose job fails stays up (and billed) until its dead-man switch "
                         "at the deadline; end it sooner with `launch down JOB`; reach it with SSM Session Manager "
                         "(if its instance role allows) or SSH with --key-name")
        ec2 = job.ec2
        if ec2 and ec2.key_name and ec2.key_path:
            notes.append(f"--key-name {ec2.key_name}: live `logs -f` over SSH as {ec2.ssh_user}, host key made here "
                         "and checked; port 22 open to " + (ec2.ssh_from or "your public IP /32")
                         + (f" in {ec2.security_group} as you set it up" if ec2.security_group else
                            " only, in a security group of the job's own"))
        elif ec2 and ec2.key_name:
            notes.append("--key-name without --key-path: the node gets the key pair, but no port is opened and "
                         "logs come through S3 (add --key-path for live logs over SSH)")
        elif ec2 and ec2.key_path:
            raise UserError("--key-path needs --key-name (the EC2 key pair whose private key it is)")
        if job.keep_on_failure:  # where to look if the store never takes the outputs (docs/backends/ec2.md)
            notes.append(f"a store outage longer than --push-timeout ({format_duration(job.push_timeout)}) leaves "
                         f"the outputs on the instance, kept to the deadline: copy them from "
                         f"{request.NODE_BASE}/datapool/experiments/{job.experiment}")
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root="datapool", state_dir=f"jobs/{job_id}")

    def render(self, plan: Plan) -> dict:
        return request.render(plan)

    def price(self, job: Job) -> dict:
        return catalog.price(job, catalog.instance_type(job))

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def gpu_offers(self, options=None) -> list:
        from .access import gpu_offers

        return gpu_offers(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        from ..base import CHECKED_AT_LAUNCH

        job, ec2 = plan.job, plan.job.ec2
        itype = catalog.instance_type(job)
        gpu = job.gpu_request
        machine = itype + (f", {gpu.count}x {gpu.type.name}" if gpu and gpu.type else "")
        account = CHECKED_AT_LAUNCH
        if online:  # at the confirmation, after preflight accepted the credentials: whose account pays
            try:
                account = aws.client("sts", aws.region_of(job)).get_caller_identity()["Account"]
            except Exception:  # noqa: BLE001 - a fact for the summary, never a reason to fail the launch
                account = "unknown"
        facts = [("region", f"{aws.region_of(job)}, zone {ec2.zone if ec2 and ec2.zone else 'any'}; account "
                            f"{account}"),
                 ("machine", machine + (f", disk {job.disk}" if job.disk else "")),
                 ("image", _shown_ami(catalog.ami_source(job, itype)))]
        if ec2 and ec2.image:
            facts.append(("container", f"{ec2.image} (docker run)"))
        if online and plan.snapshot is not None:
            from ...snapshot import in_store_fact

            facts.append(in_store_fact(plan))
        return facts

    def locator(self, plan: Plan) -> dict:
        return {"region": aws.region_of(plan.job)}

    def default_datapool(self, options=None, *, online: bool = False) -> str | None:
        from . import defaultstore

        return defaultstore.url(options, online=online)

    def create_datapool(self, url: str, *, dry_run: bool = False) -> bool:
        from . import defaultstore

        return defaultstore.create(url, dry_run=dry_run)

    def preflight(self, plan: Plan) -> None:
        aws.check_credentials(aws.region_of(plan.job))

    def restart(self, plan: Plan, previous: Ec2Handle) -> dict:
        """A relaunch after a preemption: capacity just went away in the last zone, so it is tried last."""
        return self.start(plan, detach=True, avoid_zone=previous.zone)

    def start(self, plan: Plan, *, detach: bool, avoid_zone: str | None = None) -> dict:
        """Makes what the request's slots name (request.py lists them) and sends `plan.request` filled with it."""
        from ...snapshot import upload

        job = plan.job
        region = aws.region_of(job)
        # The type render chose, by the function render used on the same Job (pure: the same answer), rather than
        # read back out of the printed request by key.
        itype = catalog.instance_type(job)
        ec2 = aws.client("ec2", region)
        launcher_ec2 = aws.client("ec2", region, retries=False)  # RunInstances only: we handle its errors ourselves
        ssm = aws.client("ssm", region)
        values: dict = {}
        if not (job.ec2 and job.ec2.region):
            values["region"] = region
        source = catalog.ami_source(job, itype)
        if source.startswith("/"):
            values["image_id"] = aws.resolve_ami(ssm, source)
        subnet = job.ec2.subnet if job.ec2 else None
        vpc = aws.vpc_of_subnet(ec2, subnet) if subnet else None
        ssh = request.ssh_enabled(plan)
        own_group = None
        if not (job.ec2 and job.ec2.security_group):
            if ssh:
                own_group = values["security_group"] = sshaccess.ssh_group(
                    ec2, plan.job_id, vpc, sshaccess.caller_cidr(job), request.tags(plan))
            else:
                values["security_group"] = aws.no_ingress_group(ec2, vpc)
        # The code goes to the store once per content hash; the node fetches it by a presigned URL.
        snap = plan.snapshot
        upload(snap, job.datapool, endpoint_url=job.endpoint_url)
        valid = int(plan.deadline_at - time.time()) + 3600
        values["snapshot_url"] = aws.presign("get_object", job.datapool, snap.key, valid, job.endpoint_url, region)
        values["result_url"] = aws.presign("put_object", job.datapool,
                                           f"experiments/{job.experiment}/reports/jobs/{plan.job_id}/result.json",
                                           valid, job.endpoint_url, region)
        if request.builds_venv(plan):
            # Node setup's fast paths (launcher/nodesetup.py): uv as its own object (uploaded once), and the packed
            # venv of this lock, unpacked if a node pushed it, pushed by this node after its job if not.
            from ... import nodesetup

            values["uv_sha"], uv_key = nodesetup.put_uv(job.datapool, endpoint_url=job.endpoint_url)
            values["uv_url"] = uv_key and aws.presign("get_object", job.datapool, uv_key, valid, job.endpoint_url,
                                                      region)
            pack = nodesetup.venv_key(request.venv_pack(plan))
            values["venv_url"] = aws.presign("get_object", job.datapool, pack, valid, job.endpoint_url, region)
            values["venv_put_url"] = aws.presign("put_object", job.datapool, pack, valid, job.endpoint_url, region)
        if ssh:
            host_private, values["host_key"] = sshaccess.new_host_key()
            sshaccess.put_host_key(ssm, plan.job_id, host_private, plan.deadline_at)
        if subnet:
            zone_list = [f"the zone of {subnet}"]  # a subnet lives in one zone: nowhere to move to
        else:
            zone_list = aws.zones(ec2, job.ec2.zone if job.ec2 else None)
            zone_list.sort(key=lambda z: z == avoid_zone)
        if job.secrets:
            aws.put_secrets(ssm, plan.job_id, job.secrets, plan.deadline_at)
        data = {"region": region, "instance_type": itype, "spot": job.spot, "secrets": bool(job.secrets),
                "group": own_group}
        if ssh:
            data["ssh"] = {"user": job.ec2.ssh_user, "identity": job.ec2.key_path, "host_key": values["host_key"],
                           "experiment": job.experiment}
        try:
            instance, zone = aws.run_instance(launcher_ec2, lambda z: request.sent(plan, values, z), zone_list,
                                              spot=job.spot, region=region)
        except BaseException:
            if plan.spec.attempt == 1:  # nothing runs: what was made for it goes too
                self.release(self.handle(plan.job_id, data))
            raise
        return {**data, "instance": instance, "zone": zone}

    def _instance_id(self, ec2, handle: Handle) -> str | None:
        """The handle's instance; for a record whose client died inside RunInstances, the one its tag names."""
        if handle.data.instance:
            return handle.data.instance
        found = aws.tagged(ec2, handle.job_id)
        return found[-1] if found else None

    def status(self, handle: Handle) -> Observation:
        """EC2's view of the instance; `unreachable` (with why) when DescribeInstances could not be asked (no
        connection, a timeout, a 5xx, throttling): the job goes on, and only a real answer makes it lost."""
        try:
            state, code, why = self._look(handle)
        except Exception as exc:  # noqa: BLE001 - sorted by aws.unreachable; anything else is a real error
            reason = aws.unreachable(exc)
            if reason is None:
                raise
            return Observation(JobState.UNREACHABLE, None, reason)
        return Observation(JobState(state), code, why)

    def _look(self, handle: Handle) -> tuple[str, int | None, str | None]:
        d = handle.data
        ec2 = aws.client("ec2", d.region)
        iid = self._instance_id(ec2, handle)
        if iid is None:
            return "lost", None, "the client stopped before RunInstances answered, and no instance of this job exists"
        inst = aws.describe(ec2, iid)
        if inst is None:
            return "lost", None, f"instance {iid} is gone and left no result in the store"
        state = inst["State"]["Name"]
        # The reason of an active state is the instance's own, for the launch's progress (waiting for the machine).
        zone = (inst.get("Placement") or {}).get("AvailabilityZone")
        where = f"instance {iid} {state}" + (f" in {zone}" if zone else "")
        if state == "pending":
            return "pending", None, where
        if state in ("running", "stopping", "stopped"):
            return "running", None, where
        reason = (inst.get("StateReason") or {}).get("Message", "")
        if "Spot" in reason or "spot" in (inst.get("StateReason") or {}).get("Code", "").lower():
            return "preempted", None, f"instance {iid}: {reason}"
        # shutting-down / terminated with no result.json: the node ended before the agent could report.
        return "lost", None, f"instance {iid} {state} without a result ({reason or 'no reason given'})"

    # Over SSH the stream is the node's log.txt itself: a follower that lost it goes on in the store's copy.
    stream_is_store_log = True

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        """Live over SSH when the job has a key pair and the node answers with the host key made for it; else None:
        the caller tails the store's copy of log.txt (no inbound port, or the node is still booting). `offset`: the
        bytes of log.txt the caller has; the stream starts right after them (`tail -c +N`). A dropped or silent
        connection raises (sshclient's idle probe notices a dead link); the caller reconnects."""
        d = handle.data
        if not d.ssh or not d.instance:
            return None
        try:
            inst = aws.describe(aws.client("ec2", d.region), d.instance)
        except Exception as exc:  # noqa: BLE001 - EC2 cannot be asked where the node is: the store has the log too
            if aws.unreachable(exc) is None:
                raise
            return None
        addr = sshaccess.address(inst) if inst and inst["State"]["Name"] == "running" else None
        if not addr:
            return None
        from ...sshclient import SshClient

        ssh = d.ssh
        try:
            client = SshClient(f"{ssh.user}@{addr}", identity=ssh.identity,
                               known_hosts=sshaccess.known_hosts(handle.job_id, addr, ssh.host_key)).connect()
        except Exception:  # noqa: BLE001 - booting, or sshd not yet on our host key: the store has the log too
            return None
        log = shlex.quote(f"datapool/experiments/{ssh.experiment}/reports/jobs/{handle.job_id}/log.txt")
        state = shlex.quote(f"jobs/{handle.job_id}")
        start = f"+{max(0, int(offset)) + 1}"  # tail -c +N: from byte N (1-based), so right after `offset` bytes
        # setup.log stands in for a log.txt the agent never opened (a setup failure), only on a first read: its
        # bytes are not log.txt's, so a follower resuming at an offset gets nothing from it.
        setup = "cat $S/setup.log 2>/dev/null; " if not offset else ""
        if follow:
            # Wait (bounded) for the agent to open the log, then follow it until the agent is gone.
            body = (f"for i in $(seq 3000); do [ -f {log} ] || [ -f $S/result.json ] && break; sleep 0.2; done; "
                    f"[ -f {log} ] || {{ {setup}exit 0; }}; "
                    f"read -r p s < $S/agent.pid 2>/dev/null; "
                    f"if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then "
                    f"exec tail -c {start} -F -s 0.2 --pid=\"$p\" {log}; "
                    f"else tail -c {start} {log}; fi")
        else:
            body = f"if [ -f {log} ]; then tail -c {start} {log}; else {setup}true; fi"
        return self._stream(client, f'cd "${{LAUNCHER_NODE_BASE:-{request.NODE_BASE}}}" && S={state} && {body}')

    @staticmethod
    def _stream(client, command: str) -> Iterator[bytes]:
        try:
            yield from client.stream(command, check=False)
        finally:
            client.close()

    cancel_poll = 3.0

    def still_running(self, handle: Handle) -> bool:
        d = handle.data
        if not d.instance:
            return False
        inst = aws.describe(aws.client("ec2", d.region), d.instance)
        return inst is not None and inst["State"]["Name"] not in ("shutting-down", "terminated")

    def kill_now(self, handle: Handle) -> None:
        d = handle.data
        ec2 = aws.client("ec2", d.region)
        if not d.instance:  # the client died inside RunInstances: whatever carries the job's tag goes
            aws.terminate_by_token(ec2, handle.job_id)
        else:
            aws.terminate(ec2, [d.instance])

    def release(self, handle: Handle) -> None:
        """The job is over: its secret parameters, host key and own security group go (the instance is gone or
        going by itself; a group it still holds is left to the sweeper)."""
        d = handle.data
        ssm = aws.client("ssm", d.region)
        if d.secrets:
            aws.delete_secrets(ssm, handle.job_id)
        if d.ssh:
            sshaccess.delete_host_key(ssm, handle.job_id)
        if d.group:
            sshaccess.delete_group(aws.client("ec2", d.region), d.group)

    def confirm_teardown(self, handle: Handle) -> str:
        """--terminate-after: the job is over; make sure the instance is gone and say what it cost."""
        d = handle.data
        ec2 = aws.client("ec2", d.region)
        inst = aws.describe(ec2, d.instance)
        state = aws.wait_terminated(ec2, d.instance, timeout=120)
        if state != "terminated":  # the node did not end itself in time: layer 3 does it
            aws.terminate(ec2, [d.instance])
            state = aws.wait_terminated(ec2, d.instance, timeout=300)
        self.release(handle)
        line = f"instance {d.instance} {state}"
        if inst is not None and inst.get("LaunchTime"):
            hours = max(0.0, time.time() - inst["LaunchTime"].timestamp()) / 3600
            hourly = catalog.usd_per_hour(d.instance_type)
            line += f"; ran {hours * 60:.0f} min" + (f", about ${hourly * hours:.2f} at ${hourly}/h on-demand"
                                                      if hourly else "")
        return line

    def sweep(self, now: float, options=None, *, dry_run: bool = False) -> list[str]:
        """Teardown layer 4, registry or not: every tagged instance past its deadline, in any live state."""
        region = (options.region if options else None) or aws.default_region()
        aws.check_credentials(region)  # no credentials is one line, not botocore's traceback
        ec2 = aws.client("ec2", region)
        found = aws.expired(ec2, now)
        if found and not dry_run:
            aws.terminate(ec2, [f["id"] for f in found])
        ssm = aws.client("ssm", region)
        ended = [f"{f['id']} ({f['job']}, {f['state']})" for f in found]
        for root, what, delete in ((request.SECRETS_ROOT, "secrets", aws.delete_secrets),
                                   (request.HOSTKEYS_ROOT, "ssh host key", sshaccess.delete_host_key)):
            for job_id in aws.expired_params(ssm, now, root):
                if not dry_run:
                    delete(ssm, job_id)
                ended.append(f"{root}/{job_id} ({what} of {job_id})")
        for g in aws.expired_groups(ec2, now):
            # Still held by an instance that is shutting down: the next sweep gets it.
            if dry_run or sshaccess.delete_group(ec2, g["GroupId"]):
                ended.append(f"{g['GroupId']} (security group {g['GroupName']})")
        for v in aws.expired_volumes(ec2, now):
            if not dry_run:
                ec2.delete_volume(VolumeId=v["VolumeId"])
            ended.append(f"{v['VolumeId']} (volume, {v['Size']} GiB)")
        return ended


def _shown_ami(ami: str) -> str:
    """An AMI for the plan's summary: an id as is; a long SSM parameter by its image's name."""
    parts = ami.strip("/").split("/")
    if len(ami) > 60 and ami.startswith("/") and len(parts) >= 3:
        return f"{parts[-3]}, {'/'.join(parts[-2:])} (SSM parameter)"
    return ami
