"""The tokenize job: sources -> (mixture draw) -> batched encoding in worker processes -> shards + meta.json.

Modes dpo and rlaif (ROW_MODES) run the same job without a tokenizer: the mixture's draw, mapped to rows
({prompt, chosen, rejected} or {prompt[, answer]}), is written as JSONL to data/prepared/<mode>/<name>/
{train,validation}.jsonl: the seed's "prepared" data, cached by the same fingerprint as a tokenized output.

Everything the job will need is checked before anything is written; the output is built in a temp dir next
to its final place and renamed in at the end, so a failed run leaves nothing behind and readers never see a
half-written dataset.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runners.data import mixture as mx
from runners.data.errors import DataError
from runners.data.fields import ROW_MODES, FieldMap
from runners.data.readers import FORMATS, iter_raw, to_record

FORMAT_VERSION = 1
MODES = ("cpt", "sft", *ROW_MODES)
OUT_FORMATS = {"cpt": ("bin", "arrow", "parquet"), "sft": ("arrow", "parquet"), "dpo": ("jsonl",),
               "rlaif": ("jsonl",)}


def output_dir(exp_dir: Path, mode: str, name: str) -> Path:
    """Where a mode's output lands: tokens under data/tokenized/, rows (dpo, rlaif) under data/prepared/."""
    return exp_dir / "data" / ("prepared" if mode in ROW_MODES else "tokenized") / mode / name


