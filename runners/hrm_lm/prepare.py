"""Prepare an HRM-LM dataset directory from text or prompt/response files.

    prepare.py --input DATA... --output DIR [--tokenizer TOK] [--max-seq-len 512] [--val-ratio 0.01] ...
    prepare.py --source DIR --dest DIR ...          # the seed's spellings of --input/--output
    prepare.py merge --output DIR CHUNK_DIR...      # fold batch-prepared chunks into one dataset (moves files)
    prepare.py merge --batches DIR --output-dir DIR [--keep-chunks]     # the seed's merge_prepared_batches.py
    prepare.py normalize_qa --input QA --output OUT.jsonl --question-field P --answer-field P   # QA -> prompt/response
    prepare.py synthetic --output DIR               # the built-in arithmetic set as a dataset directory

Inputs: .jsonl, .json (a list, an object holding one, or one object per line), .parquet, .arrow (Arrow IPC file or
stream, e.g. a `datasets` cache). A record with prompt/response fields (dotted paths such as
`data.answers.text[0]`) becomes (encoder=prompt, decoder=response); a record with only a text field is cut into
windows of 2*max_seq_len tokens, the first half encoded, the second half decoded.
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

from runners.data.errors import DataError  # noqa: E402
from runners.hrm_lm.errors import HRMUserError, fail  # noqa: E402

EXTENSIONS = (".jsonl", ".json", ".parquet", ".arrow")
COLUMNS = ("encoder_ids", "decoder_input_ids", "labels")
# Written by prepare.py itself (or by `datasets`): never corpus files, even inside an input directory.
NOT_DATA = {"meta.json", "tokenizer.json", "state.json", "dataset_info.json", "dataset_dict.json"}
DEFAULT_ENCODE_BATCH = 1024


# ---- reading ----------------------------------------------------------------------------------------------------
def _inside(path: Path, out: Path | None) -> bool:
    """`path` is the output directory, lies in it, or in one of its temporary build directories. The seed writes
    `--dest SOURCE/processed`: a second run must not read the first run's output as corpus."""
    if out is None:
        return False
    for parent in (path, *path.parents):
        if parent == out or (parent.parent == out.parent and parent.name.startswith(out.name + ".tmp-")):
            return True
    return False


def list_inputs(paths: list[str], max_files: int | None, skip_files: int = 0, exclude: Path | None = None
                ) -> list[Path]:
    out = exclude.resolve() if exclude is not None else None
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in EXTENSIONS
                            and f.name not in NOT_DATA and not _inside(f.resolve(), out))
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
    """Through the shared readers (runners/data/readers.py). A `.json` holding one object per line (what this
    script always accepted) is read as JSONL when it does not parse as one document."""
    from runners.data.readers import iter_records

    if path.suffix == ".json":
        try:
            return list(iter_records(path, "json"))
        except DataError:
            path_fmt = "jsonl"
    else:
        path_fmt = {".jsonl": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}[path.suffix]
    return list(iter_records(path, path_fmt))


def to_pairs(records: list[dict], args, source: Path) -> tuple[list[str], list[str | None]]:
    """(encoder texts, answer texts or None for plain text). QA records lacking an answer (SQuAD v2's
    unanswerable questions) are dropped and counted in `args.skipped`."""
    from runners.data.normalize_qa import qa_fieldmap, qa_pairs

    first = records[0] if records else {}
    fm = qa_fieldmap(args.prompt_field, args.response_field, args.context_field, args.prompt_template,
                     source=str(source), flags=("--prompt-field", "--response-field", "--context-field"))
    # Look past the first record: a SQuAD v2 file may well start with an unanswerable question.
    if any(fm.has(r, args.prompt_field) and fm.has(r, args.response_field) for r in records[:100]):
        stats = {"read": 0, "skipped": 0}
        pairs = list(qa_pairs(records, fm, stats))
        args.skipped = getattr(args, "skipped", 0) + stats["skipped"]
        return [p for p, _ in pairs], [a for _, a in pairs]
    if isinstance(first, dict) and args.text_field in first:
        return [str(r[args.text_field]) for r in records], [None] * len(records)
    keys = sorted(first)[:8] if isinstance(first, dict) else type(first).__name__
    raise HRMUserError(f"{source}: records need '{args.prompt_field}'+'{args.response_field}' or '{args.text_field}' "
                       f"fields (found {keys}); see --prompt-field/--response-field/--text-field")


