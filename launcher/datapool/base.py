"""What every store offers: a listing by manifest, and get/put/delete of one file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(slots=True)
class Entry:
    """One file: its path relative to the store root ('/' separated), size, and whatever hashes are known.

    sha256 is known for local files (hash cache) and never from an S3 LIST (metadata is not listed);
    etag is the S3 ETag (md5 for one PUT, md5-of-md5s "-N" for multipart) or, locally, the ETag our
    own upload would get, so a LIST alone tells whether the bytes are the same.
    hint: the hashes came from the local hash cache, not from reading the bytes in this run; they decide what
    looks unchanged, but are recomputed before they are published or allowed to fail a transfer.
    """

    path: str
    size: int
    mtime: float
    sha256: str | None = None
    etag: str | None = None
    hint: bool = False


class Store:
    url: str
    is_local = False
    # Told the size of each piece of an upload once the store has it (a transfer bar: launcher/progress.py); a
    # store that moves a file in one piece tells it once, at the end.
    on_bytes: Callable[[int], None] | None = None

    def list(self) -> dict[str, Entry]:
        raise NotImplementedError

    def delete(self, paths: list[str]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.url

    def probe(self) -> None:
        """Raise DatapoolUserError if the store cannot be used (no bucket, no credentials); reads one page at most.
        Launch calls it before it records or starts anything."""
