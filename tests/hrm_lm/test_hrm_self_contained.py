"""Seed HRM x LM, round three (issue 25 item 6): a lone checkpoint loads (it carries its tokenizer and meta),
`--epochs N --steps 0` trains N epochs, and a run with no dataset anywhere is the seed's one dry-run batch."""
import json
import shutil

import pytest
import torch

from hrm_helpers import SMOKE, metrics, run_dir, train


def _generate(*argv):
    from runners.hrm_lm.generate import main

    return main(list(argv))


def _exit_code(fn, *argv):
    with pytest.raises(SystemExit) as exc:
        fn(*argv)
    return exc.value.code


def test_lone_final_pt_generates_and_every_checkpoint_carries_its_tokenizer(datapool, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--save_dir", str(run), "--steps", "40", "--val_every", "20", "--save_every", "20",
                 "--save_best_model", "--batch_size", "32") == 0
    side_tok = json.loads((run / "tokenizer.json").read_text())
    side_meta = json.loads((run / "meta.json").read_text())
    pts = [run / "step_20.pt", run / "final.pt", run / "best-model" / "best.pt"]
    for pt in pts:
        state = torch.load(pt, weights_only=False)
        assert json.loads(state["tokenizer"]) == side_tok and state["meta"] == side_meta, pt

    lone = tmp_path / "empty"
    lone.mkdir()
    shutil.copy(run / "final.pt", lone)
    capsys.readouterr()
    prompts = ["--prompt", "3 + 4 =", "--prompt", "What is 2 + 5?", "--max_new_tokens", "3"]
    assert _generate("--checkpoint", str(lone / "final.pt"), *prompts) == 0
    alone = capsys.readouterr().out
    assert sorted(p.name for p in lone.iterdir()) == ["final.pt"]  # generating wrote nothing beside it
    # the same text as from the run folder, and real text: 40 steps of addition answer with digits
    assert _generate("--save_dir", str(run), "--checkpoint", "latest", *prompts) == 0
    assert capsys.readouterr().out == alone
    lines = alone.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["3 + 4 =", "What is 2 + 5?"]
    assert all(line.split("\t")[1].strip().isdigit() for line in lines), lines
    # --dataset is checked against the checkpoint's own meta, also for a lone copy
    assert _generate("--checkpoint", str(lone / "final.pt"), "--dataset", "synthetic", *prompts) == 0


def test_lone_bpe_checkpoint_resumes_and_generates(datapool, tmp_path, capsys):
    """A prepared (BPE) run: the embedded tokenizer is the `tokenizers` JSON; a lone copy generates and resumes."""
    from runners.hrm_lm.prepare import main as prepare

    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"prompt": f"name {i}", "response": f"item {i % 4}"})
                                               + "\n" for i in range(40)))
    data = tmp_path / "bpe"
    assert prepare(["--input", str(tmp_path / "qa.jsonl"), "--output", str(data), "--vocab-size", "300",
                    "--val-ratio", "0.1"]) == 0
    assert train("--dataset", str(data), "--save_dir", str(tmp_path / "run"), "--steps", "3",
                 "--val_every", "0") == 0
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tmp_path / "run" / "final.pt", lone)
    capsys.readouterr()
    assert _generate("--checkpoint", str(lone / "final.pt"), "--prompt", "name 3", "--max_new_tokens", "2") == 0
    assert capsys.readouterr().out.startswith("name 3\t")

    # resume from the lone copy: its folder becomes the run folder again (sidecars rewritten for people)
    assert train("--dataset", str(data), "--save_dir", str(lone), "--steps", "5", "--val_every", "0") == 0
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(lone / "final.pt", weights_only=False)["step"] == 5
    assert {"tokenizer.json", "meta.json", "final.yaml"} <= {p.name for p in lone.iterdir()}

    # resuming it on data with another vocabulary is one line, nothing written
    before = (lone / "final.pt").stat().st_mtime_ns
    assert _exit_code(train, "--save_dir", str(lone), "--steps", "8", "--dataset", "synthetic") == 2
    assert "different model config" in capsys.readouterr().err
    assert (lone / "final.pt").stat().st_mtime_ns == before


