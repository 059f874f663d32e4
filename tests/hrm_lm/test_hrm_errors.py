"""Bad input: one `error: ...` line on stderr, exit 2, nothing written to the datapool."""
import json
import subprocess
import sys

import pytest

from hrm_helpers import REPO, SMOKE, subprocess_env, train


def _fails(capsys, datapool, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        train(*args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert not datapool.exists(), "nothing may be written on bad input"
    return err


def test_missing_dataset_dir(datapool, capsys, tmp_path):
    err = _fails(capsys, datapool, "--dataset", str(tmp_path / "nope"))
    assert "dataset directory not found" in err and "prepare.py" in err


def test_dataset_dir_without_meta(datapool, capsys, tmp_path):
    (tmp_path / "half").mkdir()
    assert "no meta.json" in _fails(capsys, datapool, "--dataset", str(tmp_path / "half"))


def test_vocab_mismatch_between_meta_and_config(datapool, capsys, tmp_path):
    from runners.hrm_lm.prepare import main as prepare

    data = tmp_path / "syn"
    assert prepare(["synthetic", "--output", str(data)]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(SMOKE.read_text().replace("vocab_size: null", "vocab_size: 512"))
    with pytest.raises(SystemExit) as exc:
        from runners.hrm_lm.train import main

        main(["--config", str(cfg), "--dataset", str(data)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "model.vocab_size is 512" in err and "vocab_size 99" in err and "meta.json" in err
    assert not datapool.exists()


def test_meta_and_tokenizer_disagree(datapool, capsys, tmp_path):
    from runners.hrm_lm.prepare import main as prepare

    data = tmp_path / "syn"
    assert prepare(["synthetic", "--output", str(data)]) == 0
    meta = json.loads((data / "meta.json").read_text())
    meta["vocab_size"] = 120
    (data / "meta.json").write_text(json.dumps(meta))
    assert "re-run prepare.py" in _fails(capsys, datapool, "--dataset", str(data))


def test_fp16_on_cpu(datapool, capsys):
    assert "fp16 needs a CUDA GPU" in _fails(capsys, datapool, "--mixed_precision", "fp16")


def test_adamw_8bit_without_bitsandbytes(datapool, capsys):
    import importlib.util

    assert importlib.util.find_spec("bitsandbytes") is None  # the test is about its absence
    assert "needs bitsandbytes" in _fails(capsys, datapool, "--optimizer", "adamw_8bit")


def test_unknown_config_key(datapool, capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(SMOKE.read_text().replace("  h_cycles: 2", "  h_cylces: 2"))
    with pytest.raises(SystemExit) as exc:
        from runners.hrm_lm.train import main

        main(["--config", str(cfg)])
    assert exc.value.code == 2
    assert "model.h_cylces: unknown key" in capsys.readouterr().err
    assert not datapool.exists()


@pytest.mark.parametrize("text, message", [(None, "config file not found"), ("model: [1,\n", "not valid YAML"),
                                           ("- a\n- b\n", "expected a mapping at the top level")])
def test_config_file_missing_unreadable_or_not_a_mapping(datapool, capsys, tmp_path, text, message):
    cfg = tmp_path / "cfg.yaml"
    if text is not None:
        cfg.write_text(text)
    with pytest.raises(SystemExit) as exc:
        from runners.hrm_lm.train import main

        main(["--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err and str(cfg) in err, err
    assert not datapool.exists()


def test_bad_value_names_key(datapool, capsys):
    assert "train.batch_size" in _fails(capsys, datapool, "--batch_size", "0")


def test_real_process_exit_code(tmp_path):
    """The script itself (not just main()) exits 2 with one error line."""
    pool = tmp_path / "pool"
    r = subprocess.run([sys.executable, "runners/hrm_lm_run.py", "--config", str(SMOKE), "--mixed_precision", "fp16"],
                       cwd=REPO, env=subprocess_env(DATAPOOL_ROOT=str(pool)), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not pool.exists()


def test_resume_with_a_different_model_refused(datapool, capsys, tmp_path):
    assert train("--run_name", "r", "--steps", "2", "--val_every", "100") == 0
    before = sorted(p.name for p in datapool.rglob("*"))
    cfg = tmp_path / "bigger.yaml"
    cfg.write_text(SMOKE.read_text().replace("d_model: 64", "d_model: 128"))
    from runners.hrm_lm.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--config", str(cfg), "--run_name", "r", "--steps", "4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.d_model: 64 -> 128" in err and "--run_name" in err
    assert sorted(p.name for p in datapool.rglob("*")) == before
