"""Streaming readers for raw corpora: JSONL, JSON, Parquet, Arrow, plain text (format auto-detected).

Every reader yields records (dicts) in a fixed order and holds at most one batch in memory, except JSON
(a single document has to be parsed whole; use JSONL for large corpora).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from runners.data.errors import DataError

FORMATS = ("jsonl", "json", "parquet", "arrow", "text")
_SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet", ".pq": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
    ".txt": "text", ".text": "text", ".md": "text",
}
_ARROW_FILE_MAGIC = b"ARROW1"
_PARQUET_MAGIC = b"PAR1"
# datasets' save_to_disk keeps these beside its .arrow shards; they are not data.
_SKIP_NAMES = {"state.json", "dataset_info.json", "dataset_dict.json", "mixture_manifest.json", "meta.json"}

try:  # orjson parses JSONL ~3x faster; the stdlib is the fallback.
    import orjson as _fastjson

    _loads = _fastjson.loads
except ImportError:  # pragma: no cover - orjson is installed here
    _loads = json.loads


def detect_format(path: Path) -> str:
    """By suffix first, then by sniffing the first bytes (a dataset file often has no useful suffix)."""
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt:
        return fmt
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC) or head[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    stripped = head.lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        first_line = stripped.split(b"\n", 1)[0]
        try:
            json.loads(first_line)
            return "jsonl"
        except ValueError:
            return "json"
    return "text"


def list_files(path: Path) -> list[Path]:
    """A file, or every data file under a directory (recursively, sorted so the order is deterministic)."""
    if not path.exists():
        raise DataError(f"input {path} does not exist; put raw files there or pass --input PATH")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in _SKIP_NAMES
    )
    if not files:
        raise DataError(f"input directory {path} holds no files; put JSONL/JSON/Parquet/Arrow/text files there")
    return files


def iter_records(path: Path, fmt: str | None = None, batch_rows: int = 4096) -> Iterator[dict]:
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "json":
        yield from _iter_json(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path, batch_rows)
    elif fmt == "arrow":
        yield from _iter_arrow(path)
    elif fmt == "text":
        yield from _iter_text(path)
    else:
        raise DataError(f"unknown format {fmt!r} for {path}; use one of {', '.join(FORMATS)}")


def iter_raw(path: Path, fmt: str | None = None) -> Iterator[object]:
    """Like iter_records, but JSONL lines stay bytes: workers parse them, so the main process only moves bytes."""
    fmt = fmt or detect_format(path)
    if fmt != "jsonl":
        yield from iter_records(path, fmt)
        return
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield line


def to_record(raw: object) -> dict:
    if not isinstance(raw, (bytes, bytearray)):
        return raw  # type: ignore[return-value]
    try:
        rec = _loads(raw)
    except ValueError as e:
        raise DataError(f"a JSONL line is not valid JSON ({e}): {bytes(raw[:80])!r}; fix or drop the line") from None
    return _as_record(rec)


def _as_record(rec: object) -> dict:
    """A JSON value that is not an object still becomes one record: a string is its text."""
    if isinstance(rec, dict):
        return rec
    return {"text": rec} if isinstance(rec, str) else {"value": rec}


def count_records(path: Path, fmt: str | None = None) -> int:
    """Cheap count for mixture planning: metadata for Parquet/Arrow, a line scan for the rest."""
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt == "arrow":
        return sum(b.num_rows for b in _arrow_batches(path))
    if fmt == "jsonl":
        n = 0
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    n += 1
        return n
    return sum(1 for _ in iter_records(path, fmt))


def _iter_jsonl(path: Path) -> Iterator[dict]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = _loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e}); fix the line or drop it") from None
            yield _as_record(rec)


def _iter_json(path: Path) -> Iterator[dict]:
    try:
        with open(path, "rb") as f:
            doc = _loads(f.read())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e}); JSON input must be a list of records or {{'data': [...]}}") from None
    if isinstance(doc, dict):
        # SQuAD and friends wrap the rows: {"version": ..., "data": [...]}
        lists = [v for v in doc.values() if isinstance(v, list)]
        if "data" in doc and isinstance(doc["data"], list):
            doc = doc["data"]
        elif len(lists) == 1:
            doc = lists[0]
        else:
            doc = [doc]
    if not isinstance(doc, list):
        raise DataError(f"{path}: JSON input must be a list of records or an object holding one list")
    for rec in doc:
        yield rec if isinstance(rec, dict) else {"text": rec}


def _iter_parquet(path: Path, batch_rows: int) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    for batch in pf.iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def _arrow_batches(path: Path):
    import pyarrow as pa

    # datasets writes the IPC *stream* format; pyarrow/feather write the *file* format. Try both.
    try:
        reader = pa.ipc.open_file(path)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
        return
    except pa.ArrowInvalid:
        pass
    try:
        with pa.ipc.open_stream(path) as reader:
            yield from reader
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: not a readable Arrow file ({e})") from None


def _iter_arrow(path: Path) -> Iterator[dict]:
    for batch in _arrow_batches(path):
        yield from batch.to_pylist()


def _iter_text(path: Path) -> Iterator[dict]:
    """Plain text: documents are separated by blank lines (one paragraph-block = one document)."""
    buf: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                buf.append(line)
            elif buf:
                yield {"text": "".join(buf).rstrip("\n")}
                buf = []
    if buf:
        yield {"text": "".join(buf).rstrip("\n")}
