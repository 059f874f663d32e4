"""An S3 prefix as a store: `s3://bucket/prefix`, plain layout (`prefix/<relative path>`).

Objects we write carry their sha256 (user metadata `sha256` and S3's own x-amz-checksum-sha256), and their
ETag is checked against the md5 we computed, so an upload is verified by the server's own view of the bytes.
Requests go through the lean transport in s3http.py (stdlib SigV4, keep-alive connections; no boto3 client).
"""
from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import Entry, Store
from .errors import DatapoolUserError, IntegrityError, SyncError
from .records import record_headers
from .hashing import (DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, candidate_part_sizes, etag_with_part_size,
                      hash_file, multipart_etag, parts_of)


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
    def http(self):
        if self._client is None:
            from .s3http import S3Http

            self._client = S3Http(endpoint_url=self.endpoint_url, region=self.region, profile=self.profile)
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
        from .s3http import S3Error

        endpoint = self._client.custom_endpoint if self._client is not None else self.endpoint_url
        where = f" at {endpoint}" if endpoint else ""
        if isinstance(exc, S3Error):
            if exc.code == "NoSuchBucket" or (exc.status == 404 and exc.code in ("NotFound", "404")):
                return DatapoolUserError(f"bucket '{self.bucket}' does not exist{where}: create it or fix --datapool")
            if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                            "InvalidToken") or exc.status == 403:
                return DatapoolUserError(f"access to s3://{self.bucket} denied ({exc.code}): check your AWS credentials")
            if exc.code == "InvalidBucketName":
                return DatapoolUserError(f"invalid bucket name '{self.bucket}': fix --datapool")
        if isinstance(exc, DatapoolUserError):
            return exc
        return SyncError(f"{self.url}: {exc}")

    def probe(self) -> None:
        from .s3http import S3Error

        query = {"list-type": "2", "max-keys": "1"}
        if self.prefix:
            query["prefix"] = self.prefix + "/"
        try:
            self.http.request("GET", self.bucket, query=query)
        except (S3Error, OSError) as exc:
            raise self._user_error(exc) from None

    # --- listing
    def list(self, pool=None, settle_seconds: float = 0.0, want=None) -> dict[str, Entry]:
        """One paginated LIST: size and ETag of every object; no object is read."""
        from .s3http import S3Error

        out: dict[str, Entry] = {}
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for key, size, etag, mtime in self.http.list_objects(self.bucket, self.prefix + "/" if self.prefix else ""):
                rel = key[strip:]
                if not rel or rel.endswith("/"):
                    continue  # "directory" markers some tools create
                if not _safe_rel(rel):
                    continue
                if want is not None and not want(rel):
                    continue
                out[rel] = Entry(rel, size, mtime, None, etag)
        except (S3Error, OSError) as exc:
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
        headers = {"x-amz-meta-sha256": sha, "x-amz-checksum-sha256": _b64(sha),
                   "x-amz-sdk-checksum-algorithm": "SHA256", "Content-Type": "application/octet-stream"}
        key = self._key(rel)
        headers.update(record_headers(self.bucket, key))
        for attempt in range(2):  # the store's view of what it kept is not ours: resend once
            h = self.http.put_object(self.bucket, key, body, headers, sha)
            if _put_verified(h, md5, sha):
                if self.on_bytes is not None:
                    self.on_bytes(len(body))
                return Entry(rel, len(body), entry.mtime, sha, md5)
        raise IntegrityError(f"{rel}: upload verification failed (ETag {h.get('ETag')} != md5 {md5})")

    def _put_multipart(self, src: Path, rel: str, entry: Entry, size: int) -> Entry:
        key = self._key(rel)
        sha, hashed_etag = entry.sha256, entry.etag
        if not sha or entry.hint:
            # The sha256 metadata must come from these bytes: a new file, or one whose hashes are only the hash
            # cache's word, is hashed here, in this worker, while other files are moving. The parts' ETag
            # (checked below) then proves the bytes sent are the bytes hashed.
            sha, hashed_etag = hash_file(src, size, self.threshold, self.part_size)
        upload_id = self.http.create_multipart(self.bucket, key, {
            "x-amz-meta-sha256": sha, "x-amz-checksum-algorithm": "SHA256",
            "Content-Type": "application/octet-stream", **record_headers(self.bucket, key)})
        n = parts_of(size, self.part_size)

        def send(i: int):
            with open(src, "rb") as f:
                f.seek(i * self.part_size)
                data = f.read(self.part_size)
            md5 = hashlib.md5(data)
            digest = hashlib.sha256(data).digest()
            part_sha = base64.b64encode(digest).decode()
            h = self.http.upload_part(self.bucket, key, upload_id, i + 1, data, {
                "x-amz-checksum-sha256": part_sha, "x-amz-sdk-checksum-algorithm": "SHA256"}, digest.hex())
            got = (h.get("ETag") or "").strip('"')
            if got != md5.hexdigest():
                raise IntegrityError(f"{rel}: part {i + 1} verification failed (ETag {got} != md5 {md5.hexdigest()})")
            if self.on_bytes is not None:
                self.on_bytes(len(data))
            return {"PartNumber": i + 1, "ETag": f'"{got}"', "ChecksumSHA256": part_sha}, md5.digest()

        etag = self._multipart(rel, key, upload_id, send, range(n))[1]
        if hashed_etag and hashed_etag != etag:
            # The bytes sent are not the bytes hashed (file changed mid-upload): the sha256 metadata would lie.
            self.delete([rel])
            raise SyncError(f"{rel}: changed while uploading; re-run sync")
        return Entry(rel, size, entry.mtime, sha, etag)

    def put_composed(self, src: Path, rel: str, sha256: str, parts: list[tuple], source_rel: str) -> int:
        """`src` (a file whose sha256 is `sha256`) stored at `rel` as a multipart upload whose parts are either copied
        by the store from `source_rel` (("copy", offset there, length, offset in src)) or sent from src (("put",
        offset, length)). Every part's ETag is checked against the MD5 of src's own bytes for it, so a copied range
        that is not what src holds there fails the upload. Returns the bytes sent."""
        key, source = self._key(rel), self._key(source_rel)
        upload_id = self.http.create_multipart(self.bucket, key, {
            "x-amz-meta-sha256": sha256, "Content-Type": "application/octet-stream",
            **record_headers(self.bucket, key)})

        def send(numbered):
            number, part = numbered
            at, n = (part[3], part[2]) if part[0] == "copy" else (part[1], part[2])
            md5, blocks = hashlib.md5(), []
            with open(src, "rb") as f:  # a copied part can be big: read for its MD5 a block at a time
                f.seek(at)
                left = n
                while left:
                    block = f.read(min(left, 1 << 20))
                    if not block:
                        raise IntegrityError(f"{src} is shorter than its parts say")
                    md5.update(block)
                    if part[0] == "put":
                        blocks.append(block)
                    left -= len(block)
            data = b"".join(blocks)
            if part[0] == "copy":
                got = self.http.upload_part_copy(self.bucket, key, upload_id, number, source, part[1], part[1] + n - 1)
            else:
                got = (self.http.upload_part(self.bucket, key, upload_id, number, data, {},
                                             hashlib.sha256(data).hexdigest()).get("ETag") or "").strip('"')
                if self.on_bytes is not None:
                    self.on_bytes(n)
            if got != md5.hexdigest():
                raise IntegrityError(f"{rel}: part {number} verification failed (ETag {got} != md5 {md5.hexdigest()})")
            return {"PartNumber": number, "ETag": f'"{got}"'}, md5.digest(), n if part[0] == "put" else 0

        done, _ = self._multipart(rel, key, upload_id, send, enumerate(parts, 1))
        return sum(sent for _, _, sent in done)

    def _multipart(self, rel: str, key: str, upload_id: str, send, items) -> tuple[list, str]:
        """`send` over `items` on the part threads (each returns (the part for Complete, its MD5 digest, ...)),
        then Complete, whose ETag must be the parts' multipart ETag; aborted on any failure. Returns (send's
        results, that ETag)."""
        try:
            done = list(self.parts.map(send, items))
            etag = self.http.complete_multipart(self.bucket, key, upload_id, [d[0] for d in done])
        except BaseException:
            try:
                self.http.abort_multipart(self.bucket, key, upload_id)
            except Exception:  # noqa: BLE001 - the original error matters more; a lifecycle rule cleans up
                pass
            raise
        expected = multipart_etag([d[1] for d in done])
        if etag != expected:
            raise IntegrityError(f"{rel}: upload verification failed (ETag {etag} != {expected})")
        return done, etag

    # --- download
    def fetch(self, rel: str, entry: Entry, dest_tmp: Path, dest_threshold: int, dest_part_size: int):
        """Download into dest_tmp and verify; returns (sha256, the ETag the destination layout would give)."""
        key = self._key(rel)
        if entry.size > self.part_size:
            return self._fetch_ranged(rel, key, entry, dest_tmp, dest_threshold, dest_part_size)
        h, data = self.http.get_object(self.bucket, key)
        with open(dest_tmp, "wb") as f:
            f.write(data)
        sha = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data).hexdigest()
        # Objects this small are one PUT for the destination layout too: its ETag is the md5.
        etag = md5 if len(data) <= dest_threshold else hash_file(dest_tmp, len(data), dest_threshold, dest_part_size)[1]
        self._verify(rel, dest_tmp, len(data), h, sha, md5, total=int(h.get("Content-Length") or len(data)))
        return sha, etag

    def _fetch_ranged(self, rel, key, entry, dest_tmp: Path, dest_threshold, dest_part_size):
        n = parts_of(entry.size, self.part_size)
        with open(dest_tmp, "wb") as f:
            f.truncate(entry.size)
        pinned: dict = {}

        def get(i: int):
            lo = i * self.part_size
            hi = min(entry.size, lo + self.part_size) - 1
            h, data = self.http.get_object(self.bucket, key, (lo, hi), pinned.get("etag"))
            if len(data) != hi - lo + 1:
                raise IntegrityError(f"{rel}: short read in range {lo}-{hi}")
            fd = os.open(dest_tmp, os.O_WRONLY)
            try:
                os.pwrite(fd, data, lo)
            finally:
                os.close(fd)
            return h

        h0 = get(0)  # pins the version: later ranges ask If-Match its ETag
        pinned["etag"] = (h0.get("ETag") or "").strip('"')
        list(self.parts.map(get, range(1, n)))
        sha, etag = hash_file(dest_tmp, entry.size, dest_threshold, dest_part_size)
        self._verify(rel, dest_tmp, os.path.getsize(dest_tmp), h0, sha, None, total=entry.size)
        return sha, etag

    def _verify(self, rel: str, tmp: Path, got: int, headers, sha: str, md5: str | None, total: int) -> None:
        if got != total:
            raise IntegrityError(f"{rel}: got {got} bytes, expected {total}")
        want = headers.get("x-amz-meta-sha256")
        if want:
            if sha != want:
                raise IntegrityError(f"{rel}: downloaded bytes have sha256 {sha[:12]}..., the object says "
                                     f"{want[:12]}...: corrupt object or transfer; nothing was written")
            return
        etag = (headers.get("ETag") or "").strip('"')
        if not etag:
            return
        if "-" not in etag:
            mine = md5 or etag_with_part_size(tmp, None)
            if mine != etag and headers.get("x-amz-server-side-encryption") != "aws:kms":
                raise IntegrityError(f"{rel}: downloaded bytes have md5 {mine}, the object's ETag is {etag}: "
                                     f"corrupt transfer; nothing was written")
            return
        for ps in candidate_part_sizes(got, etag):
            if etag_with_part_size(tmp, ps) == etag:
                return
        # A foreign multipart object with an unusual part size: size is all we can check.

    def delete(self, paths: list[str]) -> None:
        from .s3http import S3Error

        for i in range(0, len(paths), 1000):  # DeleteObjects takes up to 1000 keys a call
            batch = paths[i:i + 1000]
            try:
                errors = self.http.delete_objects(self.bucket, [self._key(p) for p in batch])
            except (S3Error, OSError) as exc:
                raise self._user_error(exc) from None
            if errors:
                raise SyncError(f"delete failed for {len(errors)} objects, first: {errors[0][0]}: {errors[0][1]}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._parts is not None:
            self._parts.shutdown(wait=True)
            self._parts = None


def _put_verified(headers, md5: str, sha: str) -> bool:
    """The ETag is the md5 of what the store kept; under SSE-KMS it is not, and S3 itself has then
    validated the x-amz-checksum-sha256 we sent (it rejects a mismatch with BadDigest)."""
    if (headers.get("ETag") or "").strip('"') == md5:
        return True
    return (headers.get("x-amz-server-side-encryption") == "aws:kms"
            and headers.get("x-amz-checksum-sha256") == _b64(sha))


def _safe_rel(rel: str) -> bool:
    """Keys that would escape the local root (`..`, absolute) are never mirrored."""
    parts = rel.split("/")
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)
