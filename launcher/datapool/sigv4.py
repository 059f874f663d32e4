"""AWS Signature Version 4 for S3, in stdlib (hmac + hashlib).

The hot path of a CLI sync (credentials in the environment) then never imports botocore; a test checks
every signature against botocore's own S3SigV4Auth.
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED_HEADERS = {"expect", "user-agent", "x-amzn-trace-id", "authorization"}


def uri_encode(s: str, safe: str = "-_.~") -> str:
    return quote(s, safe=safe)


def canonical_query(query: dict | None) -> str:
    if not query:
        return ""
    items = sorted((uri_encode(str(k)), uri_encode("" if v is None else str(v))) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in items)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(method: str, host: str, path: str, query: dict | None, headers: dict, payload_sha256: str,
         access_key: str, secret_key: str, token: str | None, region: str, now: datetime | None = None) -> dict:
    """Returns the headers to send: the given ones plus host-independent x-amz-date, x-amz-content-sha256,
    x-amz-security-token and Authorization. `path` is already URI-encoded (S3 does not double-encode)."""
    now = now or datetime.now(timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = amz_date[:8]
    out = dict(headers)
    out["X-Amz-Date"] = amz_date
    out["X-Amz-Content-SHA256"] = payload_sha256
    if token:
        out["X-Amz-Security-Token"] = token
    signed = {"host": host}
    for k, v in out.items():
        lk = k.lower()
        if lk not in _UNSIGNED_HEADERS:
            signed[lk] = " ".join(str(v).split())
    names = sorted(signed)
    canonical = "\n".join([
        method,
        path,
        canonical_query(query),
        "".join(f"{n}:{signed[n]}\n" for n in names),
        ";".join(names),
        payload_sha256,
    ])
    scope = f"{datestamp}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), datestamp), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out
