"""CPT through the shared run path: the eval loop on the validation split, and a finished run stays finished."""
from __future__ import annotations

import json

from .conftest import check_finished_then_extend, eval_rows, read_metrics, run_main, train_rows


def test_cpt_eval_loop_and_finished(pool, capfd):
    argv = ("--config", "configs/cpt/smoke.yaml", "--set", "trainer.max_steps=6", "--set", "trainer.logging_steps=1",
            "--set", "trainer.save_steps=6", "--eval_interval", "3", "--eval_batches", "1")
    assert run_main("cpt_run", *argv) == 0
    rows = read_metrics(pool, "cpt-smoke")
    assert [r["step"] for r in train_rows(rows)] == list(range(1, 7))
    assert all(r["tokens_per_s"] > 0 for r in train_rows(rows))
    assert [r["step"] for r in eval_rows(rows)] == [3, 6] and all(r["eval_loss"] > 0 for r in eval_rows(rows))
    assert "eval step 3/6  loss" in capfd.readouterr().out
    check_finished_then_extend("cpt_run", argv, pool, "cpt-smoke", 6, capfd)


def test_cpt_data_config_tokenizes_a_mixture_with_the_models_tokenizer(pool, tmp_path):
    """--data_config on CPT: the mixture is tokenized with the (pretrained) model's own tokenizer, then trained on;
    --use_prepared then trains on that output without the raw data."""
    from runners.common.tiny_model import build_tiny_model
    from tasks.smoke_task import get_corpus

    base = build_tiny_model(get_corpus(None), pool / "model" / "base" / "tiny-smoke")
    raw = pool / "data" / "raw" / "cpt" / "books.txt"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n\n".join(f"book {i}: " + "a b c d e f g " * 20 for i in range(30)))
    mixture = tmp_path / "books_mix.yaml"
    mixture.write_text("name: books\nvalidation_fraction: 0.1\n"
                       "sources:\n  - {name: books, path: books.txt, ratio: 1.0}\n")
    argv = ("--config", "configs/cpt/smoke.yaml", "--set", "model.init=pretrained",
            "--set", f"model.name_or_path={base}",
            "--set", "data.prepare=null", "--set", "data.tokenized=null", "--set", "data.block_size=32",
            "--set", "trainer.max_steps=2", "--set", "trainer.logging_steps=1", "--data_config", str(mixture))
    assert run_main("cpt_run", *argv, "--set", "run_name=cpt-mix") == 0
    out = pool / "data" / "tokenized" / "cpt" / "books"
    assert (out / "meta.json").is_file() and [r["step"] for r in train_rows(read_metrics(pool, "cpt-mix"))] == [1, 2]
    raw.unlink()
    assert run_main("cpt_run", *argv, "--use_prepared", "--set", "run_name=cpt-prepared") == 0
    assert [r["step"] for r in train_rows(read_metrics(pool, "cpt-prepared"))] == [1, 2]


def test_cpt_final_eval_line_names_each_metric_whole(pool, capfd):
    """Without an eval loop the run ends with one eval pass; its line names the metrics as the trainer does,
    `eval_` dropped where it is a prefix and nothing cut where it is not (`num_input_tokens_seen`)."""
    assert run_main("cpt_run", "--config", "configs/cpt/smoke.yaml", "--set", "trainer.max_steps=2",
                    "--set", "run_name=cpt-final-eval") == 0
    line = next(ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("runner: final eval "))
    names = line.removeprefix("runner: final eval ").split()[::2]
    assert names[0] == "loss", line
    summary = json.loads((pool / "reports" / "cpt-final-eval" / "summary.json").read_text())
    assert all(f"eval_{n}" in summary or n in summary for n in names), (line, sorted(summary))
