"""Fixtures for the data runners: a datapool per test, one tiny trained tokenizer per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # data_helpers, under --import-mode=importlib
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from data_helpers import make_docs  # noqa: E402


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    from runners.data.tokenizer_io import train_bpe

    texts = make_docs(500, seed=1) + ["What is the answer? It is forty two.", "Hello there, assistant."] * 20
    return train_bpe(texts, 400, tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def hf_tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture
def exp(tmp_path, monkeypatch) -> Path:
    """A datapool whose experiment dir is returned; env points the runners at it."""
    root = tmp_path / "datapool"
    for var in ("EXPERIMENT_DIR", "EXPERIMENT", "CHECKPOINT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATAPOOL_ROOT", str(root))
    e = root / "experiments" / "default"
    for rel in ("data/raw/cpt", "data/raw/sft", "data/tokenized/cpt", "data/tokenized/sft"):
        (e / rel).mkdir(parents=True)
    return e


@pytest.fixture
def tokenize(capsys):
    """tokenize(*argv) -> (exit code, stdout, stderr), running runners/tokenize_run.py's main in-process."""
    from runners.tokenize_run import main

    def _run(*argv: str):
        rc = main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run
