"""A lean S3 transport: SigV4 in stdlib (sigv4.py), credentials from the environment or, failing that, from
botocore (profiles, SSO, instance roles); requests go over keep-alive http.client connections, one per
thread, and responses are parsed with ElementTree.

Why not a boto3 client: building one loads the whole S3 service model (~0.5 s per CLI run) and each call
costs ~1 ms of Python; a no-op sync is one LIST, so start-up and per-request overhead is most of its time.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from urllib.parse import quote, unquote, urlsplit

from .. import netpolicy
from .errors import DatapoolUserError
from .sigv4 import EMPTY_SHA256, sign

_RETRY_STATUS = {500, 502, 503, 504}


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, headers=None):
        super().__init__(f"{code or status}: {message}" if message else f"{code or status}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _q(s: str, safe: str = "-_.~") -> str:
    return quote(s, safe=safe)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class S3Http:
    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None, profile: str | None = None,
                 timeout: float | None = None):
        env = os.environ
        self._static = None
        self._creds = None
        if not profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            # Same precedence as botocore (environment first), without importing it.
            self._static = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None)
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if self._static is None or region is None:
            region = self._from_botocore(profile, region)
        self.region = region or "us-east-1"
        endpoint_url = (endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None)
        self.custom_endpoint = endpoint_url
        self.timeout = netpolicy.seconds(netpolicy.S3_REQUEST_S) if timeout is None else timeout
        # An absolute time (time.time()) after which no request starts and none waits longer: the agent's final
        # push sets it to its push deadline, so a store that swallows requests cannot hold it past the deadline.
        self.deadline: float | None = None
        self._tls = threading.local()
        # The network between here and the store: HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case, as curl and
        # botocore read them) and AWS_CA_BUNDLE, read once per client.
        self._proxies = _proxies_from_env(env)
        self.ca_bundle = env.get("AWS_CA_BUNDLE") or None
        self._ssl: ssl.SSLContext | None = None

    def _from_botocore(self, profile: str | None, region: str | None) -> str | None:
        """Credentials (profiles, SSO, roles) and the profile's region, through botocore's own chain."""
        try:
            import botocore.exceptions
            import botocore.session
        except ImportError:
            if self._static is None:
                raise DatapoolUserError("no AWS credentials in the environment and botocore is not installed: set "
                                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pip install 'launcher[aws]' "
                                        "for profiles and roles") from None
            return region
        try:
            session = botocore.session.Session(profile=profile)
            if self._static is None:
                self._creds = session.get_credentials()
            region = region or session.get_config_variable("region")
        except botocore.exceptions.ProfileNotFound as exc:
            raise DatapoolUserError(f"{exc}: fix --profile / AWS_PROFILE") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise DatapoolUserError(f"cannot load AWS credentials: {exc}") from None
        if self._static is None and self._creds is None:
            raise DatapoolUserError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        return region

    def _credentials(self) -> tuple[str, str, str | None]:
        if self._static is not None:
            return self._static
        c = self._creds.get_frozen_credentials()  # refreshes role / SSO credentials when they expire
        return c.access_key, c.secret_key, c.token

    # --- addressing
    def _base(self, bucket: str) -> tuple[str, str, str]:
        """(scheme, host[:port], path prefix) for a bucket: path style on custom endpoints, virtual hosts on AWS."""
        if self.custom_endpoint:
            u = urlsplit(self.custom_endpoint)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise DatapoolUserError(f"bad endpoint URL '{self.custom_endpoint}': use http(s)://host[:port]")
            return u.scheme, u.netloc, f"{u.path.rstrip('/')}/{bucket}"
        if "." in bucket:  # TLS wildcard certs do not cover dotted bucket names
            return "https", f"s3.{self.region}.amazonaws.com", f"/{bucket}"
        return "https", f"{bucket}.s3.{self.region}.amazonaws.com", ""

    def proxy_for(self, scheme: str, host: str) -> str | None:
        """The proxy URL a request to scheme://host[:port] goes through, or None (no proxy, or NO_PROXY names the
        host: `*`, a host, a domain suffix, host:port, as urllib and curl match them)."""
        proxy = self._proxies.get(scheme)
        if not proxy:
            return None
        from urllib.request import proxy_bypass_environment

        if proxy_bypass_environment(host, self._proxies):
            return None
        return proxy if "://" in proxy else "http://" + proxy

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                self._ssl = ssl.create_default_context(cafile=self.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise DatapoolUserError(f"AWS_CA_BUNDLE={self.ca_bundle}: not a readable PEM bundle "
                                        f"({getattr(exc, 'strerror', None) or exc})") from None
        return self._ssl

    def _new_conn(self, scheme: str, host: str, timeout: float):
        """A connection to host, through the proxy when there is one: a CONNECT tunnel for https (TLS end to end,
        verified against AWS_CA_BUNDLE), absolute-URI requests to the proxy for http."""
        proxy = self.proxy_for(scheme, host)
        ctx = self._context() if scheme == "https" else None
        if proxy is None:
            if ctx is not None:
                return http.client.HTTPSConnection(host, timeout=timeout, context=ctx)
            return http.client.HTTPConnection(host, timeout=timeout)
        p = urlsplit(proxy)
        auth = {}
        if p.username:
            cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
            auth["Proxy-Authorization"] = "Basic " + base64.b64encode(cred).decode()
        where = f"{p.hostname}:{p.port or (443 if p.scheme == 'https' else 80)}"
        if scheme == "https":
            conn = http.client.HTTPSConnection(where, timeout=timeout, context=ctx)
            conn.set_tunnel(host, headers=auth or None)
        else:
            conn = http.client.HTTPConnection(where, timeout=timeout)
            conn.launcher_absolute = f"http://{host}"  # the proxy forwards requests that name their target
        conn.launcher_proxy = auth
        return conn

    def _conn(self, scheme: str, host: str):
        conns = getattr(self._tls, "conns", None)
        if conns is None:
            conns = self._tls.conns = {}
        conn = conns.get((scheme, host))
        timeout = self._timeout()
        if conn is None:
            conn = conns[(scheme, host)] = self._new_conn(scheme, host, timeout)
        elif conn.timeout != timeout:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        return conn

    def _timeout(self) -> float:
        """One request's timeout: the policy's, or what is left before the deadline if that is less."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.time()
        if left <= 0:
            raise TimeoutError("the push deadline passed")
        return min(self.timeout, max(left, 0.5))

    def _sleep(self, attempt: int) -> bool:
        """Wait before the next try (the policy's backoff); False when no try is left before the deadline."""
        wait = netpolicy.backoff(attempt, netpolicy.S3_BACKOFF)
        if self.deadline is not None and time.time() + wait >= self.deadline:
            return False
        time.sleep(wait)
        return True

    def _drop(self, scheme: str, host: str) -> None:
        conn = getattr(self._tls, "conns", {}).pop((scheme, host), None)
        if conn is not None:
            conn.close()

    # --- one request
    def request(self, method: str, bucket: str, key: str = "", query: dict | None = None, headers: dict | None = None,
                body: bytes = b"", payload_sha256: str | None = None, stream: bool = False):
        """Returns (status, headers, body bytes); bodies are bounded (ranged GETs for big objects). `stream`: a
        success's body is not read here: the third item is a `Body` to read in pieces and close (its connection
        leaves the pool, so a body left half read never meets the next request).
        Retries connection errors and 5xx with backoff (netpolicy: S3_ATTEMPTS tries, S3_BACKOFF between them);
        raises S3Error for S3's own errors."""
        attempts = netpolicy.S3_ATTEMPTS
        for attempt in range(attempts):
            scheme, host, base = self._base(bucket)
            path = base + ("/" + _q(key, safe="/-_.~") if key else "/")
            if payload_sha256 is None:
                payload_sha256 = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
            ak, sk, token = self._credentials()
            sent = sign(method, _host_header(scheme, host), path, query, headers or {}, payload_sha256, ak, sk, token,
                        self.region)
            if query:  # on the wire a bare flag stays bare (`?uploads`); the signature spells it `uploads=`
                path += "?" + "&".join(_q(str(k)) if v is None else f"{_q(str(k))}={_q(str(v))}"
                                       for k, v in sorted(query.items()))
            conn = self._conn(scheme, host)
            absolute = getattr(conn, "launcher_absolute", None)
            if absolute:  # plain http through a proxy: the target in the request line, proxy auth alongside
                sent = {**sent, **conn.launcher_proxy}
            try:
                conn.request(method, (absolute or "") + path, body=body, headers=sent)
                resp = conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                self._drop(scheme, host)  # the same certificate will fail the same way: no retry
                raise DatapoolUserError(
                    f"TLS: the certificate of {host} is not trusted ({exc.verify_message}): "
                    + (f"AWS_CA_BUNDLE={self.ca_bundle} does not hold its CA" if self.ca_bundle
                       else "set AWS_CA_BUNDLE to the CA bundle that signed it")) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(scheme, host)  # a stale keep-alive socket or a real failure: new connection
                if attempt < attempts - 1 and self._sleep(attempt):
                    continue
                proxy = self.proxy_for(scheme, host)
                if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
                    if proxy:
                        raise DatapoolUserError(f"cannot reach the S3 endpoint {self.custom_endpoint or host} "
                                                f"through the proxy {_redact(proxy)}: check HTTPS_PROXY / "
                                                "HTTP_PROXY / NO_PROXY") from None
                    raise DatapoolUserError(f"cannot reach the S3 endpoint {self.custom_endpoint or host}: "
                                            "check --endpoint-url / AWS_ENDPOINT_URL") from None
                if proxy and isinstance(exc, OSError) and "Tunnel connection failed" in str(exc):
                    raise DatapoolUserError(f"the proxy {_redact(proxy)} refused to reach {host}: {exc}") from None
                raise
            status = resp.status
            if stream and status < 300:
                getattr(self._tls, "conns", {}).pop((scheme, host), None)
                return status, resp.headers, Body(resp, conn)
            try:
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self._drop(scheme, host)
                if attempt < attempts - 1 and self._sleep(attempt):
                    continue
                raise
            if status < 300:
                return status, resp.headers, data
            err = _parse_error(status, data, resp.headers)
            moved = resp.headers.get("x-amz-bucket-region")
            if moved and moved != self.region and status in (301, 400, 403) and attempt < attempts - 1:
                self.region = moved  # the bucket lives elsewhere: follow it once, sign for its region
                continue
            if (status in _RETRY_STATUS or err.code in ("SlowDown", "InternalError", "RequestTimeout")) \
                    and attempt < attempts - 1 and self._sleep(attempt):
                continue
            raise err
        raise RuntimeError("unreachable")

    # --- operations
    def list_objects(self, bucket: str, prefix: str):
        """Yields (key, size, etag, last_modified_epoch) for every object under prefix, 1,000 a page."""
        token = None
        while True:
            q = {"list-type": "2", "encoding-type": "url"}
            if prefix:
                q["prefix"] = prefix
            if token:
                q["continuation-token"] = token
            _, _, data = self.request("GET", bucket, query=q)
            root = ET.fromstring(data)
            token, truncated = None, False
            for child in root:
                tag = _local(child.tag)
                if tag == "Contents":
                    f = {_local(c.tag): c.text for c in child}
                    yield (unquote(f.get("Key") or ""), int(f.get("Size") or 0), (f.get("ETag") or "").strip('"'),
                           _iso_epoch(f.get("LastModified")))
                elif tag == "NextContinuationToken":
                    token = child.text
                elif tag == "IsTruncated":
                    truncated = (child.text or "").lower() == "true"
            if not truncated or not token:
                return

    def get_object(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None,
                   if_match: str | None = None):
        headers = {}
        if byte_range:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        _, h, data = self.request("GET", bucket, key, headers=headers)
        return h, data

    def put_object(self, bucket: str, key: str, body: bytes, headers: dict, sha256_hex: str | None = None) -> dict:
        _, h, _ = self.request("PUT", bucket, key, headers=headers, body=body, payload_sha256=sha256_hex)
        return h

    def delete_objects(self, bucket: str, keys: list[str]) -> list[tuple[str, str]]:
        from xml.sax.saxutils import escape

        xml = ("<Delete><Quiet>true</Quiet>" + "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
               + "</Delete>").encode()
        md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
        _, _, data = self.request("POST", bucket, query={"delete": None}, body=xml,
                                  headers={"Content-MD5": md5, "Content-Type": "application/xml"})
        errors = []
        for child in ET.fromstring(data) if data.strip() else []:
            if _local(child.tag) == "Error":
                f = {_local(c.tag): c.text for c in child}
                errors.append((f.get("Key") or "", f.get("Message") or f.get("Code") or ""))
        return errors

    def create_multipart(self, bucket: str, key: str, headers: dict) -> str:
        _, _, data = self.request("POST", bucket, key, query={"uploads": None}, headers=headers)
        for el in ET.fromstring(data).iter():
            if _local(el.tag) == "UploadId":
                return el.text
        raise S3Error(500, "NoUploadId", "CreateMultipartUpload returned no UploadId")

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: bytes, headers: dict,
                    sha256_hex: str | None = None) -> dict:
        _, h, _ = self.request("PUT", bucket, key, query={"partNumber": number, "uploadId": upload_id},
                               headers=headers, body=body, payload_sha256=sha256_hex)
        return h

    def upload_part_copy(self, bucket: str, key: str, upload_id: str, number: int, source_key: str, first: int,
                         last: int) -> str:
        """Part `number` copied by the store from bytes first..last (inclusive) of `source_key` in the same bucket;
        returns the part's ETag (the MD5 of those bytes)."""
        headers = {"x-amz-copy-source": "/" + _q(bucket) + "/" + _q(source_key, safe="/-_.~"),
                   "x-amz-copy-source-range": f"bytes={first}-{last}"}
        _, _, data = self.request("PUT", bucket, key, query={"partNumber": number, "uploadId": upload_id},
                                  headers=headers)
        return _etag_in(data, "UploadPartCopy")

    def complete_multipart(self, bucket: str, key: str, upload_id: str, parts: list[dict]) -> str:
        items = []
        for p in parts:
            extra = f"<ChecksumSHA256>{p['ChecksumSHA256']}</ChecksumSHA256>" if p.get("ChecksumSHA256") else ""
            items.append(f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{p['ETag']}</ETag>{extra}</Part>")
        xml = ("<CompleteMultipartUpload>" + "".join(items) + "</CompleteMultipartUpload>").encode()
        _, _, data = self.request("POST", bucket, key, query={"uploadId": upload_id}, body=xml,
                                  headers={"Content-Type": "application/xml"})
        return _etag_in(data, "CompleteMultipartUpload")

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.request("DELETE", bucket, key, query={"uploadId": upload_id})

    def close(self) -> None:
        for conn in getattr(self._tls, "conns", {}).values():
            conn.close()


class Body:
    """A response body read in pieces (`launch logs -f` on a 1 GB log: one GET, never all of it in memory)."""

    def __init__(self, resp, conn):
        self._resp, self._conn = resp, conn

    def read(self, n: int) -> bytes:
        return self._resp.read(n)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


def _etag_in(data: bytes, call: str) -> str:
    """The ETag of a CompleteMultipartUpload or UploadPartCopy answer; S3 can report a failure of either inside a
    200, as an Error document."""
    root = ET.fromstring(data)
    if _local(root.tag) == "Error":
        f = {_local(c.tag): c.text for c in root}
        raise S3Error(200, f.get("Code") or "", f.get("Message") or "")
    for el in root.iter():
        if _local(el.tag) == "ETag":
            return (el.text or "").strip('"')
    raise S3Error(500, "NoETag", f"{call} returned no ETag")


def _proxies_from_env(env) -> dict[str, str]:
    """{"http"|"https"|"no": value} from HTTP(S)_PROXY / NO_PROXY in either case, as urllib reads them; urllib's
    module (a few ms of imports) is loaded only when a proxy is set at all."""
    if not any(k.lower() in ("http_proxy", "https_proxy") for k in env):
        return {}
    from urllib.request import getproxies_environment

    return {k: v for k, v in getproxies_environment().items() if k in ("http", "https", "no")}


def _redact(url: str) -> str:
    """A proxy URL fit for a message: no password."""
    p = urlsplit(url)
    return url.replace(f"{p.username}:{p.password}@", f"{p.username}:***@") if p.password else url


def _host_header(scheme: str, host: str) -> str:
    """The Host value http.client sends (and S3 signs): the port only when it is not the default."""
    if scheme == "https" and host.endswith(":443"):
        return host[:-4]
    if scheme == "http" and host.endswith(":80"):
        return host[:-3]
    return host


def _parse_error(status: int, data: bytes, headers) -> S3Error:
    code, message = "", ""
    try:
        root = ET.fromstring(data) if data.strip() else None
        if root is not None:
            f = {_local(c.tag): c.text for c in root}
            code, message = f.get("Code") or "", f.get("Message") or ""
    except ET.ParseError:
        message = data[:200].decode("utf-8", "replace")
    if not code:
        code = {301: "PermanentRedirect", 403: "AccessDenied", 404: "NotFound"}.get(status, str(status))
    return S3Error(status, code, message, headers)


def _iso_epoch(text: str | None) -> float:
    if not text:
        return 0.0
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
