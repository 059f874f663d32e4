"""Samples, the synthetic arithmetic set, prepared-dataset loading and batch padding.

A sample is {"encoder_ids": prompt tokens, "decoder_input_ids": BOS + answer, "labels": answer + EOS}.
A prepared dataset directory holds meta.json, tokenizer.json and train/val splits as `train.jsonl`/`val.jsonl` or
Arrow IPC shards `train-00000.arrow`, ...
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from .errors import HRMUserError

IGNORE_INDEX = -100


def make_sample(prompt_ids: list[int], answer_ids: list[int], bos: int, eos: int, max_len: int) -> dict:
    enc = list(prompt_ids[:max_len])
    ans = list(answer_ids[: max_len - 1])
    labels = ans + [eos] if len(answer_ids) <= max_len - 1 else list(answer_ids[:max_len])
    return {"encoder_ids": enc or [eos], "decoder_input_ids": [bos] + ans, "labels": labels}


def truncate(sample: dict, max_len: int) -> dict:
    if len(sample["encoder_ids"]) <= max_len and len(sample["labels"]) <= max_len:
        return sample
    return {
        "encoder_ids": sample["encoder_ids"][:max_len],
        "decoder_input_ids": sample["decoder_input_ids"][:max_len],
        "labels": sample["labels"][:max_len],
    }


# ---- synthetic arithmetic -----------------------------------------------------------------------------------
def render(a: int, op: str, b: int, template: str) -> str:
    return f"What is {a} {op} {b}?" if template == "question" else f"{a} {op} {b} ="


def _answer(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def synthetic_problems(cfg) -> tuple[list[tuple], list[tuple]]:
    """Distinct (a, op, b) problems split so validation problems never occur in training."""
    hi = 10 ** cfg.max_digits
    rng = random.Random(cfg.seed)
    space = hi * hi * len(cfg.ops)
    if space <= cfg.max_problems:
        problems = [(a, op, b) for op in cfg.ops for a in range(hi) for b in range(hi)]
    else:
        seen: set = set()
        while len(seen) < cfg.max_problems:
            seen.add((rng.randrange(hi), rng.choice(cfg.ops), rng.randrange(hi)))
        problems = sorted(seen, key=lambda p: (p[1], p[0], p[2]))
    rng.shuffle(problems)
    n_val = max(1, int(round(len(problems) * cfg.val_fraction)))
    if cfg.holdout == "random":
        return problems[n_val:], problems[:n_val]
    if cfg.holdout == "pairs":
        # strict: hold out whole unordered pairs {a, b} of a commutative op, both orders, so no held-out problem
        # is trained in either order (nor in any template).
        present = set(problems)
        val, val_set = [], set()
        for a, op, b in problems:
            if len(val) == n_val:
                break
            group = [(a, op, b)] + ([(b, op, a)] if a != b and (b, op, a) in present else [])
            if (a, op, b) in val_set or len(val) + len(group) > n_val:
                continue
            val.extend(group)
            val_set.update(group)
        return [p for p in problems if p not in val_set], val
    # mirror: hold out (a, op, b) only while (b, op, a) stays in train.
    present = set(problems)
    val: list[tuple] = []
    val_set: set = set()
    for a, op, b in problems:
        if len(val) == n_val:
            break
        if a != b and (b, op, a) in present and (b, op, a) not in val_set:
            val.append((a, op, b))
            val_set.add((a, op, b))
    return [p for p in problems if p not in val_set], val


def synthetic_samples(cfg, tokenizer, max_len: int) -> tuple[list[dict], list[dict]]:
    train_p, val_p = synthetic_problems(cfg)

    def build(problems):
        out = []
        for a, op, b in problems:
            for template in cfg.templates:
                out.append(
                    make_sample(
                        tokenizer.encode(render(a, op, b, template)),
                        tokenizer.encode(str(_answer(a, op, b))),
                        tokenizer.bos_id,
                        tokenizer.eos_id,
                        max_len,
                    )
                )
        return out

    return build(train_p) + aux_samples(cfg, train_p, tokenizer, max_len), build(val_p)


def aux_problems(aux: list[str], train_problems: list[tuple]) -> list[tuple[str, str]]:
    """Training-only (prompt, answer) pairs derived from the *training* addition problems, never from held-out ones:
    `max`: `max a b =` -> the larger of a trained pair (a != b), an ordering of the digits;
    `sub`: for each trained a + b = c, `c - a =` -> b and `c - b =` -> a (the same fact read backwards)."""
    out: list[tuple[str, str]] = []
    for a, op, b in train_problems:
        if op != "+":
            continue
        if "max" in aux and a != b:
            out.append((f"max {a} {b} =", str(max(a, b))))
        if "sub" in aux:
            out.append((f"{a + b} - {a} =", str(b)))
            out.append((f"{a + b} - {b} =", str(a)))
    return out


def aux_samples(cfg, train_problems, tokenizer, max_len: int) -> list[dict]:
    return [make_sample(tokenizer.encode(p), tokenizer.encode(ans), tokenizer.bos_id, tokenizer.eos_id, max_len)
            for p, ans in aux_problems(cfg.aux, train_problems)]


# ---- prepared datasets ----------------------------------------------------------------------------------------
def read_meta(dataset_dir: Path) -> dict:
    meta_path = dataset_dir / "meta.json"
    if not dataset_dir.is_dir():
        raise HRMUserError(f"dataset directory not found: {dataset_dir} (run runners/hrm_lm/prepare.py first)")
    if not meta_path.is_file():
        raise HRMUserError(f"{dataset_dir} has no meta.json: not a prepared dataset (run runners/hrm_lm/prepare.py)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise HRMUserError(f"{meta_path}: not valid JSON") from None
    for key in ("vocab_size", "pad_id", "bos_id", "eos_id"):
        if not isinstance(meta.get(key), int):
            raise HRMUserError(f"{meta_path}: missing integer key {key!r}")
    return meta


def split_files(dataset_dir: Path, split: str) -> list[Path]:
    jsonl = dataset_dir / f"{split}.jsonl"
    if jsonl.is_file():
        return [jsonl]
    return sorted(dataset_dir.glob(f"{split}-*.arrow"))


# A large corpus takes minutes to parse; a line every this many samples shows the job is alive (as the seed does).
HEARTBEAT_ROWS = 200_000


def _heartbeat(text: str) -> None:
    print(f"hrm_lm: {text}", file=sys.stderr, flush=True)


class JsonlSamples:
    def __init__(self, path: Path, heartbeat_rows: int | None = None):
        every = heartbeat_rows or HEARTBEAT_ROWS
        t0 = time.perf_counter()
        self.rows = []
        # Line by line: reading the whole file first would hold the text and the parsed rows at once.
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    self.rows.append(json.loads(line))
                    if len(self.rows) % every == 0:
                        dt = time.perf_counter() - t0
                        _heartbeat(f"loading {path.name}: {len(self.rows):,} samples ({len(self.rows) / dt:,.0f}/s)")
        if len(self.rows) >= every:
            _heartbeat(f"loaded {path.name}: {len(self.rows):,} samples in {time.perf_counter() - t0:.1f}s")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class ArrowSamples:
    """Memory-mapped Arrow IPC shards: rows are read on access, so a large set is not held in RAM."""

    COLUMNS = ("encoder_ids", "decoder_input_ids", "labels")

    def __init__(self, paths: list[Path], heartbeat_rows: int | None = None):
        import pyarrow as pa

        every, t0 = heartbeat_rows or HEARTBEAT_ROWS, time.perf_counter()
        tables, rows, last = [], 0, 0
        for p in paths:
            tables.append(pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all())
            rows += tables[-1].num_rows
            if rows // every > last:  # mapping is cheap per shard, but thousands of shards still take a while
                last = rows // every
                _heartbeat(f"mapping {p.parent.name}: {len(tables)}/{len(paths)} shards, {rows:,} samples "
                           f"({time.perf_counter() - t0:.1f}s)")
        self.table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        self.cols = {c: self.table.column(c) for c in self.COLUMNS}

    def __len__(self):
        return self.table.num_rows

    def __getitem__(self, i):
        return {c: self.cols[c][i].as_py() for c in self.COLUMNS}


def load_split(dataset_dir: Path, split: str, heartbeat_rows: int | None = None):
    """A split's samples; prints a heartbeat line every `heartbeat_rows` (default HEARTBEAT_ROWS) while loading."""
    files = split_files(dataset_dir, split)
    if not files:
        return None
    if files[0].suffix == ".jsonl":
        return JsonlSamples(files[0], heartbeat_rows)
    return ArrowSamples(files, heartbeat_rows)


