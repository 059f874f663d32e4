"""The node bootstrap: one bash script every remote node runs (EC2 user-data, the k8s container command, the ssh
backend's detached command). Rendered here from the AgentSpec; shown in full by `--dry-run`.

    1. arm the dead-man switch (first, before anything can hang): at deadman_at it ends the job on its own,
       independent of the agent: power off the node (cloud) or kill the job's processes (a box you own)
    2. python: the lock's image run with `docker run` (`image`: the agent runs in it), else the named interpreter,
       else the node's python3 if it has launcher's dependencies. An interpreter that passed the import check for
       this lock hash is not checked again (a marker under checked/)
    3. the code snapshot (already on the node, or fetched from a presigned URL): verify its sha256, unpack it once
       per hash
    2b. still no python: a venv from the project's lock (images/requirements.lock), cached by the lock's hash
       (launcher/node/venvsetup.py, which comes in the snapshot): the store's packed venv of this lock and platform
       if one is offered and there, else built with uv (the wheel offered by its sha256: tools/uv-<sha>.whl) on the
       node's Python of the lock's minor or a uv-managed one, else with pip
    4. run the agent; wait; a venv built here is packed and pushed to the store (when a PUT is offered), so later
       nodes unpack it; disarm the switch; tear down
A failing step still writes result.json (reason setup_failed, the step, its last stderr lines) through the agent's
`--setup-failed` report, into the store when Python is there, else on the node; then tears down.
"""
from __future__ import annotations

import re
import shlex

from ..images import PYTHON_VERSION
from ..spec import AgentSpec

LOCK = "images/requirements.lock"