# ---- building ---------------------------------------------------------------------------------------------------
def text_windows(ids: list[int], max_len: int):
    for start in range(0, len(ids), 2 * max_len):
        chunk = ids[start : start + 2 * max_len]
        if len(chunk) >= 2:
            cut = min(len(chunk) // 2, max_len)
            yield chunk[:cut], chunk[cut:]


def encode_batched(tokenizer, texts: list[str], batch_size: int) -> list[list[int]]:
    """encode_batch in slices: the Rust side holds one slice's encodings (with offsets etc.) at a time."""
    out: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        out += tokenizer.encode_batch(texts[start : start + batch_size])
    return out


def build_samples(prompts, answers, tokenizer, max_len: int, batch_size: int = DEFAULT_ENCODE_BATCH) -> list[dict]:
    from .data import make_sample

    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    enc = encode_batched(tokenizer, prompts, batch_size)
    texts_idx = [i for i, a in enumerate(answers) if a is not None]
    ans_ids = dict(zip(texts_idx, encode_batched(tokenizer, [answers[i] for i in texts_idx], batch_size)))
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


def tokenizer_to_train(tokenizer: str | None, output: Path) -> bool:
    """The seed reuses `--tokenizer` when it exists and trains one otherwise; its own example points it into the
    output (`--dest X/processed --tokenizer X/processed/tokenizer.json`). So: a missing tokenizer inside the
    output is trained (and lands there); a missing one anywhere else is a typo and an error."""
    if tokenizer is None:
        return True
    path = Path(tokenizer)
    if path.exists():
        return False
    if _inside(path.resolve(), output.resolve()):
        return True
    raise HRMUserError(f"tokenizer not found: {path} (leave --tokenizer out, or point it into --output/--dest, "
                       f"to train a new one)")


def cmd_build(args) -> int:
    if args.max_seq_len < 2:
        raise HRMUserError("--max-seq-len must be >= 2")
    if not 0 <= args.val_ratio < 1:
        raise HRMUserError("--val-ratio must be in [0, 1)")
    if args.encode_batch_size < 1:
        raise HRMUserError("--tokenizer-batch-size must be >= 1")
    if args.num_workers:
        # tokenizers reads this when its thread pool starts: it bounds the parallel encode_batch.
        os.environ["RAYON_NUM_THREADS"] = str(args.num_workers)
    from .tokenizer import load_tokenizer, train_bpe

    output = Path(args.output)
    if output.exists() and any(output.iterdir()) and not args.overwrite:  # before minutes of reading and training
        raise HRMUserError(f"output {output} exists and is not empty (pass --overwrite or pick another --output)")
    train_new = tokenizer_to_train(args.tokenizer, output)
    files = list_inputs(args.input, args.max_files, args.skip_files, exclude=output)
    prompts, answers = [], []
    for f in files:
        p, a = to_pairs(read_records(f), args, f)
        prompts += p
        answers += a
    if not prompts:
        raise HRMUserError(f"no records in {len(files)} input file(s)")
    if train_new:
        corpus = prompts + [a for a in answers if a is not None]
        tokenizer = train_bpe(corpus, args.vocab_size)
    else:
        tokenizer = load_tokenizer(args.tokenizer)
    samples = build_samples(prompts, answers, tokenizer, args.max_seq_len, args.encode_batch_size)
    train, val = split_train_val(samples, args.val_ratio, args.seed)
    meta = write_dataset(output, train, val, tokenizer,
                         {"max_seq_len": args.max_seq_len, "sources": [str(f) for f in files]},
                         args.format, args.shard_size, args.overwrite)
    skipped = getattr(args, "skipped", 0)
    print(f"prepared {args.output}: {meta['num_train']} train / {meta['num_val']} val samples from {len(files)} "
          f"file(s), vocab {meta['vocab_size']} ({'trained' if train_new else 'reused'} tokenizer)"
          + (f", skipped {skipped} incomplete QA records (no question, answer or context)" if skipped else ""))
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


def merge(chunks: list[Path], out: Path, keep_chunks: bool = False) -> dict:
    """Fold chunk datasets into `out` by moving files: JSONL splits are appended chunk by chunk with each source
    deleted right after, Arrow shards are renamed, so disk use never holds two copies of the data.
    `keep_chunks` copies instead and leaves the chunks as they were (then the disk does hold two copies)."""
    from .data import read_meta, split_files

    if len(chunks) < 1:
        raise HRMUserError("merge needs at least one chunk directory")
    if any(_inside(out.resolve(), c.resolve()) for c in chunks):
        raise HRMUserError(f"merge output {out} lies inside a chunk directory; pick a path outside the chunks")
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
                    if not dst.exists() and not keep_chunks:
                        os.replace(src, dst)
                        continue
                    with dst.open("ab") as w, src.open("rb") as r:
                        shutil.copyfileobj(r, w, 1 << 20)
                    if not keep_chunks:
                        src.unlink()
                else:
                    dst = out / f"{split}-{shard_no[split]:05d}.arrow"
                    if keep_chunks:
                        shutil.copyfile(src, dst)
                    else:
                        os.replace(src, dst)
                    shard_no[split] += 1
        if not keep_chunks:
            shutil.rmtree(c)
    meta = {**metas[0], "num_train": counts["train"], "num_val": counts["val"],
            "sources": sum((m.get("sources", []) for m in metas), [])}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def batch_chunks(batches: str) -> list[Path]:
    """The seed's `--batches DIR`: every prepared dataset (a folder with meta.json) directly under DIR, by name."""
    root = Path(batches)
    if not root.is_dir():
        raise HRMUserError(f"--batches {root}: not a directory (it should hold the prepared chunk folders)")
    chunks = sorted(d for d in root.iterdir() if (d / "meta.json").is_file())
    if not chunks:
        raise HRMUserError(f"--batches {root}: no prepared chunk (a folder with meta.json) in it; prepare chunks "
                           f"with prepare.py --output {root}/<name> first")
    return chunks


def cmd_merge(args) -> int:
    if args.output is None:
        raise HRMUserError("merge needs --output DIR (or the seed's --output-dir DIR)")
    chunks = [Path(c) for c in args.chunks] + (batch_chunks(args.batches) if args.batches else [])
    if not chunks:
        raise HRMUserError("merge needs chunk directories: list them, or pass --batches DIR holding them")
    meta = merge(chunks, Path(args.output), args.keep_chunks)
    kept = " (chunks kept)" if args.keep_chunks else ""
    print(f"merged {len(chunks)} chunk(s) into {args.output}: {meta['num_train']} train / {meta['num_val']} val"
          f"{kept}")
    return 0


def cmd_normalize_qa(args) -> int:
    from runners.data.normalize_qa import run

    return run(args)


# ---- CLI ----------------------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "--dest", dest="output", required=True, help="dataset directory to write (--dest: "
                                                                            "the seed's spelling)")
    p.add_argument("--max-seq-len", "--max_seq_len", dest="max_seq_len", type=int, default=512)
    p.add_argument("--format", choices=["jsonl", "arrow"], default="jsonl")
    p.add_argument("--shard-size", "--shard_size", dest="shard_size", type=int, default=100_000,
                   help="rows per Arrow shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def build_parsers():
    build = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n\n")[0],
                                    epilog="subcommands: `prepare.py merge -h`, `prepare.py normalize_qa -h`, "
                                           "`prepare.py synthetic -h`")
    build.add_argument("--input", "--source", dest="input", nargs="+", required=True,
                       help="files or directories (--source: the seed's spelling)")
    _common(build)
    build.add_argument("--tokenizer", help="reuse this tokenizer.json (file or dir) instead of training a BPE")
    build.add_argument("--vocab-size", "--vocab_size", dest="vocab_size", type=int, default=8192)
    build.add_argument("--val-ratio", "--val_ratio", dest="val_ratio", type=float, default=0.01)
    build.add_argument("--max-files", "--max_files", dest="max_files", type=int)
    build.add_argument("--skip-files", "--skip_files", dest="skip_files", type=int, default=0,
                       help="skip the first N input files (with --max-files: prepare a corpus in chunks)")
    build.add_argument("--num-workers", "--num_workers", "--tokenizer-num-threads", "--tokenizer_num_threads",
                       dest="num_workers", type=int, default=0, help="threads for parallel encoding (0 = all cores)")
    build.add_argument("--tokenizer-batch-size", "--tokenizer_batch_size", dest="encode_batch_size", type=int,
                       default=DEFAULT_ENCODE_BATCH,
                       help=f"texts per encode_batch call (default {DEFAULT_ENCODE_BATCH})")
    build.add_argument("--text-field", "--text_field", dest="text_field", default="text")
    build.add_argument("--prompt-field", "--prompt_field", "--question-field", dest="prompt_field", default="prompt",
                       help="dotted path, e.g. data.question (default: prompt)")
    build.add_argument("--response-field", "--response_field", "--answer-field", dest="response_field",
                       default="response", help="dotted path, e.g. 'data.answers.text[0]' (default: response)")
    build.add_argument("--context-field", "--context_field", dest="context_field",
                       help="dotted path of a passage for the prompt, e.g. data.context")
    build.add_argument("--prompt-template", "--prompt_template", dest="prompt_template",
                       help="e.g. '{question}\\nContext: {context}' ({prompt}/{question}, {context}, any field path)")

    mrg = argparse.ArgumentParser(prog="prepare.py merge",
                                  description="merge chunk datasets (their files move; --keep-chunks copies)")
    mrg.add_argument("--output", "--output-dir", "--output_dir", dest="output",
                     help="the merged dataset directory (--output-dir: the seed's spelling)")
    mrg.add_argument("--batches", help="a directory whose subfolders are the chunks (the seed's spelling)")
    mrg.add_argument("--keep-chunks", "--keep_chunks", dest="keep_chunks", action="store_true",
                     help="copy the data and leave the chunks in place")
    mrg.add_argument("chunks", nargs="*", help="prepared chunk directories, merged in this order")

    from runners.data.normalize_qa import add_arguments

    nqa = argparse.ArgumentParser(prog="prepare.py normalize_qa",
                                  description="QA records (.json/.jsonl/.parquet/.arrow) -> prompt/response JSONL "
                                              "for prepare.py (the seed's normalize_qa_dataset.py)")
    add_arguments(nqa)

    syn = argparse.ArgumentParser(prog="prepare.py synthetic", description="write the synthetic arithmetic set")
    _common(syn)
    syn.add_argument("--max-digits", "--max_digits", dest="max_digits", type=int, default=1)
    syn.add_argument("--ops", default="+", help="comma-separated subset of + - *")
    return build, mrg, syn, nqa


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    build, mrg, syn, nqa = build_parsers()
    try:
        if argv[:1] == ["merge"]:
            return cmd_merge(mrg.parse_args(argv[1:]))
        if argv[:1] == ["synthetic"]:
            return cmd_synthetic(syn.parse_args(argv[1:]))
        if argv[:1] in (["normalize_qa"], ["normalize-qa"]):
            return cmd_normalize_qa(nqa.parse_args(argv[1:]))
        return cmd_build(build.parse_args(argv))
    except (HRMUserError, DataError) as exc:
        fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