@dataclass
class TokenizeConfig:
    mode: str = "cpt"
    input: str | None = None
    input_format: str | None = None
    mixture: str | dict | None = None
    name: str | None = None
    out: str | None = None
    tokenizer: str | None = None
    train_tokenizer: bool = False
    vocab_size: int = 32000
    block_size: int = 2048
    max_length: int = 2048
    add_bos: bool = False
    format: str | None = None
    fields: dict = field(default_factory=dict)
    validation_fraction: float = 0.0
    seed: int = 0
    workers: int = 0  # 0 = all cores
    batch_docs: int = 256
    shard_tokens: int = 1 << 24
    shard_rows: int = 20000
    force: bool = False
    progress_interval_s: float = 10.0

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizeConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise DataError(f"tokenize config: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise DataError(f"--mode {self.mode!r} unknown; use one of {', '.join(MODES)}")
        self.format = self.format or OUT_FORMATS[self.mode][0]
        if self.format not in OUT_FORMATS[self.mode]:
            raise DataError(f"--format {self.format!r} not available for {self.mode}; "
                            f"use one of {', '.join(OUT_FORMATS[self.mode])}")
        if self.input_format not in (None, "auto", *FORMATS):
            raise DataError(f"--input-format {self.input_format!r} unknown; use one of {', '.join(FORMATS)}")
        for key in ("block_size", "max_length", "batch_docs", "shard_tokens", "shard_rows", "vocab_size"):
            if int(getattr(self, key)) <= 0:
                raise DataError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.workers < 0:
            raise DataError(f"--workers {self.workers} must be >= 0 (0 = all cores)")
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise DataError(f"--validation-fraction {self.validation_fraction} must be in [0, 1)")
        if self.input and self.mixture:
            raise DataError("give either --input or --mixture, not both")
        if self.mode in ROW_MODES and self.train_tokenizer:
            raise DataError(f"mode {self.mode} writes rows, not tokens: drop --train-tokenizer")
        if self.train_tokenizer and self.tokenizer:
            raise DataError("give either --tokenizer DIR or --train-tokenizer, not both")


def _resolve(p: str, exp_dir: Path, under: Path | None = None) -> Path:
    """Absolute as is; relative: the cwd if it exists there, else under `under` (the raw dir) or EXPERIMENT_DIR."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    for base in (under, exp_dir):
        if base is not None and (base / path).exists():
            return (base / path).resolve()
    return path.resolve()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (cgroups/taskset), not the host's count
    except AttributeError:
        return os.cpu_count() or 1


def _worker_init() -> None:
    import signal

    # The parent turns SIGTERM into a clean exit (temp dir removed); workers just die with the pool.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _remove_stale_temps(out: Path) -> None:
    """Temp dirs of runs that were SIGKILLed (their pid is gone); a live run's temp dir is left alone."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            if pid == os.getpid():
                raise ProcessLookupError
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


class TokenizeJob:
    def __init__(self, cfg: TokenizeConfig, env: dict | None = None, log=print):
        from launcher.layout import experiment_dir

        cfg.validate()
        self.cfg, self.log = cfg, log
        self.exp_dir = experiment_dir(env)
        self.raw_dir = self.exp_dir / "data" / "raw" / cfg.mode
        self.mix = self._load_sources()
        self.out = Path(cfg.out).resolve() if cfg.out else output_dir(self.exp_dir, cfg.mode, self.mix.name)
        self.tok_dir = self._tokenizer_dir()
        self._check_first_records()

    # ---- checks (nothing written) ----
    def _load_sources(self) -> mx.Mixture:
        cfg = self.cfg
        if cfg.mixture is not None:
            spec = cfg.mixture
            default_name = "mixture"
            if not isinstance(spec, dict):
                mpath = Path(str(spec))
                if not mpath.is_file():
                    raise DataError(f"mixture file {mpath} not found; pass --mixture configs/data/.../NAME.yaml")
                import yaml

                try:
                    spec = yaml.safe_load(mpath.read_text())
                except yaml.YAMLError as e:
                    raise DataError(f"mixture file {mpath} is not valid YAML: {str(e).splitlines()[0]}") from None
                default_name = mpath.stem
            base = mpath.resolve().parent if not isinstance(cfg.mixture, dict) else None
            mix = mx.load_mixture(spec, self.raw_dir, cfg.name or default_name, base_dir=base, mode=cfg.mode)
            if cfg.name:
                mix.name = cfg.name
            return mix
        src = _resolve(cfg.input, self.exp_dir, self.raw_dir) if cfg.input else self.raw_dir
        fmt = None if cfg.input_format in (None, "auto") else cfg.input_format
        name = cfg.name or (src.stem if cfg.input else "default")
        label = src.stem if cfg.input else "input"  # not the output name: it is part of the fingerprint
        return mx.single_source(src, FieldMap.from_config(cfg.fields, source=label, mode=cfg.mode), fmt,
                                float(cfg.validation_fraction), int(cfg.seed), name)

    def _tokenizer_dir(self) -> Path | None:
        from runners.data.tokenizer_io import check_tokenizer_dir

        if self.cfg.train_tokenizer or self.cfg.mode in ROW_MODES:
            return None  # trained by the job, or not needed (rows)
        if self.cfg.tokenizer:
            return check_tokenizer_dir(_resolve(self.cfg.tokenizer, self.exp_dir))
        base = self.exp_dir / "model" / "base"
        if (base / "tokenizer.json").is_file():
            return base
        raise DataError(f"no tokenizer: pass --tokenizer DIR (a local HF model dir), put one in {base}, "
                        "or use --train-tokenizer --vocab-size N")

    def _check_first_records(self) -> None:
        """Map the first record of every source now, so a wrong field mapping fails before any work."""
        for s in self.mix.sources:
            if s.share == 0:
                continue
            for f in s.files:
                first = next(iter(iter_raw(f, s.fmt)), None)
                if first is None:
                    continue
                rec = to_record(first)
                self._view(s.fields)(rec)
                break

    def _view(self, fields: FieldMap):
        return {"cpt": fields.text, "sft": fields.messages, "dpo": fields.pair, "rlaif": fields.prompt_row}[
            self.cfg.mode]

    # ---- fingerprint / no-op ----
    def fingerprint(self) -> str:
        from runners.data.tokenizer_io import tokenizer_fingerprint

        cfg = asdict(self.cfg)
        for volatile in ("workers", "batch_docs", "force", "progress_interval_s", "out", "input", "mixture", "name"):
            cfg.pop(volatile)
        payload = {
            "format_version": FORMAT_VERSION,
            "config": cfg,
            "mixture": self.mix.spec,
            "tokenizer": tokenizer_fingerprint(self.tok_dir) if self.tok_dir else "train",
            "inputs": [[s.name, [[f.name, f.stat().st_size, _sha256_file(f)] for f in s.files]]
                       for s in self.mix.sources],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def up_to_date(self, fp: str) -> bool:
        meta = self.out / "meta.json"
        if self.cfg.force or not meta.is_file():
            return False
        try:
            return json.loads(meta.read_text()).get("fingerprint") == fp
        except ValueError:
            return False

    # ---- run ----
    def run(self) -> dict:
        fp = self.fingerprint()
        if self.up_to_date(fp):
            self.log(f"up to date: {self.out} (same inputs and config; --force to rebuild)")
            return json.loads((self.out / "meta.json").read_text())
        mx.plan(self.mix)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.out)
        tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = self._build(tmp, fp)
            if self.out.exists():
                old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
                self.out.rename(old)
                tmp.rename(self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(self.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.cfg.mode in ROW_MODES:
            self.log(f"wrote {self.out}: " + ", ".join(f"{n:,} {split} rows" for split, n in meta["splits"].items()))
            return meta
        self.log(f"wrote {self.out}: {meta['docs']:,} docs, {meta['tokens']:,} tokens"
                 + (f", {meta['blocks']:,} blocks of {self.cfg.block_size}" if self.cfg.mode == "cpt" else "")
                 + f" ({meta['docs_per_s']:,.0f} docs/s, {meta['tokens_per_s']:,.0f} tokens/s)")
        return meta

    def _train_tokenizer(self, tmp: Path) -> Path:
        from runners.data.tokenizer_io import train_bpe

        self.log(f"training a byte-level BPE tokenizer (vocab {self.cfg.vocab_size}) on the raw data")
        cpt = self.cfg.mode == "cpt"

        def texts():
            for i, raw, _ in mx.draw(self.mix):
                rec = to_record(raw)
                fm = self.mix.sources[i].fields
                yield fm.text(rec) if cpt else "\n".join(m["content"] for m in fm.messages(rec))

        path = train_bpe(texts(), self.cfg.vocab_size, tmp / "tokenizer")
        for s in self.mix.sources:  # the draw above counted; the real pass counts again
            s.counts = {"train": 0, "validation": 0}
        return path

    def _build(self, tmp: Path, fp: str) -> dict:
        from runners.data import encode
        from runners.data.progress import Progress
        from runners.data.tokenizer_io import load_fast, load_hf_tokenizer, special_ids, tokenizer_fingerprint
        from runners.data.writers import CptPacker, SftWriter, token_dtype

        cfg = self.cfg
        if cfg.mode in ROW_MODES:
            return self._build_rows(tmp, fp)
        tok_dir = self._train_tokenizer(tmp) if cfg.train_tokenizer else self.tok_dir
        light = load_fast(tok_dir) if cfg.mode == "cpt" else None
        if light is not None:
            backend, ids, vocab = light
            tok, tok_class = None, "tokenizers.Tokenizer"
        else:
            tok = load_hf_tokenizer(tok_dir)
            backend, ids, vocab, tok_class = tok.backend_tokenizer, special_ids(tok), len(tok), type(tok).__name__
        if cfg.mode == "sft" and not getattr(tok, "chat_template", None):
            raise DataError(f"tokenizer in {tok_dir} has no chat template; SFT needs one (or use --train-tokenizer)")
        fieldmaps = [s.fields for s in self.mix.sources]
        encode.init(backend, fieldmaps, cfg.mode, ids, add_bos=cfg.add_bos, max_length=cfg.max_length,
                    hf_tokenizer=tok)

        writers: dict = {}

        def writer(split: str):
            if split not in writers:
                if cfg.mode == "cpt":
                    writers[split] = CptPacker(tmp / split, cfg.block_size,
                                               max(1, cfg.shard_tokens // cfg.block_size), cfg.format, vocab)
                else:
                    writers[split] = SftWriter(tmp / split, cfg.shard_rows, cfg.format)
            return writers[split]

        writer("train")
        total = sum(s.take for s in self.mix.sources) if self.mix.planned else None
        workers = cfg.workers or _usable_cores()
        progress = Progress(total, f"tokenize {cfg.mode} {self.mix.name}", cfg.progress_interval_s)
        counters = collections.Counter()

        def consume(split: str, n_docs: int, result) -> None:
            w = writer(split)
            if cfg.mode == "cpt":
                flat, docs, empty = result
                w.add(flat)
                counters["docs"] += docs
                counters["empty_docs"] += empty
                progress.update(docs + empty, len(flat))
            else:
                out_ids, out_labels, truncated = result
                ntok = 0
                for a, b in zip(out_ids, out_labels):
                    w.add(a, b)
                    ntok += len(a)
                counters["docs"] += len(out_ids)
                counters["truncations"] += truncated
                progress.update(len(out_ids), ntok)

        t0 = time.monotonic()
        batches = self._batches()
        if workers == 1:
            for split, batch in batches:
                consume(split, len(batch), encode.encode_batch(batch))
        else:
            import multiprocessing as mp

            # fork: workers inherit the loaded tokenizer and field maps; nothing heavy is pickled per task.
            ctx = mp.get_context("fork")
            inflight: collections.deque = collections.deque()
            # A bounded window instead of Pool.imap: imap drains the whole input iterator into its queue,
            # which on a corpus larger than RAM is exactly what must not happen.
            window = workers * 4
            with ctx.Pool(workers, initializer=_worker_init) as pool:
                for split, batch in batches:
                    inflight.append((split, len(batch), pool.apply_async(encode.encode_batch, (batch,))))
                    if len(inflight) >= window:
                        s, n, r = inflight.popleft()
                        consume(s, n, r.get())
                while inflight:
                    s, n, r = inflight.popleft()
                    consume(s, n, r.get())
        progress.close()
        elapsed = time.monotonic() - t0

        splits = {name: w.close() for name, w in writers.items()}
        tokens = sum(s["tokens"] for s in splits.values())
        meta = {
            "format_version": FORMAT_VERSION,
            "mode": cfg.mode,
            "name": self.mix.name,
            "format": cfg.format,
            "fingerprint": fp,
            "tokenizer": {
                "path": self._tokenizer_ref(tok_dir),
                "trained": bool(cfg.train_tokenizer),
                "fingerprint": tokenizer_fingerprint(tok_dir),
                "class": tok_class,
            },
            "vocab_size": vocab,
            **ids,
            "docs": counters["docs"],
            "empty_docs": counters["empty_docs"],
            "tokens": tokens,
            "truncations": counters["truncations"],
            "splits": splits,
            "workers": workers,
            "elapsed_s": round(elapsed, 3),
            "docs_per_s": counters["docs"] / max(elapsed, 1e-9),
            "tokens_per_s": tokens / max(elapsed, 1e-9),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if cfg.mode == "cpt":
            meta.update(block_size=cfg.block_size, add_bos=cfg.add_bos,
                        dtype=token_dtype(vocab).__name__ if cfg.format == "bin" else "int32",
                        blocks=sum(s["blocks"] for s in splits.values()))
        else:
            meta.update(max_length=cfg.max_length)
        manifest = mx.manifest(self.mix)
        meta["sources"] = manifest["sources"]
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        (tmp / "mixture_manifest.json").write_text(json.dumps(manifest, indent=2))
        return meta

    def _build_rows(self, tmp: Path, fp: str) -> dict:
        """dpo/rlaif: the mixture's draw, each record mapped to a row, as {train,validation}.jsonl."""
        files, counts = {}, collections.Counter()
        try:
            for i, raw, split in mx.draw(self.mix):
                row = self._view(self.mix.sources[i].fields)(to_record(raw))
                if split not in files:
                    files[split] = open(tmp / f"{split}.jsonl", "w")
                files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[split] += 1
        finally:
            for f in files.values():
                f.close()
        if not counts["train"]:
            raise DataError(f"mixture {self.mix.name}: the draw left no training rows; add data or lower "
                            "validation_fraction")
        manifest = mx.manifest(self.mix)
        meta = {"format_version": FORMAT_VERSION, "mode": self.cfg.mode, "name": self.mix.name, "format": "jsonl",
                "fingerprint": fp, "docs": sum(counts.values()), "splits": dict(counts),
                "sources": manifest["sources"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        (tmp / "mixture_manifest.json").write_text(json.dumps(manifest, indent=2))
        return meta

    def _tokenizer_ref(self, tok_dir: Path) -> str:
        """Relative to the output dir when inside the experiment, so it resolves wherever the datapool lands."""
        if self.cfg.train_tokenizer:
            return "tokenizer"
        tok_dir = tok_dir.resolve()
        if tok_dir.is_relative_to(self.exp_dir):
            return os.path.relpath(tok_dir, self.out)
        return str(tok_dir)

    def _batches(self):
        """Group the draw into per-split batches, keeping each split's record order."""
        size = self.cfg.batch_docs
        pending: dict[str, list] = {}
        for i, raw, split in mx.draw(self.mix):
            b = pending.setdefault(split, [])
            b.append((i, raw))
            if len(b) >= size:
                yield split, b
                pending[split] = []
        for split, b in pending.items():
            if b:
                yield split, b