TEMPLATE = r"""#!/usr/bin/env bash
# launcher node bootstrap for job @@JOB_ID@@. Generated; see launcher/node/bootstrap.py.
set -uo pipefail
JOB_ID=@@JOB_ID_Q@@
BASE=@@BASE@@
PYTHON_WANTED=@@PYTHON@@
SNAPSHOT_SHA=@@SHA@@
SNAPSHOT_TAR=@@TAR@@
SNAPSHOT_URL=@@URL@@
RESULT_URL=@@RESULT_URL@@
DEADMAN_AT=@@DEADMAN_AT@@
TEARDOWN=@@TEARDOWN@@
KEEP_ON_FAILURE=@@KEEP@@
LOCK=@@LOCK@@
SECRETS_SSM=@@SECRETS_SSM@@
SSM_REGION=@@SSM_REGION@@
HOSTKEY_SSM=@@HOSTKEY_SSM@@
HOSTKEY_PUB=@@HOSTKEY_PUB@@
LOCK_HASH=@@LOCK_HASH@@
IMAGE=@@IMAGE@@
# The fast paths of the venv (launcher/node/venvsetup.py reads them): the uv wheel by its sha256 (at
# tools/uv-<sha>.whl, or fetched from the URL), the packed venv of this lock and platform (GET, and PUT after the job).
export LAUNCHER_UV_SHA=@@UV_SHA@@ LAUNCHER_UV_URL=@@UV_URL@@ LAUNCHER_VENV_PACK=@@VENV_PACK@@
export LAUNCHER_VENV_GET_URL=@@VENV_GET_URL@@ LAUNCHER_VENV_PUT_URL=@@VENV_PUT_URL@@
SSHD_DIR=/etc/ssh

mkdir -p "$BASE" && cd "$BASE" || exit 1
STATE="jobs/$JOB_ID"
mkdir -p "$STATE" code venvs checked
CODE="code/$SNAPSHOT_SHA"
AGENT_PATH="$PWD/$CODE/.launcher-agent:$PWD/$CODE"
PY=""
BOOT=$$
BOOT_START=$(sed -E 's/^.*\) //' /proc/$$/stat | cut -d' ' -f20)
cat > "$STATE/spec.json" <<'LAUNCHER_SPEC_EOF'
@@SPEC_JSON@@LAUNCHER_SPEC_EOF
[ -f "$STATE/secrets.env" ] && { set -a; . "$STATE/secrets.env"; set +a; rm -f "$STATE/secrets.env"; }
# The node's network, from the job's node: section only (as the agent sets it for itself and the script): the
# bootstrap's own downloads (the snapshot, pip, SSM, the setup-failure PUT) go through the same proxy and trust the
# same CA for the store's endpoint.
CA_ENV=()
@@NETWORK@@
log() { echo "[bootstrap $(date -u +%H:%M:%S)] $*" >> "$STATE/setup.log"; }

teardown() {
  local rc=${1:-0}
  if [ "$rc" != 0 ] && [ "$KEEP_ON_FAILURE" = 1 ]; then
    # --keep-on-failure: the node stays for debugging; the dead-man switch still ends it at the deadline.
    log "job failed ($rc): kept for debugging until the dead-man switch at $DEADMAN_AT; end it sooner: launch down $JOB_ID"
    return
  fi
  log "teardown: $TEARDOWN"
  [ -n "${DEADMAN:-}" ] && kill -- "-$DEADMAN" 2>/dev/null
  if [ "$TEARDOWN" = poweroff ]; then
    sync; shutdown -h now 2>/dev/null || poweroff 2>/dev/null || halt -p
  fi
}

fail() {
  local step=$1
  log "step $step failed"
  if [ -n "$PY" ] && PYTHONPATH="$AGENT_PATH" "$PY" -c 'import launcher.node.agent' 2>/dev/null; then
    PYTHONPATH="$AGENT_PATH" "$PY" -m launcher.node.agent --spec "$STATE/spec.json" \
      --setup-failed "$step" --stderr-file "$STATE/step.err" >> "$STATE/setup.log" 2>&1
  else
    # No Python to report with: the result stays on the node (the ssh backend reads it from there).
    tail -n 20 "$STATE/step.err" 2>/dev/null | tr '"\\\n\t' "'/  " > "$STATE/step.tail"
    printf '{"job_id": "%s", "exit_code": 1, "reason": "setup_failed", "error": "setup failed at step %s: %s"}\n' \
      "$JOB_ID" "'$step'" "$(cat "$STATE/step.tail")" > "$STATE/result.json"
    if [ -n "$RESULT_URL" ]; then
      # A presigned PUT made at submit: the store learns of the failure without credentials or Python deps.
      if command -v python3 > /dev/null; then
        env ${CA_ENV[@]+"${CA_ENV[@]}"} python3 -c 'import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=open(sys.argv[2], "rb").read(), method="PUT",
                       headers={"Content-Type": "application/json"}), timeout=60)' \
          "$RESULT_URL" "$STATE/result.json" >> "$STATE/setup.log" 2>&1
      else
        env ${CA_ENV[@]+"${CA_ENV[@]}"} curl -fsS -X PUT -H "Content-Type: application/json" --data-binary @"$STATE/result.json" "$RESULT_URL" \
          >> "$STATE/setup.log" 2>&1
      fi
    fi
  fi
  teardown 1
  exit 1
}

# 1. the dead-man switch
log "arming the dead-man switch for $DEADMAN_AT"
setsid bash -c '
  sleep $(( $1 - $(date +%s) )) 2>/dev/null
  echo "deadline $1 reached" >> "$2/setup.log"
  if [ "$3" = poweroff ]; then shutdown -h now 2>/dev/null || poweroff 2>/dev/null || halt -p; exit; fi
  same() { [ "$(sed -E "s/^.*\) //" /proc/$1/stat 2>/dev/null | cut -d" " -f20)" = "$2" ]; }
  same "$4" "$5" && kill -TERM -- "-$4"
  sleep 10
  same "$4" "$5" && kill -KILL -- "-$4"
  read -r apid astart < "$2/agent.pid" 2>/dev/null && same "$apid" "$astart" && kill -KILL "$apid"
  read -r spid sstart < "$2/script.pid" 2>/dev/null && same "$spid" "$sstart" && kill -KILL -- "-$spid"
' deadman "$DEADMAN_AT" "$PWD/$STATE" "$TEARDOWN" "$BOOT" "$BOOT_START" > /dev/null 2>&1 < /dev/null &
DEADMAN=$!
echo "$DEADMAN $(sed -E 's/^.*\) //' /proc/$DEADMAN/stat | cut -d' ' -f20)" > "$STATE/deadman.pid"

# 2. python with launcher's dependencies
log "python"
# An interpreter already checked for this lock hash is not checked again (a marker per interpreter, lock and
# imports: the check costs a Python start and the imports on every launch).
deps_ok() {
  local mark=""
  [ -n "$LOCK_HASH" ] && mark="checked/$(printf '%s\n' "$(readlink -f "$(command -v "$1")")" "$LOCK_HASH" '@@DEPS@@' | sha256sum | cut -c1-16)"
  [ -n "$mark" ] && [ -f "$mark" ] && return 0
  "$1" -c 'import @@DEPS@@' 2> "$STATE/step.err" || return 1
  [ -z "$mark" ] || touch "$mark"
}
if [ -n "$IMAGE" ]; then
  # The lock's image on a host with Docker: the agent runs in it (`python3` there), the base dir mounted at the
  # same path; the image is built from the lock, so it is not checked. -i: the snapshot's unpack reads its script
  # from stdin.
  log "image $IMAGE"
  docker pull -q "$IMAGE" > /dev/null 2> "$STATE/step.err" || fail image
  PY="$PWD/$STATE/python"
  printf '#!/bin/sh\nexec docker run --rm --init -i --network host --ipc host %s -v "%s:%s" -w "$PWD" %s %s python3 "$@"\n' \
    @@DOCKER_GPUS@@ "$PWD" "$PWD" @@DOCKER_ENV@@ "$IMAGE" > "$PY" && chmod +x "$PY"
elif [ -n "$PYTHON_WANTED" ]; then
  command -v "$PYTHON_WANTED" > /dev/null 2> "$STATE/step.err" || { echo "no interpreter $PYTHON_WANTED on this node" > "$STATE/step.err"; fail python; }
  PY=$(command -v "$PYTHON_WANTED")
  deps_ok "$PY" || fail python
elif command -v python3 > /dev/null && deps_ok python3; then
  PY=$(command -v python3)
fi

# 3. the code snapshot, verified before it is unpacked. Caches heal: a cached tarball whose sha256 is wrong is
# deleted and fetched again (where the node fetches it: a URL), and an unpacked code/<sha>/ counts only with the
# stamp written after a whole unpack (a folder without it, cut short or from elsewhere, is unpacked again).
log "snapshot $SNAPSHOT_SHA"
UNPACKED_STAMP="$CODE/.launcher-unpacked"
fetch_snapshot() {
  # A presigned GET: the node needs no credentials and no AWS tools for its code.
  env ${CA_ENV[@]+"${CA_ENV[@]}"} PYTHONPATH= "$UNPACK_PY" -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f, 1 << 20)' "$SNAPSHOT_URL" "$SNAPSHOT_TAR.part" 2> "$STATE/step.err" \
    && mv "$SNAPSHOT_TAR.part" "$SNAPSHOT_TAR"
}
unpack_snapshot() {
  # exit 3: the tarball is not the snapshot (its sha256 differs); anything else non-zero: it cannot be unpacked
  PYTHONPATH= "$UNPACK_PY" - "$SNAPSHOT_TAR" "$SNAPSHOT_SHA" code 2> "$STATE/step.err" > /dev/null <<'LAUNCHER_UNPACK_EOF'
import hashlib, os, shutil, sys, tarfile, tempfile
tar, sha, dest = sys.argv[1:4]
h = hashlib.sha256()
with open(tar, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
if h.hexdigest() != sha:
    sys.stderr.write(f"snapshot {tar}: sha256 {h.hexdigest()} is not the expected {sha}; nothing unpacked\n")
    sys.exit(3)
with tarfile.open(tar) as t:
    members = t.getmembers()
    for m in members:  # our own guard: Pythons before 3.11.4 have no tarfile data filter
        link = os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname)) if m.issym() else ""
        if (m.name.startswith("/") or ".." in m.name.split("/") or not (m.isreg() or m.isdir() or m.issym())
                or link.startswith(("/", "..")) or (m.issym() and m.linkname.startswith("/"))):
            sys.exit(f"snapshot {tar}: unsafe member {m.name!r}; nothing unpacked")
    tmp = tempfile.mkdtemp(dir=dest, prefix=f".{sha}.")
    if hasattr(tarfile, "data_filter"):
        t.extractall(tmp, members=members, filter="data")
    else:
        t.extractall(tmp, members=members)
with open(os.path.join(tmp, ".launcher-unpacked"), "w") as f:  # last: the folder is whole
    f.write(sha + "\n")
final = os.path.join(dest, sha)
if os.path.isdir(final) and not os.path.isfile(os.path.join(final, ".launcher-unpacked")):
    os.rename(final, tempfile.mkdtemp(dir=dest, prefix=f".{sha}.stale."))  # set aside, then replaced
try:
    os.rename(tmp, final)
except OSError:  # another job unpacked the same snapshot first: theirs is the same content
    if not os.path.isfile(os.path.join(final, ".launcher-unpacked")):
        raise
    shutil.rmtree(tmp)
LAUNCHER_UNPACK_EOF
}
if [ ! -f "$UNPACKED_STAMP" ]; then
  # Any python3 unpacks (stdlib only); launcher's dependencies are not needed yet.
  UNPACK_PY=${PY:-$(command -v python3)}
  [ -n "$UNPACK_PY" ] || { echo "no python3 on this node" > "$STATE/step.err"; fail snapshot; }
  if [ -z "$SNAPSHOT_TAR" ] && [ -n "$SNAPSHOT_URL" ]; then
    SNAPSHOT_TAR="code/$SNAPSHOT_SHA.tar.gz"
    [ -f "$SNAPSHOT_TAR" ] || fetch_snapshot || fail snapshot
  fi
  [ -n "$SNAPSHOT_TAR" ] || { echo "no snapshot source" > "$STATE/step.err"; fail snapshot; }
  unpack_snapshot
  RC=$?
  if [ "$RC" = 3 ]; then
    rm -f "$SNAPSHOT_TAR"  # never used again; the next upload or fetch brings the right bytes
    if [ -n "$SNAPSHOT_URL" ]; then
      log "cached snapshot did not match its sha256: deleted, fetched again"
      fetch_snapshot && unpack_snapshot || fail snapshot
    else
      echo "$(cat "$STATE/step.err"); the corrupt copy is deleted: launching again uploads it anew" > "$STATE/step.err"
      fail snapshot
    fi
  elif [ "$RC" != 0 ]; then
    fail snapshot
  fi
  rm -rf code/."$SNAPSHOT_SHA".stale.* 2> /dev/null
fi

# 2b. no usable interpreter yet: a venv from the node's lock (images/README.md), cached by the lock's hash: the
# project's own lock, else the one launcher's agent brought along in the snapshot. launcher/node/venvsetup.py
# (stdlib, from the snapshot) unpacks the store's pack of it, else installs it with uv, else with pip.
BUILT_VENV=""
if [ -z "$PY" ]; then
  LOCK_AT="$CODE/$LOCK"
  [ -f "$LOCK_AT" ] || LOCK_AT="$CODE/.launcher-agent/$LOCK"
  [ -f "$LOCK_AT" ] || { echo "no python3 with launcher's dependencies, and no $LOCK in the snapshot; name an interpreter (ssh: python: in the profile)" > "$STATE/step.err"; fail python; }
  LOCKS=("$LOCK_AT")
  # The gpu extra's lock only where CUDA is: unsloth and vllm neither install nor import without it.
  GPU_LOCK="${LOCK_AT%.lock}-gpu.lock"
  command -v nvidia-smi > /dev/null && [ -f "$GPU_LOCK" ] && LOCKS+=("$GPU_LOCK")
  log "venv from ${LOCKS[*]}"
  VS_PY=$(command -v python3) || { echo "no python3 on this node to build the venv with" > "$STATE/step.err"; fail python; }
  # Not CA_ENV: uv and pip keep the system's trust for the index; the store's downloads use AWS_CA_BUNDLE.
  VENV_SETUP=(env PYTHONPATH="$AGENT_PATH" "$VS_PY" -m launcher.node.venvsetup)
  PY=$("${VENV_SETUP[@]}" build "${LOCKS[@]}" --python-version @@PYVER@@ --state "$STATE" --deps '@@DEPS@@' \
       2> "$STATE/step.err" | tail -n 1)
  [ -n "$PY" ] && [ -x "$PY" ] || { PY=""; fail python; }
  BUILT_VENV=1
fi

# 3b. secrets kept in SSM Parameter Store (SecureString; EC2): read with the instance role, into the environment
# only (a 0600 file that is sourced and deleted at once; never argv, never a log)
if [ -n "$SECRETS_SSM" ]; then
  log "secrets from SSM $SECRETS_SSM"
  (umask 077; PYTHONPATH= "$PY" -c 'import shlex, sys, botocore.session
ssm = botocore.session.get_session().create_client("ssm", region_name=sys.argv[2])
kw = {"Path": sys.argv[1], "WithDecryption": True}
while True:
    page = ssm.get_parameters_by_path(**kw)
    for p in page["Parameters"]:
        print(p["Name"].rsplit("/", 1)[1] + "=" + shlex.quote(p["Value"]))
    if not page.get("NextToken"):
        break
    kw["NextToken"] = page["NextToken"]' "$SECRETS_SSM" "$SSM_REGION" > "$STATE/secrets.env") 2> "$STATE/step.err" \
    || { rm -f "$STATE/secrets.env"; fail secrets; }
  set -a; . "$STATE/secrets.env"; set +a; rm -f "$STATE/secrets.env"
fi

# 3c. the SSH host key the client generated and already trusts (EC2 with --key-name): sshd restarts with it, so
# the client's `logs -f` over SSH checks the host key instead of trusting the first one it sees. Optional: without
# it, logs still come through the store.
if [ -n "$HOSTKEY_SSM" ]; then
  log "ssh host key from SSM $HOSTKEY_SSM"
  if (umask 077; PYTHONPATH= "$PY" -c 'import sys, botocore.session
ssm = botocore.session.get_session().create_client("ssm", region_name=sys.argv[2])
print(ssm.get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"].strip())' \
      "$HOSTKEY_SSM" "$SSM_REGION" > "$SSHD_DIR/ssh_host_ed25519_key.new") 2>> "$STATE/setup.log"; then
    mv "$SSHD_DIR/ssh_host_ed25519_key.new" "$SSHD_DIR/ssh_host_ed25519_key"
    echo "$HOSTKEY_PUB" > "$SSHD_DIR/ssh_host_ed25519_key.pub"
    systemctl restart ssh 2>/dev/null || systemctl restart sshd 2>/dev/null || service ssh restart >> "$STATE/setup.log" 2>&1 \
      || log "sshd did not restart: live logs come through the store"
  else
    rm -f "$SSHD_DIR/ssh_host_ed25519_key.new"
    log "no ssh host key (see above): live logs come through the store"
  fi
fi

# 4. the agent
log "agent"
PYTHONPATH="$AGENT_PATH${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m launcher.node.agent --spec "$STATE/spec.json" \
  >> "$STATE/agent.log" 2>&1 < /dev/null &
AGENT=$!
echo "$AGENT $(sed -E 's/^.*\) //' /proc/$AGENT/stat | cut -d' ' -f20)" > "$STATE/agent.pid"
wait "$AGENT"
RC=$?
log "agent exited $RC"
# After the first job on a lock hash: the venv this node built goes to the store, so later nodes unpack it.
[ -n "$BUILT_VENV" ] && [ -n "$LAUNCHER_VENV_PUT_URL" ] && "${VENV_SETUP[@]}" push "${LOCKS[@]}" --state "$STATE" \
  2>> "$STATE/setup.log"
teardown "$RC"
exit "$RC"
"""