class TorchSamples:
    """Wraps a sample list for torch's DataLoader, truncating to the run's max_seq_len."""

    def __init__(self, samples, max_len: int):
        self.samples, self.max_len = samples, max_len

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return truncate(self.samples[i], self.max_len)


def collate(samples: list[dict], pad_id: int, pad_to_multiple: int = 1) -> dict:
    """Right-pad into tensors plus masks (1 = real token). Labels pad with -100 so padding carries no loss."""
    import torch

    def width(key):
        w = max(len(s[key]) for s in samples)
        return -(-w // pad_to_multiple) * pad_to_multiple

    ew, dw = width("encoder_ids"), width("decoder_input_ids")
    b = len(samples)
    enc = torch.full((b, ew), pad_id, dtype=torch.long)
    emask = torch.zeros((b, ew), dtype=torch.long)
    dec = torch.full((b, dw), pad_id, dtype=torch.long)
    dmask = torch.zeros((b, dw), dtype=torch.long)
    lab = torch.full((b, dw), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        e, d, l = s["encoder_ids"], s["decoder_input_ids"], s["labels"]
        enc[i, : len(e)] = torch.tensor(e)
        emask[i, : len(e)] = 1
        dec[i, : len(d)] = torch.tensor(d)
        dmask[i, : len(d)] = 1
        lab[i, : len(l)] = torch.tensor(l)
    return {"encoder_ids": enc, "encoder_mask": emask, "decoder_input_ids": dec, "decoder_mask": dmask, "labels": lab}
