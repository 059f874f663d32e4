#!/usr/bin/env bash
# Installs everything launcher and its test suite need on a fresh machine (Debian/Ubuntu + Python >= 3.11):
# openssh-server, slurm-wlm and munge from apt (the SSH tests run a private sshd, the Slurm tests a private two-node
# cluster: tests/slurm/cluster.py) and the package with all extras into .venv.
# Safe to re-run: with nothing changed it is a no-op (delete .venv/.setup-stamp to force a full pass).
# LAUNCHER_VENV=DIR puts the venv elsewhere; PYTHON=python3.X picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LAUNCHER_VENV:-.venv}
STAMP="$VENV/.setup-stamp"

# pip takes ~20 s to decide there is nothing to do; the stamp turns an unchanged re-run into a hash of three files.
# Keyed by what decides the install (pyproject, constraints, this script) plus the interpreter asked for.
key=$(cat pyproject.toml constraints.txt scripts/setup.sh <(echo "$PY") | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] \
   && { [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; } \
   && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; then
  exit 0
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: launcher needs Python >= 3.11 (found $("$PY" --version)); set PYTHON=python3.11" >&2; exit 2; }

# apt's and debconf's chatter (progress, "delaying package configuration") is shown only if apt fails.
quiet() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; echo "error: '$*' failed (output above)" >&2; exit 1; fi
  rm -f "$log"
}
apt_pkgs=()
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || apt_pkgs+=(openssh-server)
# slurm-wlm brings slurmctld, slurmd and the client commands; the tests start them by absolute path under /usr/sbin.
{ [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ]; } || apt_pkgs+=(slurm-wlm)
[ -x /usr/sbin/munged ] || apt_pkgs+=(munge)
# Debian/Ubuntu split venv support (ensurepip) out of python3; without it `-m venv` fails half-way.
[ -x "$VENV/bin/python" ] || "$PY" -c 'import ensurepip' 2>/dev/null || apt_pkgs+=(python3-venv)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup: apt-get install ${apt_pkgs[*]}" >&2
  # `env` inside sudo: sudo drops the caller's environment, so a DEBIAN_FRONTEND before it would not arrive.
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"
fi

# --system-site-packages: packages the machine already has at the pinned versions are reused instead of copied
# (torch alone is ~1 GB); anything missing or at another version is installed into the venv.
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
rm -f "$STAMP"
# torch is pinned to the CPU build (2.13.0) in constraints.txt: a plain `torch` would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -c constraints.txt -e ".[dev]" 2> >(grep -v "^WARNING: Location" >&2)
echo "$key" > "$STAMP"
