"""Prepare an HRM-LM dataset directory from text or prompt/response files.

    prepare.py --input DATA... --output DIR [--tokenizer TOK] [--max-seq-len 512] [--val-ratio 0.01] ...
    prepare.py merge --output DIR CHUNK_DIR...      # fold batch-prepared chunks into one dataset (moves files)
    prepare.py synthetic --output DIR               # the built-in arithmetic set as a dataset directory

Inputs: .jsonl/.json (one object per line), .parquet, .arrow (Arrow IPC file or stream, e.g. a `datasets` cache).
A record with prompt/response fields becomes (encoder=prompt, decoder=response); a record with only a text field is
cut into windows of 2*max_seq_len tokens, the first half encoded, the second half decoded.
Output: meta.json, tokenizer.json and train/val splits as JSONL or Arrow shards. The directory appears complete or not
at all (built under a temporary name, renamed at the end).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (_here, _here.parent)]
    sys.path.insert(0, str(_here.parents[1]))
    __package__ = "runners.hrm_lm"

from runners.hrm_lm.errors import HRMUserError, fail  # noqa: E402

EXTENSIONS = (".jsonl", ".json", ".parquet", ".arrow")
COLUMNS = ("encoder_ids", "decoder_input_ids", "labels")


# ---- reading ----------------------------------------------------------------------------------------------------
def list_inputs(paths: list[str], max_files: int | None, skip_files: int = 0) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in EXTENSIONS)
        elif p.is_file():
            if p.suffix not in EXTENSIONS:
                raise HRMUserError(f"{p}: unsupported file type (use {', '.join(EXTENSIONS)})")
            files.append(p)
        else:
            raise HRMUserError(f"input not found: {p}")
    files = files[skip_files:]
    if max_files is not None:
        files = files[:max_files]
    if not files:
        raise HRMUserError(f"no {'/'.join(EXTENSIONS)} files in {' '.join(paths)}")
    return files


def read_records(path: Path) -> list[dict]:
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise HRMUserError(f"{path}:{n}: not a JSON object per line") from None
        return rows
    import pyarrow as pa

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with pa.memory_map(str(path), "r") as src:
        try:
            return pa.ipc.open_file(src).read_all().to_pylist()
        except pa.ArrowInvalid:
            src.seek(0)
            return pa.ipc.open_stream(src).read_all().to_pylist()


def to_pairs(records: list[dict], args, source: Path) -> tuple[list[str], list[str | None]]:
    """(encoder texts, answer texts or None for plain text)."""
    first = records[0] if records else {}
    if args.prompt_field in first and args.response_field in first:
        return [str(r[args.prompt_field]) for r in records], [str(r[args.response_field]) for r in records]
    if args.text_field in first:
        return [str(r[args.text_field]) for r in records], [None] * len(records)
    raise HRMUserError(f"{source}: records need '{args.prompt_field}'+'{args.response_field}' or '{args.text_field}' "
                       f"fields (found {sorted(first)[:8]}); see --prompt-field/--response-field/--text-field")


# ---- building ---------------------------------------------------------------------------------------------------
def text_windows(ids: list[int], max_len: int):
    for start in range(0, len(ids), 2 * max_len):
        chunk = ids[start : start + 2 * max_len]
        if len(chunk) >= 2:
            cut = min(len(chunk) // 2, max_len)
            yield chunk[:cut], chunk[cut:]


def build_samples(prompts, answers, tokenizer, max_len: int) -> list[dict]:
    from .data import make_sample

    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    enc = tokenizer.encode_batch(prompts)
    texts_idx = [i for i, a in enumerate(answers) if a is not None]
    ans_ids = dict(zip(texts_idx, tokenizer.encode_batch([answers[i] for i in texts_idx])))
    out = []
    for i, ids in enumerate(enc):
        if answers[i] is not None:
            out.append(make_sample(ids, ans_ids[i], bos, eos, max_len))
        else:
            out += [make_sample(p, a, bos, eos, max_len) for p, a in text_windows(ids, max_len)]
    return out


def write_split(out_dir: Path, split: str, samples: list[dict], fmt: str, shard_size: int) -> None:
    if fmt == "jsonl":
        with (out_dir / f"{split}.jsonl").open("w") as f:
            for s in samples:
                f.write(json.dumps({k: s[k] for k in COLUMNS}, separators=(",", ":")) + "\n")
        return
    import pyarrow as pa

    schema = pa.schema([(c, pa.list_(pa.int32())) for c in COLUMNS])
    for shard, start in enumerate(range(0, max(len(samples), 1), shard_size)):
        part = samples[start : start + shard_size]
        table = pa.table({c: [s[c] for s in part] for c in COLUMNS}, schema=schema)
        with pa.OSFile(str(out_dir / f"{split}-{shard:05d}.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
            w.write_table(table)


def write_dataset(out: Path, train, val, tokenizer, meta_extra: dict, fmt: str, shard_size: int, overwrite: bool):
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HRMUserError(f"output {out} exists and is not empty (pass --overwrite or pick another --output)")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_split(tmp, "train", train, fmt, shard_size)
    if val:
        write_split(tmp, "val", val, fmt, shard_size)
    tokenizer.save(tmp / "tokenizer.json")
    meta = {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id, "tokenizer": tokenizer.kind, "format": fmt, "num_train": len(train),
            "num_val": len(val), **meta_extra}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def split_train_val(samples: list[dict], val_ratio: float, seed: int):
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(samples) * val_ratio))
    if val_ratio > 0 and n_val == 0 and len(samples) > 1:
        n_val = 1
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


def cmd_build(args) -> int:
    if args.max_seq_len < 2:
        raise HRMUserError("--max-seq-len must be >= 2")
    if not 0 <= args.val_ratio < 1:
        raise HRMUserError("--val-ratio must be in [0, 1)")
    if args.num_workers:
        # tokenizers reads this when its thread pool starts: it bounds the parallel encode_batch.
        os.environ["RAYON_NUM_THREADS"] = str(args.num_workers)
    from .tokenizer import load_tokenizer, train_bpe

    files = list_inputs(args.input, args.max_files, args.skip_files)
    prompts, answers = [], []
    for f in files:
        p, a = to_pairs(read_records(f), args, f)
        prompts += p
        answers += a
    if not prompts:
        raise HRMUserError(f"no records in {len(files)} input file(s)")
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        corpus = prompts + [a for a in answers if a is not None]
        tokenizer = train_bpe(corpus, args.vocab_size)
    samples = build_samples(prompts, answers, tokenizer, args.max_seq_len)
    train, val = split_train_val(samples, args.val_ratio, args.seed)
    meta = write_dataset(Path(args.output), train, val, tokenizer,
                         {"max_seq_len": args.max_seq_len, "sources": [str(f) for f in files]},
                         args.format, args.shard_size, args.overwrite)
    print(f"prepared {args.output}: {meta['num_train']} train / {meta['num_val']} val samples from {len(files)} "
          f"file(s), vocab {meta['vocab_size']}")
    return 0


def cmd_synthetic(args) -> int:
    from .config import SyntheticConfig
    from .data import synthetic_samples
    from .tokenizer import CharTokenizer

    try:
        cfg = SyntheticConfig(max_digits=args.max_digits, ops=args.ops.split(","), seed=args.seed)
    except Exception as exc:  # pydantic error: keep it to one line
        raise HRMUserError(f"bad synthetic options: {str(exc).splitlines()[0]}") from None
    tok = CharTokenizer()
    train, val = synthetic_samples(cfg, tok, args.max_seq_len)
    meta = write_dataset(Path(args.output), train, val, tok, {"max_seq_len": args.max_seq_len, "sources": ["synthetic"]},
                         args.format, args.shard_size, args.overwrite)
    print(f"prepared {args.output}: {meta['num_train']} train / {meta['num_val']} val synthetic samples")
    return 0


# ---- merging ----------------------------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merge(chunks: list[Path], out: Path) -> dict:
    """Fold chunk datasets into `out` by moving files: JSONL splits are appended chunk by chunk with each source
    deleted right after, Arrow shards are renamed, so disk use never holds two copies of the data."""
    from .data import read_meta, split_files

    if len(chunks) < 1:
        raise HRMUserError("merge needs at least one chunk directory")
    metas = [read_meta(c) for c in chunks]
    tok_digest = _digest(chunks[0] / "tokenizer.json")
    for c, m in zip(chunks, metas):
        if _digest(c / "tokenizer.json") != tok_digest:
            raise HRMUserError(f"{c}: tokenizer differs from {chunks[0]}'s (prepare chunks with the same --tokenizer)")
        for key in ("vocab_size", "pad_id", "bos_id", "eos_id", "format"):
            if m.get(key) != metas[0].get(key):
                raise HRMUserError(f"{c}: meta.json {key}={m.get(key)!r} differs from {chunks[0]} ({metas[0].get(key)!r})")
    if out.exists() and any(out.iterdir()):
        raise HRMUserError(f"merge output {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    fmt = metas[0].get("format", "jsonl")
    counts = {"train": 0, "val": 0}
    shard_no = {"train": 0, "val": 0}
    shutil.copyfile(chunks[0] / "tokenizer.json", out / "tokenizer.json")
    for c, m in zip(chunks, metas):
        counts["train"] += m.get("num_train", 0)
        counts["val"] += m.get("num_val", 0)
        for split in ("train", "val"):
            for src in split_files(c, split):
                if fmt == "jsonl":
                    dst = out / f"{split}.jsonl"
                    if not dst.exists():
                        os.replace(src, dst)
                        continue
                    with dst.open("ab") as w, src.open("rb") as r:
                        shutil.copyfileobj(r, w, 1 << 20)
                    src.unlink()
                else:
                    os.replace(src, out / f"{split}-{shard_no[split]:05d}.arrow")
                    shard_no[split] += 1
        shutil.rmtree(c)
    meta = {**metas[0], "num_train": counts["train"], "num_val": counts["val"],
            "sources": sum((m.get("sources", []) for m in metas), [])}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def cmd_merge(args) -> int:
    meta = merge([Path(c) for c in args.chunks], Path(args.output))
    print(f"merged {len(args.chunks)} chunk(s) into {args.output}: {meta['num_train']} train / {meta['num_val']} val")
    return 0


# ---- CLI ----------------------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True)
    p.add_argument("--max-seq-len", "--max_seq_len", dest="max_seq_len", type=int, default=512)
    p.add_argument("--format", choices=["jsonl", "arrow"], default="jsonl")
    p.add_argument("--shard-size", "--shard_size", dest="shard_size", type=int, default=100_000,
                   help="rows per Arrow shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def build_parsers():
    build = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n\n")[0],
                                    epilog="subcommands: `prepare.py merge -h`, `prepare.py synthetic -h`")
    build.add_argument("--input", nargs="+", required=True, help="files or directories")
    _common(build)
    build.add_argument("--tokenizer", help="reuse this tokenizer.json (file or dir) instead of training a BPE")
    build.add_argument("--vocab-size", "--vocab_size", dest="vocab_size", type=int, default=8192)
    build.add_argument("--val-ratio", "--val_ratio", dest="val_ratio", type=float, default=0.01)
    build.add_argument("--max-files", "--max_files", dest="max_files", type=int)
    build.add_argument("--skip-files", "--skip_files", dest="skip_files", type=int, default=0,
                       help="skip the first N input files (with --max-files: prepare a corpus in chunks)")
    build.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=0,
                       help="threads for parallel encoding (0 = all cores)")
    build.add_argument("--text-field", "--text_field", dest="text_field", default="text")
    build.add_argument("--prompt-field", "--prompt_field", dest="prompt_field", default="prompt")
    build.add_argument("--response-field", "--response_field", dest="response_field", default="response")

    mrg = argparse.ArgumentParser(prog="prepare.py merge", description="merge chunk datasets (their files move)")
    mrg.add_argument("--output", required=True)
    mrg.add_argument("chunks", nargs="+")

    syn = argparse.ArgumentParser(prog="prepare.py synthetic", description="write the synthetic arithmetic set")
    _common(syn)
    syn.add_argument("--max-digits", "--max_digits", dest="max_digits", type=int, default=1)
    syn.add_argument("--ops", default="+", help="comma-separated subset of + - *")
    return build, mrg, syn


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    build, mrg, syn = build_parsers()
    try:
        if argv[:1] == ["merge"]:
            return cmd_merge(mrg.parse_args(argv[1:]))
        if argv[:1] == ["synthetic"]:
            return cmd_synthetic(syn.parse_args(argv[1:]))
        return cmd_build(build.parse_args(argv))
    except HRMUserError as exc:
        fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
