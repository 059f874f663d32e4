"""The seed HRM x LM's documented command lines, as its README writes them, run against this layout.

Each SEED line below is copied from the seed's README. `adjust()` changes only what the layout forces: the script
paths (the seed's `scripts/*.py` and `python -m hrm_lm...` modules are `runners/hrm_lm/*.py` here) and, for the
training line, the config and the step counts (the seed's default.yaml model is GPU-sized; 200 steps would cost the
suite a minute of CPU): every flag the seed passes is still passed. The lines run in this process through the
scripts' own `main(argv)` (torch imports once), from a scratch directory holding the seed's relative `datasets/`.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "hrm_lm" / "smoke.yaml"

SEED_DRY_RUN = "PYTHONPATH=src uv run python -m hrm_lm.training.train --dry_run"
SEED_TRAIN = """PYTHONPATH=src uv run python -m hrm_lm.training.train \\
  --dataset synthetic \\
  --batch_size 4 \\
  --learning_rate 2.5e-4 \\
  --warmup_steps 50 \\
  --steps 200 \\
  --val_every 50 \\
  --run_name arithmetic-demo \\
  --checkpoint_limit 3 \\
  --save_best_model \\
  --mixed_precision bf16 \\
  --log_steps 20 \\
  --grad_clip 1.0"""
SEED_CUSTOM_CONFIG = ("PYTHONPATH=src uv run python -m hrm_lm.training.train --config path/to/config.yaml "
                      "--dataset synthetic --run_name custom-run")
SEED_GENERATE = ('PYTHONPATH=src uv run python -m hrm_lm.inference.generate --prompt "What is 12 + 7?" '
                 '--dataset synthetic --run_name arithmetic-demo')
SEED_PREPARE = """PYTHONPATH=src uv run python scripts/prepare_language_dataset.py \\
  --source datasets/anothy1-fineweb-edu-cleaned-simplified \\
  --dest datasets/anothy1-fineweb-edu-cleaned-simplified/processed \\
  --vocab-size 128000 \\
  --max-seq-len 256 \\
  --val-ratio 0.02"""
SEED_PREPARE_WIKI = """python scripts/prepare_language_dataset.py \\
  --source datasets/wiki_chunks \\
  --dest datasets/wiki_chunks/processed \\
  --tokenizer datasets/wiki_chunks/processed/tokenizer.json \\
  --tokenizer-num-threads 16 \\
  --tokenizer-batch-size 256 \\
  --max-seq-len 1024 \\
  --val-ratio 0.02"""
SEED_MERGE = """PYTHONPATH=src python scripts/merge_prepared_batches.py \\
  --batches datasets/redpj/batches \\
  --output-dir datasets/redpj/combined"""
SEED_NORMALIZE_QA = """python scripts/normalize_qa_dataset.py \\
  --input squad/train.jsonl \\
  --output datasets/qa/squad_prompts.jsonl \\
  --question-field data.question \\
  --answer-field data.answers.text[0]"""
SEED_QA_CONTEXT_FLAGS = '--context-field data.context --prompt-template "{question}\\nContext: {context}"'

# seed entry point -> (this repo's script, its subcommand)
SCRIPTS = {
    "-m hrm_lm.training.train": ("runners/hrm_lm_run.py", []),
    "-m hrm_lm.inference.generate": ("runners/hrm_lm/generate.py", []),
    "scripts/prepare_language_dataset.py": ("runners/hrm_lm/prepare.py", []),
    "scripts/merge_prepared_batches.py": ("runners/hrm_lm/prepare.py", ["merge"]),
    "scripts/normalize_qa_dataset.py": ("runners/hrm_lm/prepare.py", ["normalize_qa"]),
}
# Only the training line: CPU-sized model and a tenth of the steps (see the module docstring).
TRAIN_SIZES = {"--steps 200": "--steps 20", "--val_every 50": "--val_every 5", "--warmup_steps 50": "--warmup_steps 5"}


def adjust(seed_line: str) -> list[str]:
    """The seed line as argv for this repo: [script, *args]."""
    words = shlex.split(seed_line.replace("\\\n", " "))
    words = [w for w in words if w not in ("uv", "run") and not w.startswith("PYTHONPATH=")]
    assert words[0] == "python"
    key = " ".join(words[1:3]) if words[1] == "-m" else words[1]
    script, sub = SCRIPTS[key]
    return [script, *sub, *words[3 if words[1] == "-m" else 2:]]


def run(argv: list[str]) -> int:
    from runners.hrm_lm import generate, prepare, train

    main = {"runners/hrm_lm_run.py": train.main, "runners/hrm_lm/generate.py": generate.main,
            "runners/hrm_lm/prepare.py": prepare.main}[argv[0]]
    try:
        return main(argv[1:])
    except SystemExit as exc:  # argparse and `error:` lines exit; the test wants the code
        return exc.code


@pytest.fixture
def seed_dir(tmp_path, monkeypatch, pool):
    """A scratch cwd with the seed's relative inputs: parquet text shards, a JSONL text file, a SQuAD-shaped set."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran in the park and birds sang".split()
    fw = tmp_path / "datasets" / "anothy1-fineweb-edu-cleaned-simplified"
    fw.mkdir(parents=True)
    for k in range(2):
        pq.write_table(pa.table({"text": [" ".join(rng.choice(words) for _ in range(30)) for _ in range(40)]}),
                       fw / f"train-{k:05d}.parquet")
    wiki = tmp_path / "datasets" / "wiki_chunks"
    wiki.mkdir()
    with (wiki / "wiki_1024.jsonl").open("w") as f:
        for _ in range(50):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(50))}) + "\n")
    (tmp_path / "squad").mkdir()
    with (tmp_path / "squad" / "train.jsonl").open("w") as f:
        for i in range(30):
            # every fifth question unanswerable, as in SQuAD v2
            answers = {"text": [f"answer {i}"], "answer_start": [0]} if i % 5 else {"text": [], "answer_start": []}
            f.write(json.dumps({"data": {"question": f"what is {i}?", "context": f"it is answer {i}",
                                         "answers": answers}}) + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_trainer_lines(seed_dir, pool, capsys):
    # dry run: no --config (the default is configs/hrm_lm/default.yaml), one random batch, nothing written
    assert run(adjust(SEED_DRY_RUN)) == 0
    assert "dry run: loss=" in capsys.readouterr().out and not pool.exists()

    argv = adjust(SEED_TRAIN)
    line = " ".join(argv)
    for seed_size, ours in TRAIN_SIZES.items():
        line = line.replace(seed_size, ours)
    argv = shlex.split(line) + ["--config", str(SMOKE)]
    assert run(argv) == 0
    run_dir = pool / "model" / "hrm_lm" / "arithmetic-demo"  # pool: this test's $EXPERIMENT_DIR
    names = {p.name for p in run_dir.iterdir()}
    # --checkpoint_limit 3 keeps steps 5..15 (20 is final.pt); every .pt has its .yaml
    assert {"step_5.pt", "step_10.pt", "step_15.pt", "final.pt"} <= names and "step_20.pt" not in names
    assert len([n for n in names if n.startswith("step_")]) == 6
    for pt in [n for n in names if n.endswith(".pt")]:
        saved = yaml.safe_load((run_dir / pt.replace(".pt", ".yaml")).read_text())
        assert saved["train"]["mixed_precision"] == "bf16" and saved["train"]["batch_size"] == 4
    assert {"tokenizer.json", "meta.json"} <= names
    assert {p.name for p in (run_dir / "best-model").iterdir()} == {"best.pt", "best.yaml", "tokenizer.json",
                                                                   "meta.json"}
    rows = _jsonl(pool / "reports" / "arithmetic-demo" / "metrics.jsonl")
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10, 15, 20]
    capsys.readouterr()

    assert run(adjust(SEED_GENERATE)) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("What is 12 + 7?\t")

    custom = seed_dir / "path" / "to" / "config.yaml"
    custom.parent.mkdir(parents=True)
    custom.write_text(SMOKE.read_text().replace("steps: 20", "steps: 4").replace("val_every: 10", "val_every: 4"))
    assert run(adjust(SEED_CUSTOM_CONFIG)) == 0
    assert (pool / "model" / "hrm_lm" / "custom-run" / "final.yaml").is_file()


