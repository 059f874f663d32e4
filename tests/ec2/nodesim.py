"""The node simulator: plays the EC2 hosts behind a moto server, so a rendered RunInstances is proven to run the job.

Every instance launcher starts gets its own user-data executed here, as cloud-init would at boot (bash, as root,
in its own session; gzip-compressed user-data unpacked first, as cloud-init does), with one change: the node's base
dir moves from /opt/launcher-node into a temp dir. `docker` is a stub that records its arguments in
<node>/docker.log: `pull` succeeds, and `run` runs the command after the image here, in the `-w` folder, as if this
machine's Python were the image's (the image is built from the lock; this Python has it). `shutdown`,
`poweroff` and `halt` are stubs that terminate the instance through the EC2 API, which is what
InstanceInitiatedShutdownBehavior=terminate makes of a shutdown. An instance terminated from outside (launch down,
the sweeper) has its processes killed, as a real host would lose them.
"""
from __future__ import annotations

import base64
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from launcher.backends.ec2.request import NODE_BASE
from launcher.proc import ProcRef

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$SIM_DIR/teardown.log"
exec {python} -c 'import os, boto3
boto3.client("ec2", region_name=os.environ["SIM_REGION"], endpoint_url=os.environ["SIM_ENDPOINT"]).terminate_instances(
    InstanceIds=[os.environ["SIM_INSTANCE"]])'
"""


DOCKER_STUB = """#!{python}
import os, sys
with open(os.path.join(os.environ["SIM_DIR"], "docker.log"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:2] != ["run"]:
    sys.exit(0)
args, workdir, i = sys.argv[2:], None, 0
while args[i].startswith("-"):  # options, those with a value taking the next word
    if args[i] == "-w":
        workdir = args[i + 1]
    i += 2 if args[i] in ("-v", "-w", "-e", "--network", "--ipc", "--gpus", "--name") else 1
command = args[i + 1:]  # after the image
if command[0] == "python3":
    command[0] = sys.executable
if workdir:
    os.chdir(workdir)
os.execv(command[0], command)
"""


# `systemctl restart ssh` on a simulated host (the bootstrap installed the job's host key in $SSHD_DIR): an sshd of
# the host's own on 127.0.0.1 with that key, whose address goes into the hosts map the client reads
# (LAUNCHER_EC2_SSH_HOSTS), as a tunnel would provide it.
SSHD_STUB = """#!{python}
import fcntl, json, os, socket, subprocess, time
node, port = os.environ["SIM_DIR"], 0
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cfg = os.path.join(node, "sshd_config")
with open(cfg, "w") as f:
    f.write(f\"\"\"ListenAddress 127.0.0.1
Port {{port}}
HostKey {{node}}/etc-ssh/ssh_host_ed25519_key
PidFile {{node}}/sshd.pid
AuthorizedKeysFile {{os.environ['SIM_AUTHORIZED_KEYS']}}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
SetEnv LAUNCHER_NODE_BASE={{node}}/base
\"\"\")
os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
log = open(os.path.join(node, "sshd.log"), "ab")
proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg], stdin=subprocess.DEVNULL, stdout=log,
                        stderr=log, start_new_session=True)
with open(os.path.join(node, "sshd.sim-pid"), "w") as f:
    f.write(str(proc.pid))
for _ in range(200):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            if c.recv(8).startswith(b"SSH-"):
                break
    except OSError:
        time.sleep(0.05)
