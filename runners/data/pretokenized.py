"""Readers for what runners/tokenize_run.py writes.

SFT: `<dir>/train` (and `<dir>/validation`) are `datasets` save_to_disk dirs with input_ids, attention_mask,
labels; `--format parquet` writes `shard-*.parquet` there instead. Both load with `load_pretokenized_sft`.
CPT: `<dir>/<split>/shard-*.{bin,arrow,parquet}` hold the packed token stream; `CptBlocks` serves blocks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runners.data.errors import DataError

IGNORE_INDEX = -100


def read_meta(path: Path | str) -> dict:
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        raise DataError(f"{path} has no meta.json; is it an output of runners/tokenize_run.py?")
    return json.loads(meta.read_text())


def load_pretokenized_sft(path, split: str = "train"):
    """-> datasets.Dataset with input_ids, attention_mask, labels (labels -100 outside assistant turns)."""
    path = Path(path)
    meta = read_meta(path)
    if meta.get("mode") != "sft":
        raise DataError(f"{path} holds {meta.get('mode')!r} data, not sft; tokenize with --mode sft")
    d = path / split
    if not d.is_dir():
        raise DataError(f"{path} has no {split}/ split")
    if meta.get("format") == "parquet":
        from datasets import load_dataset

        return load_dataset("parquet", data_files=sorted(str(p) for p in d.glob("*.parquet")), split="train")
    from datasets import load_from_disk

    return load_from_disk(str(d))


class CptBlocks:
    """Fixed-length blocks over the packed CPT token stream, memory-mapped (.bin) so RAM stays flat.

    Each block is trained on by itself (labels = its own tokens), so no loss crosses a block boundary.
    The tail (< block_size tokens) is served as a padded last block when `keep_tail`, pad masked out.
    """

    def __init__(self, path, split: str = "train", keep_tail: bool = False):
        path = Path(path)
        self.meta = read_meta(path)
        if self.meta.get("mode") != "cpt":
            raise DataError(f"{path} holds {self.meta.get('mode')!r} data, not cpt; tokenize with --mode cpt")
        info = self.meta["splits"].get(split)
        if info is None:
            raise DataError(f"{path} has no {split!r} split (it has {sorted(self.meta['splits'])})")
        self.block_size = int(self.meta["block_size"])
        self.pad_id = int(self.meta["pad_id"])
        fmt = self.meta["format"]
        arrays = []
        for shard in info["shards"]:
            f = path / split / shard["file"]
            if fmt == "bin":
                arrays.append(np.memmap(f, dtype=np.dtype(self.meta["dtype"]), mode="r"))
            else:
                arrays.append(_read_table_tokens(f, fmt))
        self.shards = arrays
        # (shard, offset, length) per block; shards hold whole blocks, only the last may end in a tail.
        self.index: list[tuple[int, int, int]] = []
        for si, arr in enumerate(arrays):
            for off in range(0, len(arr), self.block_size):
                n = min(self.block_size, len(arr) - off)
                if n == self.block_size or keep_tail:
                    self.index.append((si, off, n))

    def __len__(self) -> int:
        return len(self.index)

    def tokens(self, i: int) -> np.ndarray:
        si, off, n = self.index[i]
        return np.asarray(self.shards[si][off: off + n], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        import torch

        ids = self.tokens(i)
        n = len(ids)
        labels = ids.copy()
        mask = np.ones(self.block_size, dtype=np.int64)
        if n < self.block_size:
            pad = self.block_size - n
            ids = np.concatenate([ids, np.full(pad, self.pad_id, dtype=np.int64)])
            labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)])
            mask[n:] = 0
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                "attention_mask": torch.from_numpy(mask)}


def _read_table_tokens(f: Path, fmt: str) -> np.ndarray:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(f)
    else:
        with pa.memory_map(str(f)) as src:
            table = pa.ipc.open_stream(src).read_all()
    col = table.column("input_ids").combine_chunks()
    return col.flatten().to_numpy()
