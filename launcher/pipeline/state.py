"""Skip and resume bookkeeping, kept in the store so any machine sees it: `reports/pipeline/<step>.json`.

A step is up to date when its last run succeeded with the same config hash, the same inputs (the prepare
fingerprint and the job ids of the steps before it) and its outputs are in the store. A step that re-runs gets a
new job id, so every step after it sees new inputs and re-runs too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from ..datapool.url import StoreUrl

from .prepare import Binding

RECORDS = "reports/pipeline"


class PipelineStore:
    """Small objects in the experiment's folder of the store: step records, step env files, output checks."""

    def __init__(self, bind: Binding):
        url = StoreUrl.of(bind.store_url)
        self._http = None
        if url is None or url.scheme == "file":
            root = Path(url.path) if url else bind.root
            self.dir: Path | None = root / "experiments" / bind.experiment
        else:
            self.dir = None
            self.bucket = url.netloc
            self.prefix = url.under(f"experiments/{bind.experiment}")
            self.endpoint_url = bind.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")

    @property
    def http(self):
        if self._http is None:
            from ..datapool.s3http import S3Http

            self._http = S3Http(endpoint_url=self.endpoint_url)
        return self._http

    def read(self, rel: str) -> bytes | None:
        if self.dir is not None:
            try:
                return (self.dir / rel).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        from ..datapool.s3http import S3Error

        try:
            return self.http.get_object(self.bucket, f"{self.prefix}/{rel}")[1]
        except S3Error as exc:
            if exc.status == 404 or exc.code in ("NoSuchKey", "NotFound"):
                return None
            raise

    def write(self, rel: str, data: bytes) -> None:
        if self.dir is not None:
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        self.http.put_object(self.bucket, f"{self.prefix}/{rel}", data, {"Content-Type": "application/octet-stream"})

    def has(self, rel: str) -> bool:
        """A file, or a folder holding at least one file (dot-named work in progress does not count)."""
        rel = rel.rstrip("/")
        if self.dir is not None:
            path = self.dir / rel
            if path.is_file():
                return True
            return path.is_dir() and any(p.is_file() and not any(part.startswith(".") for part in
                                                                  p.relative_to(path).parts)
                                         for p in path.rglob("*"))
        key = f"{self.prefix}/{rel}"
        for name, *_ in self.http.list_objects(self.bucket, key):
            if name == key or (name.startswith(key + "/") and "/." not in name[len(key):]):
                return True
        return False

    def record(self, step_id: str) -> dict | None:
        data = self.read(f"{RECORDS}/{step_id}.json")
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # a torn or hand-edited record: the step simply runs again

    def save(self, step_id: str, rec: dict) -> None:
        self.write(f"{RECORDS}/{step_id}.json", (json.dumps(rec, indent=2, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def inputs_of(prepare_fingerprint: str | None, before: list[str], records: dict[str, dict]) -> dict:
    """What a step computed from: the prepared data and the runs of every enabled step before it."""
    return {"prepare": prepare_fingerprint,
            "steps": {sid: (records.get(sid) or {}).get("job_id") for sid in before}}


def why_not_done(rec: dict | None, config_hash: str, inputs: dict, missing: list[str]) -> str | None:
    """None when the step is up to date; otherwise the reason it runs (shown to the user)."""
    if rec is None:
        return "never ran"
    if rec.get("state") != "succeeded":
        return f"last run {rec.get('state')}"
    if rec.get("config_hash") != config_hash:
        return "config changed"
    if rec.get("inputs") != inputs:
        changed = [k for k, v in inputs["steps"].items() if (rec.get("inputs") or {}).get("steps", {}).get(k) != v]
        return f"input changed ({', '.join(changed)})" if changed else "prepared data changed"
    if missing:
        return f"output missing from the store ({missing[0]})"
    return None
