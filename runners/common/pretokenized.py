"""Pre-tokenized SFT data, the format runners/tokenize.py writes (issue 5 owns the writer and the loader):

    <dir>/meta.json        what made it: {"mode": "sft", "format": "arrow"|"parquet", tokenizer, counts, ...}
    <dir>/train/           a `datasets` dataset (save_to_disk) with input_ids, attention_mask, labels
                           (labels are -100 on tokens that are not the assistant's)
"""
from __future__ import annotations

from pathlib import Path

from runners.common.errors import RunnerError

COLUMNS = ("input_ids", "attention_mask", "labels")


def check_pretokenized_dir(path: Path) -> Path:
    if not (path / "meta.json").is_file() or not (path / "train").is_dir():
        raise RunnerError(f"data.pretokenized: {path} is not a pre-tokenized dir (needs meta.json and train/)")
    return path


def load_pretokenized(path: Path):
    try:
        from runners.data.pretokenized import load_pretokenized_sft
    except ImportError:  # the shared loader is not in this tree yet; read the agreed format directly
        from datasets import load_from_disk

        def load_pretokenized_sft(p):
            return load_from_disk(str(Path(p) / "train"))

    try:
        dataset = load_pretokenized_sft(path)
    except Exception as exc:  # runners.data.errors.DataError: already one line naming the fix
        if type(exc).__name__ != "DataError":
            raise
        raise RunnerError(f"data.pretokenized: {exc}") from None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise RunnerError(f"data.pretokenized: {path} lacks columns {', '.join(missing)}")
    return dataset