# The bootstrap writes it into code/<sha>/ after a whole unpack; a client that finds it uploads nothing.
UNPACKED_STAMP = ".launcher-unpacked"
# What a client that places the snapshot itself (ssh, slurm) checks before it uploads; the plan shows it.
UPLOAD_WHEN = "no verified copy there (code/<sha>/ unpacked whole, or this tarball with this sha256)"


def snapshot_present(size_of, sha256_of, sha: str, size: int) -> bool:
    """Whether the node needs no upload of snapshot `sha`: the bootstrap stamped its unpacked folder (one stat), or
    the tarball is there with the right size and sha256 (a same-size corrupt copy is uploaded again: the bootstrap
    would refuse it). `size_of(rel)` is a file's size or None; `sha256_of(rel)` its hex digest or None (paths
    relative to the node's base dir)."""
    if size_of(f"code/{sha}/{UNPACKED_STAMP}") is not None:
        return True
    tar = f"code/{sha}.tar.gz"
    return size_of(tar) == size and sha256_of(tar) == sha


def _network(spec: AgentSpec) -> str:
    """Shell lines exporting the job's proxy settings and writing its CA bundle (nothing when it has neither).
    The CA reaches the snapshot fetch and the result PUT through CA_ENV only: those talk to the store's endpoint,
    whereas pip's index keeps the system's trust."""
    q, out = shlex.quote, []
    if spec.https_proxy:
        out.append("export " + " ".join(f"{n}={q(spec.https_proxy)}"
                                         for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")))
    if spec.no_proxy:
        out.append(f"export NO_PROXY={q(spec.no_proxy)} no_proxy={q(spec.no_proxy)}")
    if spec.ca_bundle:
        pem = spec.ca_bundle if spec.ca_bundle.endswith("\n") else spec.ca_bundle + "\n"
        out += [f"cat > \"$STATE/ca-bundle.pem\" <<'LAUNCHER_CA_EOF'\n{pem}LAUNCHER_CA_EOF",
                'export AWS_CA_BUNDLE="$PWD/$STATE/ca-bundle.pem"',
                'CA_ENV=(SSL_CERT_FILE="$AWS_CA_BUNDLE" CURL_CA_BUNDLE="$AWS_CA_BUNDLE")']
    return "".join(f"{line}\n" for line in out)  # its own lines, then the template's blank line


def _docker_env(spec: AgentSpec) -> list[str]:
    """What the agent's container takes from the bootstrap's environment (by name: `docker run -e NAME`): where the
    agent is, the job's network and its secrets."""
    names = ["PYTHONPATH"]
    if spec.https_proxy:
        names += ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
    if spec.no_proxy:
        names += ["NO_PROXY", "no_proxy"]
    if spec.ca_bundle:
        names.append("AWS_CA_BUNDLE")
    return names + list(spec.secrets)


def render(spec: AgentSpec, *, base: str, snapshot_sha: str, snapshot_tar: str = "", snapshot_url: str = "",
           python: str = "", teardown: str = "poweroff", keep_on_failure: bool = False, result_url: str = "",
           secrets_ssm: str = "", ssm_region: str = "", hostkey_ssm: str = "", hostkey_pub: str = "",
           lock_hash: str = "", image: str = "", docker_gpus: bool = False, uv_sha: str = "", uv_url: str = "",
           venv_pack: str = "", venv_get_url: str = "", venv_put_url: str = "") -> str:
    """`base` is a shell word (it may use $HOME); everything else is quoted. teardown: poweroff | none.
    `secrets_ssm`: an SSM Parameter Store path whose SecureStrings become the job's secret env vars (EC2);
    `hostkey_ssm`/`hostkey_pub`: the SSH host key sshd is restarted with (EC2 with a key pair).
    `lock_hash`: the base lock's hash (launcher.nodesetup.lock_hash): an interpreter checked once for it is not
    checked again. `image`: run the agent in this image with `docker run` (`docker_gpus`: `--gpus all`).
    `uv_sha`/`uv_url`: the uv wheel offered (at tools/uv-<sha>.whl on the node, or fetched from the URL);
    `venv_pack`/`venv_get_url`/`venv_put_url`: the store's packed venv `<lock hash>-<platform>` (launcher/nodesetup.py)."""
    if teardown not in ("poweroff", "none"):
        raise ValueError(f"teardown must be poweroff or none, not {teardown!r}")
    if python and image:
        raise ValueError("python and image: one or the other")
    q = shlex.quote
    values = {
        "JOB_ID": spec.job_id, "JOB_ID_Q": q(spec.job_id), "BASE": base, "PYTHON": q(python), "SHA": q(snapshot_sha),
        "TAR": q(snapshot_tar), "URL": q(snapshot_url), "RESULT_URL": q(result_url),
        # botocore: an s3 store on a node without keys in its environment signs with the instance role's.
        "DEPS": "pydantic, yaml" + (", botocore" if (spec.store_url or "").startswith("s3://") else ""),
        "DEADMAN_AT": str(int(spec.deadman_at) if spec.deadman_at else 4102444800),  # no deadline: 2100-01-01
        "TEARDOWN": teardown, "KEEP": "1" if keep_on_failure else "0", "LOCK": q(LOCK), "PYVER": PYTHON_VERSION, "SPEC_JSON": spec.to_json(),
        "SECRETS_SSM": q(secrets_ssm), "SSM_REGION": q(ssm_region), "HOSTKEY_SSM": q(hostkey_ssm),
        "HOSTKEY_PUB": q(hostkey_pub), "NETWORK": _network(spec), "LOCK_HASH": q(lock_hash), "IMAGE": q(image),
        "DOCKER_GPUS": q("--gpus all" if image and docker_gpus else ""),
        "DOCKER_ENV": q(" ".join(f"-e {n}" for n in _docker_env(spec)) if image else ""),
        "UV_SHA": q(uv_sha), "UV_URL": q(uv_url), "VENV_PACK": q(venv_pack), "VENV_GET_URL": q(venv_get_url),
        "VENV_PUT_URL": q(venv_put_url),
    }
    # @@NAME@@ placeholders: the script is full of shell and Python braces that str.format would trip on.
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values[m[1]], TEMPLATE)
