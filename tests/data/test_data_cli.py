"""runners/tokenize_run.py as a script: bad inputs exit 2 with one `error:` line and write nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_helpers import make_docs, tree, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _script(*args, env):
    return subprocess.run([sys.executable, "runners/tokenize_run.py", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(exp):
    return {**os.environ, "DATAPOOL_ROOT": str(exp.parent.parent), "OMP_NUM_THREADS": "1"}


def test_script_runs_with_runners_dir_first_on_sys_path(exp, env, tok_dir):
    """`python runners/tokenize_run.py` puts runners/ first on sys.path, where this file would shadow the stdlib
    `tokenize` (imported by inspect/linecache, i.e. by transformers and every traceback)."""
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(20)])
    r = _script("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 8, "--workers", 2, env=env)
    assert r.returncode == 0, r.stderr
    assert (exp / "data/tokenized/cpt/default/meta.json").is_file()
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, runpy; sys.argv=['runners/tokenize_run.py', '--help']; sys.path.insert(0, 'runners');"
         "import contextlib, io\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    try: runpy.run_path('runners/tokenize_run.py', run_name='__main__')\n"
         "    except SystemExit: pass\n"
         "import tokenize, inspect; print(tokenize.__file__); print(hasattr(tokenize, 'generate_tokens'))"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    path, has = probe.stdout.split()
    assert "runners" not in path and has == "True"


BAD_CASES = {
    "missing input": (["--mode", "cpt", "--input", "nope.jsonl"], "does not exist"),
    "bad mode": (["--mode", "xyz"], "invalid choice"),
    "no tokenizer": (["--mode", "cpt"], "no tokenizer"),
    "tokenizer dir without tokenizer.json": (["--mode", "cpt", "--tokenizer", "{exp}/data"], "no tokenizer.json"),
    "wrong text field": (["--mode", "cpt", "--text-field", "body", "--tokenizer", "{tok}"], "field 'body' missing"),
    "bad format": (["--mode", "sft", "--format", "bin", "--tokenizer", "{tok}"], "not available for sft"),
    "bad mixture ratio": (["--mode", "cpt", "--mixture", "{mix}", "--tokenizer", "{tok}"], "ratios sum to"),
    "missing mixture": (["--mode", "cpt", "--mixture", "nope.yaml", "--tokenizer", "{tok}"], "mixture file"),
    "tiny vocab": (["--mode", "cpt", "--train-tokenizer", "--vocab-size", "100"], "too small"),
    "bad json line mid-file": (["--mode", "cpt", "--input", "{badjson}", "--tokenizer", "{tok}"], "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_exit_2_with_one_error_line_and_nothing_written(exp, env, tok_dir, tmp_path, case):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(20)])
    bad = exp / "data/raw/cpt/bad/x.jsonl"
    write_jsonl(bad, [{"text": d} for d in make_docs(300)])
    bad.write_text(bad.read_text() + "{broken\n")
    mix = tmp_path / "mix.yaml"
    mix.write_text(json.dumps({"sources": [{"name": "d", "path": "d.jsonl", "ratio": 0.6},
                                           {"name": "e", "path": "d.jsonl", "ratio": 0.6}]}))
    args, want = BAD_CASES[case]
    args = [a.format(exp=exp, tok=tok_dir, mix=mix, badjson=bad) for a in args]
    before = tree(exp)
    r = _script(*args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and want in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert tree(exp) == before  # nothing written, no temp dir left behind


def test_sigterm_mid_run_exits_143_and_leaves_nothing(exp, env, tok_dir, tmp_path):
    import signal

    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(60000, seed=3)])
    cfg = tmp_path / "t.yaml"
    cfg.write_text(json.dumps({"mode": "cpt", "tokenizer": str(tok_dir), "block_size": 16, "workers": 2,
                               "batch_docs": 64, "progress_interval_s": 0.0}))
    proc = subprocess.Popen([sys.executable, "runners/tokenize_run.py", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # the first progress line: encoding is under way
        assert line.startswith("tokenize cpt"), line + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert tree(exp / "data/tokenized") == ["cpt", "sft"]


def test_tokenize_through_launch_then_noop(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR")}
    env.update(LAUNCHER_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    dp = tmp_path / "dp"
    cmd = [sys.executable, "-m", "launcher", "--datapool", f"file://{dp}", "--experiment", "tok",
           "runners/tokenize_run.py", "--config", "configs/tokenize/smoke.yaml"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = dp / "experiments/tok/data/tokenized/cpt/smoke"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["trained"] and (out / "tokenizer/tokenizer.json").is_file()
    assert meta["splits"]["validation"]["tokens"] > 0 and meta["docs"] == 240
    manifest = json.loads((out / "mixture_manifest.json").read_text())
    assert manifest["sources"][0]["train"] + manifest["sources"][0]["validation"] == 240
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "up to date" in r.stdout + r.stderr


def test_rich_progress_bar_on_a_terminal(exp, env, tok_dir):
    import pty

    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(200)])
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "runners/tokenize_run.py", "--mode", "cpt",
                                 "--tokenizer", str(tok_dir), "--block-size", "8", "--workers", "1"], cwd=REPO, env={**env, "COLUMNS": "160"},
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
    finally:
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "tok/s" in screen and "docs/s" in screen and "200 docs" in screen
    assert "\x1b[" in screen  # drawn by rich, not plain lines
