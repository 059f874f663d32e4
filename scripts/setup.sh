#!/usr/bin/env bash
# Installs everything launcher and its test suite need on a fresh machine (Debian/Ubuntu + Python >= 3.11):
# openssh-server from apt (the SSH tests run a private sshd) and the package with all extras from pip.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x /usr/sbin/sshd ] && ! command -v sshd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server >/dev/null
fi

# torch is pinned to the CPU build (2.13.0) in constraints.txt: a plain `torch` would pull a multi-GB CUDA build.
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -c constraints.txt -e ".[dev]"
