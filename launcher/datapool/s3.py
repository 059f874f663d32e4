"""An S3 prefix as a store: `s3://bucket/prefix`, plain layout (`prefix/<relative path>`).

Objects we write carry their sha256 (user metadata `sha256` and S3's own ChecksumSHA256), and their ETag is
checked against the md5 we computed, so an upload is verified by the server's own view of the bytes. boto3 is
imported here only, when a store is opened.
"""
from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import Entry, Store
from .errors import DatapoolUserError, IntegrityError, SyncError
from .hashing import (DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, MiB, StreamHasher, candidate_part_sizes,
                      etag_with_part_size, hash_file, multipart_etag, parts_of)

_GET_BUF = 1 * MiB
META_SHA = "sha256"


def _b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, workers: int = 16, threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                 part_size: int = DEFAULT_PART_SIZE):
        if not bucket:
            raise DatapoolUserError("S3 URL has no bucket: use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url
        self.region, self.profile = region, profile
        self.workers = workers
        self.threshold, self.part_size = threshold, part_size
        self._client = None
        self._parts: ThreadPoolExecutor | None = None

    # --- connection
    @property
    def client(self):
        if self._client is None:
            import boto3
            import botocore.config
            import botocore.exceptions

            try:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            except botocore.exceptions.ProfileNotFound as exc:
                raise DatapoolUserError(f"{exc}: fix --profile / AWS_PROFILE") from None
            if session.get_credentials() is None:
                raise DatapoolUserError(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
            config = botocore.config.Config(
                max_pool_connections=self.workers * 2,
                retries={"max_attempts": 5, "mode": "standard"},
                # We send our own sha256 and verify ETags; skip botocore's extra CRC32 pass over every body.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=10, read_timeout=120,
            )
            # endpoint: argument, else botocore reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself.
            self._client = session.client("s3", endpoint_url=self.endpoint_url or None, config=config,
                                          region_name=self.region or session.region_name or "us-east-1")
        return self._client

    @property
    def parts(self) -> ThreadPoolExecutor:
        """Parts of big files run on their own pool: a file worker waiting on parts never starves it."""
        if self._parts is None:
            self._parts = ThreadPoolExecutor(max(4, self.workers // 2), thread_name_prefix="s3part")
        return self._parts

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _user_error(self, exc) -> Exception:
        """Turn what the user can fix into one line; anything else stays a SyncError."""
        import botocore.exceptions as bx

        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if isinstance(exc, bx.NoCredentialsError):
            return DatapoolUserError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if isinstance(exc, bx.EndpointConnectionError):
            return DatapoolUserError(f"cannot reach the S3 endpoint{where}: check --endpoint-url / AWS_ENDPOINT_URL")
        if isinstance(exc, bx.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return DatapoolUserError(f"bucket '{self.bucket}' does not exist{where}: create it or fix --datapool")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
                return DatapoolUserError(f"access to s3://{self.bucket} denied ({code}): check your AWS credentials")
        return SyncError(f"{self.url}: {exc}")

    # --- listing
    def list(self, pool=None, settle_seconds: float = 0.0, want=None) -> dict[str, Entry]:
        """One paginated LIST: size and ETag of every object; no object is read."""
        import botocore.exceptions as bx

        out: dict[str, Entry] = {}
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, **({"Prefix": self.prefix + "/"} if self.prefix else {}))
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    rel = key[strip:]
                    if not rel or rel.endswith("/"):
                        continue  # "directory" markers some tools create
                    if not _safe_rel(rel):
                        continue
                    if want is not None and not want(rel):
                        continue
                    out[rel] = Entry(rel, obj["Size"], obj["LastModified"].timestamp(), None,
                                     obj["ETag"].strip('"'))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._user_error(exc) from None
        return out

    # --- upload
    def put_file(self, src: Path, rel: str, entry: Entry) -> Entry:
        size = os.path.getsize(src)
        if size > self.threshold:
            return self._put_multipart(src, rel, entry, size)
        with open(src, "rb") as f:
            body = f.read()
        sha = hashlib.sha256(body).hexdigest()
        md5 = hashlib.md5(body).hexdigest()
        resp = self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=body,
                                      ChecksumSHA256=_b64(sha), Metadata={META_SHA: sha})
        if not _put_verified(resp, md5, sha):  # the store's view of what it kept is not ours: resend once
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=body,
                                          ChecksumSHA256=_b64(sha), Metadata={META_SHA: sha})
            if not _put_verified(resp, md5, sha):
                raise IntegrityError(f"{rel}: upload verification failed (ETag {resp['ETag']} != md5 {md5})")
        return Entry(rel, len(body), entry.mtime, sha, resp["ETag"].strip('"'))

    def _put_multipart(self, src: Path, rel: str, entry: Entry, size: int) -> Entry:
        key = self._key(rel)
        sha = entry.sha256
        if not sha:
            sha, _ = hash_file(src, size, self.threshold, self.part_size)
        up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata={META_SHA: sha},
                                                 ChecksumAlgorithm="SHA256")
        upload_id = up["UploadId"]
        n = parts_of(size, self.part_size)

        def send(i: int):
            with open(src, "rb") as f:
                f.seek(i * self.part_size)
                data = f.read(self.part_size)
            md5 = hashlib.md5(data)
            r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=i + 1,
                                        Body=data, ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode())
            got = r["ETag"].strip('"')
            if got != md5.hexdigest():
                raise IntegrityError(f"{rel}: part {i + 1} verification failed (ETag {got} != md5 {md5.hexdigest()})")
            return {"PartNumber": i + 1, "ETag": r["ETag"], "ChecksumSHA256": r.get("ChecksumSHA256")}, md5.digest()

        try:
            done = list(self.parts.map(send, range(n)))
            parts = [{k: v for k, v in p.items() if v is not None} for p, _ in done]
            resp = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original error matters more; a lifecycle rule cleans up
                pass
            raise
        etag = resp["ETag"].strip('"')
        expected = multipart_etag([md5 for _, md5 in done])
        if etag != expected:
            raise IntegrityError(f"{rel}: upload verification failed (ETag {etag} != {expected})")
        if entry.etag and entry.etag != expected:
            # The bytes sent are not the bytes hashed (file changed mid-upload): the sha256 metadata would lie.
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise SyncError(f"{rel}: changed while uploading; re-run sync")
        return Entry(rel, size, entry.mtime, sha, etag)

    # --- download
    def fetch(self, rel: str, entry: Entry, dest_tmp: Path, dest_threshold: int, dest_part_size: int):
        """Download into dest_tmp and verify; returns (sha256, the ETag the destination layout would give)."""
        key = self._key(rel)
        if entry.size >= 2 * self.part_size:
            return self._fetch_ranged(rel, key, entry, dest_tmp, dest_threshold, dest_part_size)
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        h = StreamHasher(entry.size, dest_threshold, dest_part_size)
        whole_md5 = hashlib.md5() if h.multipart else None  # one-PUT ETags are the md5 of the whole body
        got = 0
        with open(dest_tmp, "wb") as f:
            for buf in resp["Body"].iter_chunks(_GET_BUF):
                h.update(buf)
                if whole_md5 is not None:
                    whole_md5.update(buf)
                f.write(buf)
                got += len(buf)
        sha, etag = h.result()
        md5 = whole_md5.hexdigest() if whole_md5 is not None else (etag if "-" not in etag else None)
        self._verify(rel, dest_tmp, got, resp, sha, md5)
        return sha, etag

    def _fetch_ranged(self, rel, key, entry, dest_tmp: Path, dest_threshold, dest_part_size):
        n = parts_of(entry.size, self.part_size)
        with open(dest_tmp, "wb") as f:
            f.truncate(entry.size)
        first: dict = {}

        def get(i: int):
            lo = i * self.part_size
            hi = min(entry.size, lo + self.part_size) - 1
            kw = {"IfMatch": first["ETag"]} if first else {}
            r = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={lo}-{hi}", **kw)
            data = r["Body"].read()
            if len(data) != hi - lo + 1:
                raise IntegrityError(f"{rel}: short read in range {lo}-{hi}")
            fd = os.open(dest_tmp, os.O_WRONLY)
            try:
                os.pwrite(fd, data, lo)
            finally:
                os.close(fd)
            return r

        r0 = get(0)  # pins the version: later ranges ask IfMatch its ETag
        first.update(r0)
        list(self.parts.map(get, range(1, n)))
        sha, etag = hash_file(dest_tmp, entry.size, dest_threshold, dest_part_size)
        self._verify(rel, dest_tmp, os.path.getsize(dest_tmp), r0, sha, None, total=entry.size)
        return sha, etag

    def _verify(self, rel: str, tmp: Path, got: int, resp: dict, sha: str, md5: str | None, total=None) -> None:
        size = total if total is not None else resp.get("ContentLength", got)
        if got != size:
            raise IntegrityError(f"{rel}: got {got} bytes, expected {size}")
        want = (resp.get("Metadata") or {}).get(META_SHA)
        if want:
            if sha != want:
                raise IntegrityError(f"{rel}: downloaded bytes have sha256 {sha[:12]}..., the object says "
                                     f"{want[:12]}...: corrupt object or transfer; nothing was written")
            return
        etag = (resp.get("ETag") or "").strip('"')
        if not etag:
            return
        if "-" not in etag:
            mine = md5 or etag_with_part_size(tmp, None)
            if mine != etag:
                raise IntegrityError(f"{rel}: downloaded bytes have md5 {mine}, the object's ETag is {etag}: "
                                     f"corrupt transfer; nothing was written")
            return
        for ps in candidate_part_sizes(got, etag):
            if etag_with_part_size(tmp, ps) == etag:
                return
        # A foreign multipart object with an unusual part size: size is all we can check.

    def delete(self, paths: list[str]) -> None:
        for i in range(0, len(paths), 1000):  # DeleteObjects takes up to 1000 keys a call
            batch = paths[i:i + 1000]
            resp = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self._key(p)} for p in batch], "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                raise SyncError(f"delete failed for {len(errors)} objects, first: {errors[0].get('Key')}: "
                                f"{errors[0].get('Message')}")

    def close(self) -> None:
        if self._parts is not None:
            self._parts.shutdown(wait=True)
            self._parts = None


def _put_verified(resp: dict, md5: str, sha: str) -> bool:
    """The ETag is the md5 of what the store kept; under SSE-KMS it is not, and S3 itself has then
    validated the ChecksumSHA256 we sent (it rejects a mismatch with BadDigest)."""
    if resp["ETag"].strip('"') == md5:
        return True
    return resp.get("ServerSideEncryption") == "aws:kms" and resp.get("ChecksumSHA256") == _b64(sha)


def _safe_rel(rel: str) -> bool:
    """Keys that would escape the local root (`..`, absolute) are never mirrored."""
    parts = rel.split("/")
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)
