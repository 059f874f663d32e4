"""Our stdlib SigV4 signer gives byte-for-byte the signature botocore's S3SigV4Auth gives (moto does not
check signatures, so this is what keeps real S3 happy)."""
from __future__ import annotations

import datetime

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from launcher.datapool.s3http import _q
from launcher.datapool.sigv4 import EMPTY_SHA256, sign


@pytest.mark.parametrize("method,key,query,headers,token", [
    ("GET", "", {"list-type": "2", "prefix": "pool/exp a/ü", "encoding-type": "url",
                 "continuation-token": "a+b/c="}, {}, None),
    ("PUT", "pool/ünï cødé/x+y=z&(1).bin", None,
     {"x-amz-meta-sha256": "ab" * 32, "Content-Type": "application/octet-stream"}, "tok/en+=="),
    ("POST", "pool/big.bin", {"uploads": None}, {"x-amz-checksum-algorithm": "SHA256"}, None),
    ("PUT", "pool/big.bin", {"partNumber": 3, "uploadId": "abc~def_ghi-j.k"}, {}, None),
    ("POST", "", {"delete": None}, {"Content-MD5": "q83vEjRWeJA=", "Content-Type": "application/xml"}, None),
])
def test_signature_matches_botocore(method, key, query, headers, token):
    now = datetime.datetime(2026, 11, 24, 21, 0, 0, tzinfo=datetime.timezone.utc)
    host, region = "127.0.0.1:5000", "eu-west-3"
    path = "/bucket" + ("/" + _q(key, safe="/-_.~") if key else "/")
    payload = EMPTY_SHA256 if method != "PUT" else "cd" * 32
    ours = sign(method, host, path, query, headers, payload, "AKID", "SECRET", token, region, now=now)

    url = f"http://{host}{path}"
    if query:
        url += "?" + "&".join(f"{_q(str(k))}={_q(str(v))}" if v is not None else _q(str(k))
                              for k, v in sorted(query.items()))
    req = AWSRequest(method=method, url=url, data=b"", headers=dict(headers))
    req.headers["X-Amz-Content-SHA256"] = payload
    req.headers["X-Amz-Date"] = now.strftime("%Y%m%dT%H%M%SZ")
    if token:
        req.headers["X-Amz-Security-Token"] = token
    req.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(Credentials("AKID", "SECRET", token), "s3", region)
    canonical = auth.canonical_request(req)
    sig = auth.signature(auth.string_to_sign(req, canonical), req)
    assert ours["Authorization"].endswith(f"Signature={sig}")
    assert ours["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential=AKID/20261124/{region}/s3/aws4_request")