def test_old_checkpoint_without_embedded_tokenizer_and_resume_on_another_tokenizer(datapool, tmp_path, capsys):
    from runners.hrm_lm import checkpoint as ck
    from runners.hrm_lm.tokenizer import CharTokenizer

    run = tmp_path / "old"
    assert train("--save_dir", str(run), "--steps", "2", "--val_every", "0") == 0
    state = torch.load(run / "final.pt", weights_only=False)
    del state["tokenizer"]  # as written before this change
    ck.atomic_save(state, run / "final.pt")
    capsys.readouterr()
    assert _generate("--save_dir", str(run), "--prompt", "1 + 1 =", "--max_new_tokens", "2") == 0  # run folder
    assert capsys.readouterr().out.startswith("1 + 1 =\t")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "final.pt", lone)
    assert _exit_code(_generate, "--checkpoint", str(lone / "final.pt"), "--prompt", "1 + 1 =") == 2
    err = capsys.readouterr().err
    assert "holds no tokenizer" in err and "tokenizer.json" in err and len(err.strip().splitlines()) == 1
    # not a checkpoint at all (a text file, another program's torch file): one line too
    (lone / "notes.pt").write_text("not torch")
    torch.save({"weights": torch.zeros(2)}, lone / "other.pt")
    for name in ("notes.pt", "other.pt"):
        assert _exit_code(_generate, "--checkpoint", str(lone / name), "--prompt", "1 + 1 =") == 2
        err = capsys.readouterr().err
        assert "not an HRM-LM checkpoint" in err and len(err.strip().splitlines()) == 1, err

    # same vocabulary size and ids, other symbols: resuming would train on garbage, so it is refused
    state["tokenizer"] = CharTokenizer("".join(reversed(CharTokenizer().chars))).to_json()
    ck.atomic_save(state, run / "final.pt")
    assert _exit_code(train, "--save_dir", str(run), "--steps", "4", "--val_every", "0") == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert torch.load(run / "final.pt", weights_only=False)["step"] == 2


def test_epochs_with_steps_zero_train_that_many_epochs(datapool, tmp_path, capsys):
    # smoke.yaml: 160 synthetic train samples / batch 16 = 10 steps per epoch (and `steps: 20` in the YAML)
    assert train("--run_name", "ep3", "--epochs", "3", "--steps", "0", "--val_every", "1000", "--log_steps",
                 "10") == 0
    assert "steps 0->30 (3 epochs)" in capsys.readouterr().out
    assert [r["step"] for r in metrics(datapool, "ep3") if "loss" in r] == [10, 20, 30]
    assert torch.load(run_dir(datapool, "ep3") / "final.pt", weights_only=False)["step"] == 30

    # the same in the YAML: steps 0 = not limited by steps
    cfg = tmp_path / "ep.yaml"
    cfg.write_text(SMOKE.read_text().replace("  steps: 20", "  steps: 0\n  epochs: 0.5"))
    from runners.hrm_lm.train import main

    assert main(["--config", str(cfg), "--run_name", "ep-yaml", "--val_every", "0"]) == 0
    assert torch.load(run_dir(datapool, "ep-yaml") / "final.pt", weights_only=False)["step"] == 5

    # bad values: one line each, exit 2, nothing written
    written = sorted(p for p in datapool.rglob("*"))
    cases = {("--steps", "-1"): "--steps -1: must be >= 0",
             ("--epochs", "-2", "--steps", "0"): "--epochs -2: must be a number >= 0",
             ("--steps", "0"): "train: nothing limits the run: set train.steps or train.epochs > 0",  # nothing limits the run
             ("--epochs", "0", "--steps", "0"): "train: nothing limits the run: set train.steps or train.epochs > 0"}
    for argv, expected in cases.items():
        assert _exit_code(train, "--run_name", "bad", *argv) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(p for p in datapool.rglob("*")) == written


def test_no_dataset_anywhere_is_one_dry_run_batch_with_a_hint(datapool, tmp_path, capsys):
    from runners.hrm_lm.train import main

    cfg = tmp_path / "nodata.yaml"
    cfg.write_text(SMOKE.read_text().replace("  dataset: synthetic\n", ""))
    assert main(["--config", str(cfg), "--run_name", "nd"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("dry run: loss=") and len(lines) == 3
    assert "--dataset synthetic" in out and "train.dataset" in out
    assert not datapool.exists()  # no checkpoint, no metrics, no run folder

    # the default config names no dataset either: the seed's bare command line is the same dry run
    assert main([]) == 0
    assert "train.dataset" in capsys.readouterr().out and not datapool.exists()

    # --dry_run 0 asks to train, on nothing: one line
    assert _exit_code(lambda *a: main(list(a)), "--config", str(cfg), "--dry_run", "0") == 2
    err = capsys.readouterr().err
    assert "no dataset is given" in err and len(err.strip().splitlines()) == 1 and not datapool.exists()

    # a dataset named in the config (smoke.yaml: synthetic) or on the command line trains, without the hint
    assert train("--run_name", "named", "--steps", "2", "--val_every", "0") == 0
    assert main(["--config", str(cfg), "--dataset", "synthetic", "--run_name", "flag", "--steps", "2",
                 "--val_every", "0"]) == 0
    assert "train.dataset" not in capsys.readouterr().out
    assert (run_dir(datapool, "named") / "final.pt").is_file() and (run_dir(datapool, "flag") / "final.pt").is_file()
