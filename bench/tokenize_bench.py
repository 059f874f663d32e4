"""Tokenize benchmark: runners/tokenize_run.py vs a plain `datasets.map(batched=True, num_proc=N)` pipeline.

Both read the same generated JSONL corpus with the same tokenizer, append EOS to every document, pack the
stream into fixed blocks and write the blocks to disk (the usual run_clm recipe on the datasets side:
load_dataset("json") -> map(tokenize) -> map(group_texts) -> save_to_disk). One run each, end to end, in
fresh processes; peak RSS is the peak of the summed RSS of the whole process tree, sampled every 50 ms.

    python bench/tokenize_bench.py                      # ~200 MB corpus, all cores
    python bench/tokenize_bench.py --size-mb 50 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_corpus(path: Path, size_mb: float, seed: int = 0) -> int:
    """Zipf-distributed pseudo-words in documents of log-normal length; returns the document count."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syll = ["ka", "to", "ri", "ne", "sa", "lo", "mi", "pu", "de", "ga", "an", "el", "or", "us", "th", "st"]
    vocab = sorted({"".join(rng.choice(syll, size=rng.integers(1, 5))) for _ in range(20000)})
    vocab = np.array(vocab + [",", ".", "the", "of", "and", "a", "in"])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    target = int(size_mb * 1e6)
    written = docs = 0
    with open(path, "w") as f:
        while written < target:
            lens = np.clip(rng.lognormal(5.3, 0.8, size=500).astype(int), 5, 5000)
            words = vocab[rng.choice(len(vocab), size=int(lens.sum()), p=p)]
            off = 0
            lines = []
            for n in lens:
                lines.append(json.dumps({"text": " ".join(words[off: off + n])}) + "\n")
                off += n
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)
            docs += len(lines)
    return docs


def train_tokenizer(corpus: Path, out: Path, vocab_size: int) -> Path:
    from runners.data.tokenizer_io import train_bpe

    def sample():
        with open(corpus) as f:
            for i, line in enumerate(f):
                if i >= 20000:
                    return
                yield json.loads(line)["text"]

    return train_bpe(sample(), vocab_size, out)


def hf_pipeline(corpus: str, tok_dir: str, out: str, workers: int, block_size: int, cache: str) -> None:
    """The baseline, run in its own process: what a datasets user writes for CPT packing."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos = tok.eos_token_id
    ds = load_dataset("json", data_files=corpus, split="train", cache_dir=cache)

    def tokenize(batch):
        ids = tok(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    ds = ds.map(tokenize, batched=True, num_proc=workers, remove_columns=ds.column_names)

    def group(batch):
        flat = [t for x in batch["input_ids"] for t in x]
        n = len(flat) // block_size * block_size
        return {"input_ids": [flat[i: i + block_size] for i in range(0, n, block_size)]}

    packed = ds.map(group, batched=True, batch_size=1000, num_proc=workers)
    packed.save_to_disk(out)
    done = time.time()
    import pyarrow.compute as pc

    # Checked after the clock stops: the token count before packing must match ours exactly.
    tokens = pc.sum(pc.list_value_length(ds.data.column("input_ids"))).as_py()
    print(json.dumps({"blocks": len(packed), "tokens": tokens, "t_done": done}))


class TreeRss:
    """Peak of the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every_s: float = 0.05):
        import psutil

        self.proc, self.every, self.peak = psutil.Process(pid), every_s, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def timed(cmd: list[str], env: dict) -> tuple[float, int, str]:
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    out, err = proc.communicate()
    end = time.time()
    lines = out.strip().splitlines()
    if lines and lines[-1].startswith("{") and "t_done" in lines[-1]:
        end = json.loads(lines[-1])["t_done"]
    wall = end - t0
    peak = rss.stop()
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return wall, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=200.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--format", default="bin", choices=["bin", "arrow"], help="our output format")
    ap.add_argument("--workdir", help="keep files here (default: a temp dir, removed)")
    ap.add_argument("--_hf", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._hf:
        corpus, tok, out, workers, block, cache = a._hf
        hf_pipeline(corpus, tok, out, int(workers), int(block), cache)
        return

    work = Path(a.workdir or tempfile.mkdtemp(prefix="tokbench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / "corpus.jsonl"
        t = time.monotonic()
        n_docs = make_corpus(corpus, a.size_mb)
        size = corpus.stat().st_size
        print(f"corpus: {size / 1e6:.0f} MB, {n_docs:,} docs ({time.monotonic() - t:.0f}s to generate)")
        t = time.monotonic()
        tok = train_tokenizer(corpus, work / "tokenizer", a.vocab_size)
        print(f"tokenizer: byte-level BPE, vocab {a.vocab_size}, trained on 20k docs ({time.monotonic() - t:.0f}s)")
        env = {**os.environ, "DATAPOOL_ROOT": str(work / "dp"), "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1"}

        ours_out = work / "ours"
        ours_wall, ours_rss, _ = timed(
            [sys.executable, "runners/tokenize_run.py", "--mode", "cpt", "--input", str(corpus),
             "--tokenizer", str(tok), "--block-size", str(a.block_size), "--workers", str(a.workers), "--out", str(ours_out),
             "--format", a.format, "--force"], env)
        meta = json.loads((ours_out / "meta.json").read_text())

        hf_out = work / "hf"
        hf_wall, hf_rss, hf_stdout = timed(
            [sys.executable, __file__, "--_hf", str(corpus), str(tok), str(hf_out), str(a.workers),
             str(a.block_size), str(work / "hf_cache")], env)
        hf = json.loads(hf_stdout.strip().splitlines()[-1])
        tokens = meta["tokens"]
        if hf["tokens"] != tokens:
            sys.exit(f"outputs differ: datasets tokenized {hf['tokens']} tokens, runners/tokenize_run.py {tokens}")
        rows = [
            ("runners/tokenize_run.py", ours_wall, ours_rss),
            (f"datasets.map(num_proc={a.workers})", hf_wall, hf_rss),
        ]
        print(f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, python {platform.python_version()}")
        print(f"corpus {size / 1e6:.0f} MB, {meta['docs']:,} docs, {tokens:,} tokens, {meta['blocks']:,} blocks "
              f"of {a.block_size} (datasets: {hf['blocks']:,}: group_texts drops every batch's remainder); "
              f"workers {a.workers}; vocab {meta['vocab_size']}; our format {a.format}\n")
        print("| pipeline | wall s | docs/s | tokens/s | peak RSS (tree) |")
        print("|---|---:|---:|---:|---:|")
        for name, wall, rss in rows:
            print(f"| {name} | {wall:.1f} | {meta['docs'] / wall:,.0f} | {tokens / wall:,.0f} | {rss / 2**20:,.0f} MiB |")
        print(f"| **ratio** (ours / datasets) | | **{hf_wall / ours_wall:.2f}x** | **{hf_wall / ours_wall:.2f}x** "
              f"| **{ours_rss / hf_rss:.2f}x** |")
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