with open(os.environ["SIM_SSH_HOSTS"] + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        hosts = json.load(open(os.environ["SIM_SSH_HOSTS"]))
    except (OSError, ValueError):
        hosts = {{}}
    hosts[os.environ["SIM_INSTANCE"]] = f"127.0.0.1:{{port}}"
    tmp = os.environ["SIM_SSH_HOSTS"] + ".tmp"
    json.dump(hosts, open(tmp, "w"))
    os.replace(tmp, os.environ["SIM_SSH_HOSTS"])
"""


class NodeSimulator:
    def __init__(self, endpoint: str, region: str, workdir: Path, env: dict[str, str]):
        import boto3

        self.endpoint, self.region, self.workdir = endpoint, region, Path(workdir)
        self.env = {**env, "AWS_ENDPOINT_URL": endpoint}  # the instance role's stand-in: the test's credentials
        self.ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint,
                                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        self.procs: dict[str, subprocess.Popen | None] = {}
        self.hang: set[str] = set()  # job names whose hosts never boot (a node stuck before its user-data runs)
        # SSH into the hosts: the keys sshd accepts, and where their addresses are published for the client.
        self.authorized_keys = self.workdir / "authorized_keys"
        self.ssh_hosts = self.workdir / "ssh-hosts.json"
        self.stubs = self.workdir / "stubs"
        self.stubs.mkdir(parents=True, exist_ok=True)
        (self.stubs / "systemctl").write_text(SSHD_STUB.format(python=sys.executable))
        (self.stubs / "systemctl").chmod(0o755)
        (self.stubs / "docker").write_text(DOCKER_STUB.format(python=sys.executable))
        (self.stubs / "docker").chmod(0o755)
        for name in ("shutdown", "poweroff", "halt"):
            (self.stubs / name).write_text(STUB.format(python=shlex.quote(sys.executable)))
            (self.stubs / name).chmod(0o755)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-simulator", daemon=True)

    def __enter__(self) -> "NodeSimulator":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for iid, proc in list(self.procs.items()):
            if proc is not None:
                self._power_off(iid)

    def node_dir(self, instance_id: str) -> Path:
        return self.workdir / instance_id

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                reservations = self.ec2.describe_instances(
                    Filters=[{"Name": "tag-key", "Values": ["launcher:job"]}])["Reservations"]
            except Exception:  # noqa: BLE001 - the server is going away at the end of the module
                continue
            for r in reservations:
                for inst in r["Instances"]:
                    iid, state = inst["InstanceId"], inst["State"]["Name"]
                    if state in ("pending", "running") and iid not in self.procs:
                        job = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get("launcher:job", "")
                        hung = any(job.startswith(name) for name in self.hang)
                        self.procs[iid] = None if hung else self._boot(iid)
                    elif state in ("shutting-down", "terminated") and self.procs.get(iid) is not None:
                        self._power_off(iid)

    def preempt(self, instance_id: str) -> None:
        """A spot interruption as the node sees it: the OS shuts down, so every process gets SIGTERM (the agent
        pushes and records `preempted`); the shutdown then terminates the instance."""
        for pidfile in self.node_dir(instance_id).glob("base/jobs/*/agent.pid"):
            ref = ProcRef.load(pidfile)
            if ref is not None:
                ref.signal(signal.SIGTERM)

    def _power_off(self, instance_id: str) -> None:
        """Everything the host ran goes: the bootstrap's group (agent included; its watchdog takes the script) and
        the dead-man switch, which runs in its own session."""
        _killpg(self.procs[instance_id])
        sshd = self.node_dir(instance_id) / "sshd.sim-pid"
        if sshd.exists():
            try:
                os.killpg(int(sshd.read_text()), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        for pidfile in self.node_dir(instance_id).glob("base/jobs/*/*.pid"):
            ref = ProcRef.load(pidfile)
            if ref is not None:
                ref.signal_group(signal.SIGKILL)

    def _boot(self, instance_id: str) -> subprocess.Popen | None:
        raw = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        if "Value" not in raw["UserData"]:
            return None  # not one of launcher's (a test's stand-in for a leak): a host that boots nothing
        data = base64.b64decode(raw["UserData"]["Value"])
        if data[:2] == b"\x1f\x8b":  # cloud-init unpacks gzip-compressed user-data
            import gzip

            data = gzip.decompress(data)
        script = data.decode()
        node = self.node_dir(instance_id)
        node.mkdir(parents=True, exist_ok=True)
        line = f"BASE={NODE_BASE}\n"
        assert script.count(line) == 1, "user-data no longer sets BASE as the simulator expects"
        script = script.replace(line, f"BASE={shlex.quote(str(node / 'base'))}\n")
        (node / "etc-ssh").mkdir(exist_ok=True)
        script = script.replace("SSHD_DIR=/etc/ssh\n", f"SSHD_DIR={shlex.quote(str(node / 'etc-ssh'))}\n")
        (node / "user-data.sh").write_text(script)
        env = {**self.env, "PATH": f"{self.stubs}:{self.env.get('PATH', '/usr/bin:/bin')}", "SIM_DIR": str(node),
               "SIM_INSTANCE": instance_id, "SIM_REGION": self.region, "SIM_ENDPOINT": self.endpoint,
               "SIM_AUTHORIZED_KEYS": str(self.authorized_keys), "SIM_SSH_HOSTS": str(self.ssh_hosts)}
        log = open(node / "console.log", "wb")
        try:
            return subprocess.Popen(["bash", str(node / "user-data.sh")], env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()


def _killpg(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)
