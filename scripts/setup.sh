#!/usr/bin/env bash
# Installs everything launcher and its test suite need on a fresh machine (Debian/Ubuntu + Python >= 3.11):
# openssh-server from apt (the SSH tests run a private sshd) and the package with all extras into .venv.
# Safe to re-run: it installs only what is missing. LAUNCHER_VENV=DIR puts the venv elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LAUNCHER_VENV:-.venv}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: launcher needs Python >= 3.11 (found $("$PY" --version)); set PYTHON=python3.11" >&2; exit 2; }

if [ ! -x /usr/sbin/sshd ] && ! command -v sshd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server >/dev/null
fi

# --system-site-packages: packages the machine already has at the pinned versions are reused instead of copied
# (torch alone is ~1 GB); anything missing or at another version is installed into the venv.
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
# torch is pinned to the CPU build (2.13.0) in constraints.txt: a plain `torch` would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -c constraints.txt -e ".[dev]" 2> >(grep -v "^WARNING: Location" >&2)
