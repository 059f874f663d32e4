"""Pre-tokenized SFT data, the format runners/tokenize_run.py writes (runners/data owns the writer and the loader):

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


def load_pretokenized(path: Path, split: str = "train", missing_ok: bool = False):
    """The `split` of a pre-tokenized SFT dir; None for a missing split when `missing_ok` (validation is optional)."""
    from runners.data.errors import DataError
    from runners.data.pretokenized import load_pretokenized_sft

    check_pretokenized_dir(path)
    if missing_ok and not (Path(path) / split).is_dir():
        return None
    try:
        dataset = load_pretokenized_sft(path, split)
    except DataError as exc:  # already one line naming the fix
        raise RunnerError(f"data.pretokenized: {exc}") from None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise RunnerError(f"data.pretokenized: {path} lacks columns {', '.join(missing)}")
    return dataset
