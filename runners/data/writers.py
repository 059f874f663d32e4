"""Shard writers: CPT block packer (.bin / Arrow / Parquet) and SFT rows (datasets save_to_disk layout / Parquet).

Shards are written as data arrives, so memory holds at most one shard's worth of tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def write_table(table, path: Path, fmt: str) -> None:
    """One shard: Parquet, or an Arrow IPC stream (what `datasets` writes and reads back)."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
            w.write_table(table)


class CptPacker:
    """Concatenated token stream -> fixed blocks of `block_size`, split into shards of `shard_blocks` blocks.

    Nothing is dropped: the last shard ends with the tail (< block_size tokens), recorded in meta as
    `tail_tokens`, so the shards concatenated are exactly the tokenized documents with their EOS separators.
    """

    def __init__(self, out_dir: Path, block_size: int, shard_blocks: int, fmt: str, vocab_size: int):
        self.out_dir, self.block_size, self.fmt = out_dir, block_size, fmt
        self.shard_tokens = block_size * shard_blocks
        self.dtype = token_dtype(vocab_size)
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.shards: list[dict] = []
        self.tokens = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, flat: np.ndarray) -> None:
        if not len(flat):
            return
        self.pending.append(flat.astype(self.dtype, copy=False))
        self.pending_len += len(flat)
        self.tokens += len(flat)
        if self.pending_len >= self.shard_tokens:
            buf = np.concatenate(self.pending)
            cut = (len(buf) // self.shard_tokens) * self.shard_tokens
            for off in range(0, cut, self.shard_tokens):
                self._write(buf[off: off + self.shard_tokens])
            rest = buf[cut:]
            self.pending, self.pending_len = ([rest] if len(rest) else []), len(rest)

    def close(self) -> dict:
        if self.pending_len:
            self._write(np.concatenate(self.pending))
        self.pending, self.pending_len = [], 0
        full = self.tokens // self.block_size
        return {"tokens": self.tokens, "blocks": full, "tail_tokens": self.tokens - full * self.block_size,
                "shards": self.shards}

    def _write(self, arr: np.ndarray) -> None:
        i = len(self.shards)
        n_full = len(arr) // self.block_size
        if self.fmt == "bin":
            name = f"shard-{i:05d}.bin"
            arr.tofile(self.out_dir / name)
        else:
            import pyarrow as pa

            rows = [arr[k: k + self.block_size] for k in range(0, len(arr), self.block_size)]
            col = pa.array([r.astype(np.int32) for r in rows], type=pa.list_(pa.int32()))
            table = pa.table({"input_ids": col})
            name = f"shard-{i:05d}.parquet" if self.fmt == "parquet" else f"shard-{i:05d}.arrow"
            write_table(table, self.out_dir / name, self.fmt)
        self.shards.append({"file": name, "tokens": int(len(arr)), "blocks": n_full,
                            "tail_tokens": int(len(arr) - n_full * self.block_size)})


def _sft_schema():
    from datasets import Features, List, Value

    return Features({
        "input_ids": List(Value("int32")),
        "attention_mask": List(Value("int8")),
        "labels": List(Value("int32")),
    })


class SftWriter:
    """Rows of (input_ids, attention_mask, labels) in shards a `datasets.load_from_disk` reads as-is."""

    def __init__(self, out_dir: Path, shard_rows: int, fmt: str):
        import pyarrow as pa

        self.pa = pa
        self.out_dir, self.shard_rows, self.fmt = out_dir, shard_rows, fmt
        self.features = _sft_schema()
        self.schema = self.features.arrow_schema
        self.rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        self.files: list[str] = []
        self.n_rows = self.tokens = self.trained_tokens = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, ids: np.ndarray, labels: np.ndarray) -> None:
        self.rows["input_ids"].append(ids)
        self.rows["attention_mask"].append(np.ones(len(ids), dtype=np.int8))
        self.rows["labels"].append(labels)
        self.n_rows += 1
        self.tokens += len(ids)
        self.trained_tokens += int((labels != IGNORE_INDEX).sum())
        if len(self.rows["input_ids"]) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        pa = self.pa
        if not self.rows["input_ids"]:
            return
        cols = {k: pa.array(v, type=self.schema.field(k).type) for k, v in self.rows.items()}
        table = pa.table(cols, schema=self.schema)
        i = len(self.files)
        name = f"shard-{i:05d}.parquet" if self.fmt == "parquet" else f"data-{i:05d}.arrow.part"
        write_table(table, self.out_dir / name, self.fmt)
        self.files.append(name)
        self.rows = {k: [] for k in self.rows}

    def close(self) -> dict:
        self._flush()
        if self.fmt == "arrow":
            self._finish_save_to_disk_layout()
        return {"rows": self.n_rows, "tokens": self.tokens, "trained_tokens": self.trained_tokens,
                "shards": self.files}

    def _finish_save_to_disk_layout(self) -> None:
        """Name shards like `save_to_disk` does (N known only now) and write its state/info files."""
        if not self.files:  # an empty split is still a loadable dataset
            pa = self.pa
            self.files = ["data-00000.arrow.part"]
            empty = pa.table({k: pa.array([], type=self.schema.field(k).type) for k in self.rows},
                             schema=self.schema)
            with pa.OSFile(str(self.out_dir / self.files[0]), "wb") as f, pa.ipc.new_stream(f, self.schema) as w:
                w.write_table(empty)
        n = len(self.files)
        final = []
        for i, name in enumerate(self.files):
            new = f"data-{i:05d}-of-{n:05d}.arrow"
            (self.out_dir / name).rename(self.out_dir / new)
            final.append(new)
        self.files = final
        state = {
            "_data_files": [{"filename": f} for f in final],
            "_fingerprint": f"pretok-{self.n_rows}-{self.tokens}",
            "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
            "_output_all_columns": False, "_split": None,
        }
        (self.out_dir / "state.json").write_text(json.dumps(state, indent=2))
        info = {"citation": "", "description": "", "features": self.features.to_dict(), "homepage": "",
                "license": ""}
        (self.out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
