"""Request signing between the relay's workers, its commander and `launch relay` commands.

Every request carries four headers:

    X-Relay-Timestamp  epoch seconds when it was signed
    X-Relay-Nonce      32 random hex characters, never used twice
    X-Relay-Body       sha256 of the body (hex)
    X-Relay-Signature  HMAC-SHA256(secret, METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n BODY-SHA256), hex

The commander refuses (401) a wrong signature, a body whose hash differs from the signed one, a timestamp more
than MAX_SKEW_S off its clock, and a nonce it has seen (nonces are kept in its durable state for longer than
MAX_SKEW_S, so a replay after a restart is refused too). Stdlib only: the agent on a node imports this.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import time
from pathlib import Path

from ..errors import UserError

MAX_SKEW_S = 300
# Kept in the commander's state past MAX_SKEW_S: an older request is refused by its timestamp anyway.
NONCE_TTL_S = 2 * MAX_SKEW_S
SECRET_ENV = "RELAY_SHARED_SECRET"
HEADERS = ("X-Relay-Timestamp", "X-Relay-Nonce", "X-Relay-Body", "X-Relay-Signature")


def _message(method: str, path: str, timestamp: str, nonce: str, body_sha: str) -> bytes:
    return "\n".join((method.upper(), path, timestamp, nonce, body_sha)).encode()


def sign(secret: str, method: str, path: str, body: bytes = b"", *, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate one request (`path` with its query string, as sent)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    body_sha = hashlib.sha256(body).hexdigest()
    mac = hmac.new(secret.encode(), _message(method, path, timestamp, nonce, body_sha), hashlib.sha256).hexdigest()
    return dict(zip(HEADERS, (timestamp, nonce, body_sha, mac)))


def check(secret: str, method: str, path: str, headers, body: bytes, *, now: float | None = None) -> tuple[str | None, str]:
    """(why it is refused, or None; the nonce). The caller still has to check the nonce was never seen."""
    timestamp, nonce, body_sha, mac = (headers.get(h, "") for h in HEADERS)
    if not (timestamp and nonce and body_sha and mac):
        return "unsigned request", nonce
    if not all(v.isascii() for v in (timestamp, nonce, body_sha, mac)):
        return "malformed signature headers (not ASCII)", nonce  # compare_digest refuses non-ASCII str: no 500
    expected = hmac.new(secret.encode(), _message(method, path, timestamp, nonce, body_sha), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        return "bad signature (wrong shared secret?)", nonce
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), body_sha):
        return "body changed after signing", nonce
    try:
        skew = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return "bad timestamp", nonce
    if skew > MAX_SKEW_S:
        return f"timestamp {skew:.0f} s off the commander's clock (at most {MAX_SKEW_S} s)", nonce
    return None, nonce


def load_secret(*, file: str | Path | None = None, value: str | None = None, env_name: str = SECRET_ENV,
                warn=None) -> str:
    """The shared secret from a file (recommended), an inline value (accepted, with a warning), or the environment.
    A missing or empty one is a UserError: the commander never runs unauthenticated."""
    if file is not None:
        path = Path(file).expanduser()
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read the shared secret file {path}: {exc.strerror}; give a readable file "
                            "(e.g. made with: openssl rand -hex 32 > relay.secret && chmod 600 relay.secret)") from None
        where = f"file {path}"
    elif value is not None:
        (warn or _warn)("the shared secret on the command line is visible to every user of this machine (ps); "
                        f"prefer --shared-secret-file FILE or ${env_name}")
        secret, where = value.strip(), "--shared-secret"
    else:
        secret, where = os.environ.get(env_name, "").strip(), f"${env_name}"
    if not secret:
        raise UserError(f"no relay shared secret: {where} is empty; set ${env_name} or pass --shared-secret-file "
                        "FILE (both sides need the same one)")
    return secret


def _warn(message: str) -> None:
    sys.stderr.write(f"[launcher] warning: {message}\n")
