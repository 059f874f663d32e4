"""The seed's trainer flags: --dry_run 1/0, --val_every 0, --save_dir; per-checkpoint sidecars; load heartbeats."""
import json

import pytest

from hrm_helpers import metrics, run_dir, train


def test_dry_run_takes_1_and_0_and_dataset_means_training(datapool, capsys):
    assert train("--dry_run", "1", "--run_name", "d") == 0
    assert "dry run: loss=" in capsys.readouterr().out and not datapool.exists()

    assert train("--dry_run", "0", "--run_name", "d0", "--steps", "2", "--val_every", "0") == 0
    assert (run_dir(datapool, "d0") / "final.pt").is_file()

    # the seed's rule: naming a dataset trains, even with a bare --dry_run
    assert train("--dry_run", "--dataset", "synthetic", "--run_name", "dd", "--steps", "2", "--val_every", "0") == 0
    assert "training (not a dry run)" in capsys.readouterr().out
    assert (run_dir(datapool, "dd") / "final.pt").is_file()

    with pytest.raises(SystemExit) as exc:
        train("--dry_run", "yes please")
    assert exc.value.code == 2 and "expected 1 or 0" in capsys.readouterr().err


def test_val_every_zero_and_save_dir(datapool, tmp_path, capsys):
    ckpts = tmp_path / "ckpts"
    assert train("--save_dir", str(ckpts), "--steps", "4", "--val_every", "0", "--save_best_model",
                 "--log_steps", "2") == 0
    # no validation, so no periodic checkpoints (save_every follows val_every) and no best model
    assert {p.name for p in ckpts.iterdir()} == {"final.pt", "final.yaml", "config.yaml", "tokenizer.json",
                                                  "meta.json"}
    assert "no best model is written" in capsys.readouterr().out
    rows = metrics(datapool, "ckpts")
    assert [r["step"] for r in rows] == [2, 4] and not any("val_loss" in r for r in rows)
    assert not run_dir(datapool, "hrm_lm").exists()

    from runners.hrm_lm.generate import main as generate

    assert generate(["--save_dir", str(ckpts), "--prompt", "1 + 2 =", "--max_new_tokens", "2",
                     "--dataset", "synthetic"]) == 0
    assert capsys.readouterr().out.startswith("1 + 2 =\t")
    # --dataset naming data the run did not train on is one line, not a garbled answer
    from runners.hrm_lm.prepare import main as prepare

    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n"
                                               for i in range(8)))
    assert prepare(["--input", str(tmp_path / "qa.jsonl"), "--output", str(tmp_path / "bpe"), "--vocab-size",
                    "300"]) == 0
    with pytest.raises(SystemExit) as exc:
        generate(["--save_dir", str(ckpts), "--prompt", "1 + 2 =", "--dataset", str(tmp_path / "bpe")])
    assert exc.value.code == 2 and "trained with vocab_size=99" in capsys.readouterr().err

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        train("--save_dir", str(tmp_path / "a_file"), "--steps", "2")
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err

    # save_every still works without validation; --run_name wins over --save_dir (as in the seed)
    other = tmp_path / "unused"
    assert train("--save_dir", str(other), "--run_name", "named", "--steps", "4", "--val_every", "0",
                 "--save_every", "2") == 0
    assert "--save_dir" in capsys.readouterr().out and not other.exists()
    names = {p.name for p in run_dir(datapool, "named").iterdir()}
    assert {"step_2.pt", "step_2.yaml", "final.pt", "final.yaml"} <= names


def test_every_checkpoint_has_its_yaml_and_rotation_takes_it_along(datapool):
    import yaml

    assert train("--run_name", "side", "--steps", "6", "--save_every", "2", "--val_every", "100",
                 "--checkpoint_limit", "1", "--learning_rate", "0.001") == 0
    d = run_dir(datapool, "side")
    assert sorted(p.name for p in d.glob("*.yaml")) == ["config.yaml", "final.yaml", "step_4.yaml"]
    saved = yaml.safe_load((d / "step_4.yaml").read_text())
    assert saved["train"]["learning_rate"] == 0.001 and saved["model"]["vocab_size"] == 99
    # extending the run: the new checkpoints carry the new config, the old final.yaml is replaced with final.pt
    assert train("--run_name", "side", "--steps", "10", "--save_every", "2", "--val_every", "100",
                 "--checkpoint_limit", "1", "--learning_rate", "0.001") == 0
    assert yaml.safe_load((d / "final.yaml").read_text())["train"]["steps"] == 10
    assert yaml.safe_load((d / "step_8.yaml").read_text())["train"]["steps"] == 10
    assert sorted(p.name for p in d.glob("step_*")) == ["step_8.pt", "step_8.yaml"]


def test_loading_heartbeats(tmp_path, capsys):
    from runners.hrm_lm.data import load_split
    from runners.hrm_lm.prepare import main as prepare

    for fmt in ("jsonl", "arrow"):
        out = tmp_path / fmt
        assert prepare(["synthetic", "--output", str(out), "--format", fmt, "--shard-size", "40"]) == 0
        capsys.readouterr()
        samples = load_split(out, "train", heartbeat_rows=50)
        err = capsys.readouterr().err
        assert len(samples) == 160
        if fmt == "jsonl":
            assert [line.split(": ")[2].split()[0] for line in err.splitlines()[:3]] == ["50", "100", "150"]
            assert "loaded train.jsonl: 160 samples" in err
        else:  # 4 shards of 40: a line when 50, 100 and 150 samples are mapped
            assert err.count("mapping") == 3 and "4/4 shards, 160 samples" in err
        load_split(out, "train")  # the default interval (200k samples): silent on a small set
        assert capsys.readouterr().err == ""


def test_prepare_bad_inputs_write_nothing(tmp_path, capsys):
    from runners.hrm_lm.prepare import main as prepare

    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n" for i in range(10)))
    good = tmp_path / "good"
    assert prepare(["--source", str(src), "--dest", str(good), "--prompt-field", "q", "--response-field", "a",
                    "--vocab-size", "300"]) == 0
    cases = {
        "tokenizer not found": ["--source", str(src), "--dest", str(tmp_path / "o"), "--tokenizer", "nope.json"],
        "--tokenizer-batch-size must be >= 1": ["--input", str(src), "--output", str(tmp_path / "o"),
                                                "--tokenizer-batch-size", "0"],
        "malformed": ["--input", str(src), "--output", str(tmp_path / "o"), "--prompt-field", "q..x[",
                      "--response-field", "a"],
        "exists and is not empty": ["--input", str(src), "--output", str(good)],
        "merge needs --output": ["merge", str(good)],
        "lies inside a chunk": ["merge", "--output", str(good / "m"), str(good)],
        "no prepared chunk": ["merge", "--batches", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")],
        "none of the 10 records": ["normalize_qa", "--input", str(src), "--output", str(tmp_path / "o.jsonl"),
                                   "--question-field", "question", "--answer-field", "a"],
    }
    (tmp_path / "empty").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for expected, argv in cases.items():
        with pytest.raises(SystemExit) as exc:
            prepare(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, (expected, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
