"""The seed's STEPS rules and every other bad input: one `error:` line, exit 2, nothing prepared, run or recorded."""
from __future__ import annotations

import pytest

from .conftest import files_under, script_config, write_project

OK = {"id": "script_0", "type": "script"}
OK_CFG = {"script_0.py": script_config("script_0", "red")}

CASES = {
    "no STEPS": ([], {}, {}, "no STEPS; define STEPS = ["),
    "id not <type>_<idx>": ([{"id": "sft", "type": "train_sft"}], {}, {},
                            "STEPS[0] (sft): id 'sft' must be <type>_<idx> for type train_sft, e.g. train_sft_0"),
    "id of another type": ([{"id": "train_rl_0", "type": "train_sft"}], {}, {},
                           "id 'train_rl_0' must be <type>_<idx> for type train_sft"),
    "config stem is not the id": ([{"id": "script_0", "type": "script", "config": "steps/other_0.py"}],
                                  {"other_0.py": script_config("script_0", "x")}, {},
                                  "config steps/other_0.py must be named after the step: steps/script_0.py"),
    "duplicate id": ([OK, OK], OK_CFG, {}, "STEPS[1] (script_0): id 'script_0' is used twice (also STEPS[0]); "
                                           "give each step its own index, e.g. script_1"),
    "unknown type": ([{"id": "train_dop_0", "type": "train_dop"}], {}, {},
                     "unknown type 'train_dop' (did you mean 'train_dpo'?); known types: tokenize_cpt"),
    "mg2hf": ([{"id": "mg2hf_0", "type": "mg2hf"}], {}, {},
              "type 'mg2hf' is out of scope: checkpoints are HF format throughout"),
    "hf2mg": ([{"id": "hf2mg_0", "type": "hf2mg"}], {}, {}, "type 'hf2mg' is out of scope"),
    "unknown step key": ([{**OK, "gpus": "A10G"}], OK_CFG, {}, "unknown key 'gpus' (did you mean 'gpu'?)"),
    "missing type": ([{"id": "script_0"}], OK_CFG, {}, "STEPS[0] (script_0): missing 'type'"),
    "enabled not a bool": ([{**OK, "enabled": "no"}], OK_CFG, {}, "enabled must be True or False, got 'no'"),
    "config file missing": ([{**OK, "config": "steps/script_0.yaml"}], {}, {}, "config steps/script_0.yaml not found"),
    "script step without SCRIPT": ([OK], {"script_0.py": "WORD = 'x'\n"}, {},
                                   "step script_0: a script step needs SCRIPT = \"path/to/script.py\""),
    "bad step config python": ([OK], {"script_0.py": "WORD = (\n"}, {}, "Python syntax error at line"),
    "bad placement": ([{**OK, "gpu": "B300"}], OK_CFG, {}, "step script_0: field 'gpu': unknown GPU 'B300'; valid: T4"),
    "spot on local": ([{**OK, "spot": True}], OK_CFG, {}, "step script_0: --spot needs a backend with spot capacity"),
    "remote step, local store": ([{**OK, "backend": "ec2"}], OK_CFG, {},
                                 "step script_0: --datapool file:// cannot be reached from --backend ec2 nodes"),
    "missing secret": ([{**OK, "secrets": ["PIPELINE_TEST_TOKEN"]}], OK_CFG, {},
                       "step script_0: secret PIPELINE_TEST_TOKEN is not set in your environment"),
    "raw source missing": ([{"id": "tokenize_cpt_0", "type": "tokenize_cpt", "enabled": False}, OK],
                           {**OK_CFG, "tokenize_cpt_0.py": "RAW = ['raw/nope.txt']\n"}, {},
                           "step tokenize_cpt_0: RAW raw/nope.txt not found"),
    "base model not a dir": ([OK], OK_CFG, {"BASE_MODEL": "./models/none"},
                             "BASE_MODEL ./models/none: no such directory"),
    "every step disabled": ([{**OK, "enabled": False}], OK_CFG, {}, "every step is disabled"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_pipeline_is_one_line_exit_2_nothing_written(case, proj, pl, tmp_path):
    steps, configs, extra, message = CASES[case]
    pool = tmp_path / "pool"
    path = write_project(proj, steps, configs, {"DATAPOOL": f"file://{pool}", **extra}, fmt="py")
    if case == "no STEPS":
        path.write_text(f"DATAPOOL = 'file://{pool}'\n")
    code, out, err = pl("-c", str(path))
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not pool.exists() and files_under(tmp_path / "home") == []


@pytest.mark.parametrize("flags, message", [
    (["--from", "script_9"], "--from script_9: no such step (did you mean 'script_0'?); steps: script_0"),
    (["--only", "script_0", "--from", "script_0"], "give --from STEP or --only STEP, not both"),
    (["--force", "nope_0"], "--force nope_0: no such step"),
    ([], "give the pipeline file: launch pipeline -c configs/experiments/NAME/pipeline.py"),
])
def test_bad_flags(flags, message, proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = write_project(proj, [OK], OK_CFG, {"DATAPOOL": f"file://{pool}"})
    code, _, err = pl(*(["-c", str(path)] if flags else []), *flags)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not pool.exists()


def test_pipeline_file_not_found(proj, pl):
    code, _, err = pl("-c", "configs/experiments/nope/pipeline.py")
    assert code == 2
    assert err == ("error: pipeline not found: configs/experiments/nope/pipeline.py; pass -c "
                   "configs/experiments/NAME/pipeline.py (or pipeline.yaml)\n")