def test_seed_data_lines(seed_dir, capsys):
    from runners.hrm_lm.tokenizer import load_tokenizer

    # --dest inside --source; a second run must not read the first run's output as corpus
    assert run(adjust(SEED_PREPARE)) == 0
    processed = seed_dir / "datasets" / "anothy1-fineweb-edu-cleaned-simplified" / "processed"
    meta = json.loads((processed / "meta.json").read_text())
    assert len(meta["sources"]) == 2 and meta["num_train"] + meta["num_val"] == 80  # 80 texts, one window each
    assert run(adjust(SEED_PREPARE) + ["--overwrite"]) == 0
    assert json.loads((processed / "meta.json").read_text())["sources"] == meta["sources"]

    # the tokenizer named inside --dest does not exist yet: trained there; the re-run reuses it
    assert run(adjust(SEED_PREPARE_WIKI)) == 0
    wiki = seed_dir / "datasets" / "wiki_chunks" / "processed"
    first_tok = (wiki / "tokenizer.json").read_bytes()
    assert "trained tokenizer" in capsys.readouterr().out
    assert run(adjust(SEED_PREPARE_WIKI) + ["--overwrite"]) == 0
    assert "reused tokenizer" in capsys.readouterr().out and (wiki / "tokenizer.json").read_bytes() == first_tok

    # merge: chunks prepared with one tokenizer under --batches; --keep-chunks leaves them
    batches = seed_dir / "datasets" / "redpj" / "batches"
    for k in range(2):
        assert run(["runners/hrm_lm/prepare.py", "--source", str(seed_dir / "datasets" / "anothy1-fineweb-edu-cleaned-"
                    "simplified" / f"train-0000{k}.parquet"), "--dest", str(batches / f"b{k}"), "--tokenizer",
                    str(wiki), "--val-ratio", "0.1"]) == 0
    chunk_rows = [_jsonl(batches / f"b{k}" / "train.jsonl") for k in range(2)]
    assert run(adjust(SEED_MERGE) + ["--keep-chunks"]) == 0
    combined = seed_dir / "datasets" / "redpj" / "combined"
    assert _jsonl(combined / "train.jsonl") == chunk_rows[0] + chunk_rows[1]
    assert [_jsonl(batches / f"b{k}" / "train.jsonl") for k in range(2)] == chunk_rows
    (seed_dir / "datasets" / "redpj" / "combined").rename(seed_dir / "first")
    assert run(adjust(SEED_MERGE)) == 0  # the seed's default: chunks deleted
    assert _jsonl(combined / "train.jsonl") == chunk_rows[0] + chunk_rows[1] and not any(batches.iterdir())

    # normalize_qa, plain and with context; unanswerable rows skipped; the result feeds prepare.py as it is
    capsys.readouterr()
    assert run(adjust(SEED_NORMALIZE_QA)) == 0
    rows = _jsonl(seed_dir / "datasets" / "qa" / "squad_prompts.jsonl")
    assert len(rows) == 24 and rows[0] == {"prompt": "what is 1?", "response": "answer 1"}
    assert "skipped 6" in capsys.readouterr().out
    assert run(adjust(SEED_NORMALIZE_QA.replace("squad_prompts", "squad_ctx") + " " + SEED_QA_CONTEXT_FLAGS)) == 0
    rows = _jsonl(seed_dir / "datasets" / "qa" / "squad_ctx.jsonl")
    assert rows[0]["prompt"] == "what is 1?\nContext: it is answer 1"
    assert run(["runners/hrm_lm/prepare.py", "--source", "datasets/qa/squad_ctx.jsonl", "--dest", "datasets/qa/ds",
                "--tokenizer", str(wiki), "--val-ratio", "0"]) == 0
    tok = load_tokenizer(wiki)
    pairs = {(tok.decode(r["encoder_ids"]), tok.decode(r["labels"]))
             for r in _jsonl(seed_dir / "datasets" / "qa" / "ds" / "train.jsonl")}
    assert len(pairs) == 24 and ("what is 1?\nContext: it is answer 1", "answer 1") in pairs
