"""Content hashes: sha256 (our identity) and the S3 ETag we would get for the same bytes (to compare with LIST)."""
from __future__ import annotations

import hashlib

MiB = 1024 * 1024
# Same as `aws s3`, so objects the AWS CLI wrote compare by ETag without a download.
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
# Part sizes other tools use (aws: 8 MiB, s5cmd: 50 MiB, boto3 transfer: 8 MiB, rclone: 5 MiB / 16 MiB ...).
COMMON_PART_SIZES = (8 * MiB, 5 * MiB, 16 * MiB, 50 * MiB, 64 * MiB, 100 * MiB, 15 * MiB, 10 * MiB)
_READ = 1 * MiB


def parts_of(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


def multipart_etag(part_md5s: list[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


class StreamHasher:
    """Feeds bytes in order; gives sha256 and the ETag our own upload of these bytes would get."""

    def __init__(self, size: int, threshold: int = DEFAULT_MULTIPART_THRESHOLD, part_size: int = DEFAULT_PART_SIZE):
        self.sha = hashlib.sha256()
        self.multipart = size > threshold
        self.part_size = part_size
        self.md5 = hashlib.md5()
        self.part_md5s: list[bytes] = []
        self.in_part = 0

    def update(self, buf) -> None:
        self.sha.update(buf)
        if not self.multipart:
            self.md5.update(buf)
            return
        view = memoryview(buf)
        while view:
            take = min(len(view), self.part_size - self.in_part)
            self.md5.update(view[:take])
            self.in_part += take
            view = view[take:]
            if self.in_part == self.part_size:
                self.part_md5s.append(self.md5.digest())
                self.md5, self.in_part = hashlib.md5(), 0

    def result(self) -> tuple[str, str]:
        if not self.multipart:
            return self.sha.hexdigest(), self.md5.hexdigest()
        parts = list(self.part_md5s)
        if self.in_part or not parts:
            parts.append(self.md5.digest())
        return self.sha.hexdigest(), multipart_etag(parts)


def hash_file(path, size: int, threshold: int = DEFAULT_MULTIPART_THRESHOLD,
              part_size: int = DEFAULT_PART_SIZE) -> tuple[str, str]:
    """(sha256 hex, the ETag our own upload of this file would get), in one read of the file."""
    h = StreamHasher(size, threshold, part_size)
    with open(path, "rb") as f:
        while buf := f.read(_READ):
            h.update(buf)
    return h.result()


def etag_with_part_size(path, part_size: int | None) -> str:
    """The ETag of these bytes uploaded as one PUT (part_size None) or in parts of part_size."""
    md5 = hashlib.md5()
    part_md5s: list[bytes] = []
    in_part = 0
    with open(path, "rb") as f:
        while True:
            buf = f.read(min(_READ, part_size - in_part) if part_size else _READ)
            if not buf:
                break
            md5.update(buf)
            if part_size:
                in_part += len(buf)
                if in_part == part_size:
                    part_md5s.append(md5.digest())
                    md5, in_part = hashlib.md5(), 0
    if part_size is None:
        return md5.hexdigest()
    if in_part or not part_md5s:
        part_md5s.append(md5.digest())
    return multipart_etag(part_md5s)


def candidate_part_sizes(size: int, etag: str) -> list[int]:
    """Part sizes that give the part count written in a multipart ETag ("<md5>-N")."""
    try:
        n = int(etag.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return []
    guesses = list(COMMON_PART_SIZES)
    exact = -(-size // n)
    guesses += [-(-exact // MiB) * MiB, exact]  # tools that split evenly, rounded to MiB or not
    out: list[int] = []
    for ps in guesses:
        if ps > 0 and parts_of(size, ps) == n and ps not in out:
            out.append(ps)
    return out
