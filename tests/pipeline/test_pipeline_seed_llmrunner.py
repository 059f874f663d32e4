"""Seed LLMRunner (issue 25, item 4): prepare scans steps/ for tokenize step files (one not in STEPS is prepared and
noted), and a step config's SCRIPT runs on any step type, the seed's way: the step's settings in its environment,
ARGS as its arguments; the type only names its outputs and skip rules, and --dry-run says SCRIPT replaced its runner.
"""
from __future__ import annotations

import json

from .conftest import files_under, record, write_project

# A stand-in for a training (or tokenize, or eval) script: records what it got, writes the folder the step type
# names (STEP_OUTPUTS), as a seed script would write its output dir.
FAKE = '''
import json, os, sys
from pathlib import Path
exp = Path(os.environ["EXPERIMENT_DIR"])
out = exp / os.environ["STEP_OUTPUTS"]
seen = {"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in (
    "STEP_ID", "STEP_TYPE", "MODEL_PREFIX", "STEP_OUTPUTS", "STEP_INPUTS", "LR", "lr", "SET", "WORD", "GREETING",
    "SCRIPT")}}
prev = os.environ.get("MODEL_PREFIX")
seen["prev_word"] = (exp / prev / "word.txt").read_text().strip() if prev and (exp / prev / "word.txt").exists() else None
if out.suffix == ".json":
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(seen))
else:
    out.mkdir(parents=True, exist_ok=True)
    (out / "word.txt").write_text(os.environ["WORD"] + "\\n")
    (out / "seen.json").write_text(json.dumps(seen))
print("fake", os.environ["STEP_ID"], "->", out)
'''

STEPS = [{"id": "train_sft_0", "type": "train_sft"}, {"id": "eval_0", "type": "eval"}]
CONFIGS = {
    # Seed-style: upper- and lower-case settings, ARGS as one string, SET renaming the type's output.
    "train_sft_0.py": '''
        SCRIPT = "scripts/fake.py"
        WORD = "sft"
        LR = 2e-5
        lr = "3e-5"
        SET = {"run_name": "sft_custom"}
        ARGS = "--epochs 2 --tag 'a b'"
    ''',
    "eval_0.py": '''
        SCRIPT = "scripts/fake.py"
        WORD = "eval"
        ARGS = ["--greedy"]
    ''',
    # On disk, not in STEPS: prepared (its RAW merged), never run.
    "tokenize_cpt_1.py": "RAW = ['raw/a.txt', 'raw/b.jsonl']\n",
}


def project(proj, pool, **extra):
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{pool}", "GREETING": "hi", **extra}, fmt="py")
    (proj / "scripts" / "fake.py").write_text(FAKE)
    return path


def test_an_unlisted_tokenize_step_file_is_prepared_and_noted(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = project(proj, pool)
    code, _, err = pl("-c", str(path), "--prepare-only")
    assert code == 0, err
    exp = pool / "experiments" / "exp"
    merged = (exp / "data/raw/cpt/tokenize_cpt_1.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["text"] for r in merged) == ["five", "four", "one", "three", "two"]
    assert (exp / "data/raw/cpt/tokenize_cpt_1/a.txt").is_file()
    notes = [line for line in err.splitlines() if "not in STEPS" in line]
    assert notes == ['[pipeline] prepare: note: steps/tokenize_cpt_1.py not in STEPS: raw data prepared '
                     '(data/raw/cpt/tokenize_cpt_1.jsonl), not run; to run one, add it to STEPS, e.g. '
                     '{"id": "tokenize_cpt_1", "type": "tokenize_cpt"}'], err
    report = json.loads((exp / "reports/prepare.json").read_text())
    assert report["unlisted"] == ["tokenize_cpt_1"] and report["raw"]["tokenize_cpt_1"]["rows"] == 5

    # Not run, not recorded; listing it in STEPS (with no config key: steps/<id>.py) makes it a step like any other.
    assert not (exp / "reports/pipeline").exists()
    listed = write_project(proj, [{"id": "tokenize_cpt_1", "type": "tokenize_cpt", "enabled": False}, *STEPS],
                           CONFIGS, {"DATAPOOL": f"file://{pool}"}, fmt="py")
    code, _, err = pl("-c", str(listed), "--prepare-only")
    assert code == 0 and "not in STEPS" not in err, err
    assert "unlisted" not in json.loads((exp / "reports/prepare.json").read_text())


def test_a_bad_unlisted_tokenize_file_is_one_line_and_nothing_is_written(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = project(proj, pool)
    (path.parent / "steps" / "tokenize_sft_3.py").write_text("RAW = ['raw/missing.jsonl']\n")
    code, out, err = pl("-c", str(path), "--prepare-only")
    assert code == 2 and out == ""
    assert err == ("error: step tokenize_sft_3: RAW raw/missing.jsonl not found "
                   f"({proj / 'raw/missing.jsonl'}); paths are relative to the project root\n")
    assert files_under(pool) == []


def test_script_replaces_a_train_sft_runner_and_keeps_its_outputs_and_skips(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = project(proj, pool)
    code, out, err = pl("-c", str(path))
    assert code == 0, err[-3000:]
    assert "train_sft_0: never ran; running scripts/fake.py on local (its SCRIPT, in place of runners/sft_run.py)" \
        in err
    exp = pool / "experiments" / "exp"
    # The type names the output folder (SET's run_name renames it, as for the runner); the script wrote it.
    seen = json.loads((exp / "model/hf/sft_custom/seen.json").read_text())
    # ARGS alone (a string, split as a shell would): no runner flags (--config, --set run_name=...).
    assert seen["argv"] == ["--epochs", "2", "--tag", "a b"]
    env = seen["env"]
    assert env["STEP_ID"] == "train_sft_0" and env["STEP_TYPE"] == "train_sft"
    assert env["STEP_OUTPUTS"] == "model/hf/sft_custom"
    # Every setting, the seed's lower-case ones too, and the pipeline's shared ones, as environment variables.
    assert env["LR"] == "2e-05" and env["lr"] == "3e-5" and env["WORD"] == "sft" and env["GREETING"] == "hi"
    assert json.loads(env["SET"]) == {"run_name": "sft_custom"} and env["SCRIPT"] == "scripts/fake.py"
    assert record(pool, "train_sft_0")["outputs"] == ["model/hf/sft_custom"]
    # The env file holds them too, as for any step.
    assert "lr=3e-5" in (exp / "data/pipeline/train_sft_0.env").read_text().splitlines()

    # The eval step after it: chained by the types' rules (MODEL_PREFIX, the SFT output pulled), its report where
    # the eval type names it.
    report = json.loads((exp / "reports/eval/eval_0.json").read_text())
    assert report["argv"] == ["--greedy"] and report["prev_word"] == "sft"
    assert report["env"]["MODEL_PREFIX"] == "model/hf/sft_custom"
    assert report["env"]["STEP_INPUTS"] == "model/hf/sft_custom"
    assert report["env"]["STEP_OUTPUTS"] == "reports/eval/eval_0.json" and report["env"]["LR"] is None
    first = {s: record(pool, s)["job_id"] for s in ("train_sft_0", "eval_0")}

    # Up to date: skipped.
    code, _, err = pl("-c", str(path))
    assert code == 0 and err.count(": up to date (job") == 2, err[-3000:]
    assert {s: record(pool, s)["job_id"] for s in first} == first

    # Another tokenize file dropped into steps/: prepared and noted, and no step runs again for it.
    (path.parent / "steps" / "tokenize_sft_2.py").write_text("RAW = ['raw/b.jsonl']\n")
    code, _, err = pl("-c", str(path))
    assert code == 0 and err.count(": up to date (job") == 2, err[-3000:]
    assert "note: steps/tokenize_cpt_1.py, steps/tokenize_sft_2.py not in STEPS" in err
    assert (exp / "data/raw/sft/tokenize_sft_2.jsonl").read_text().count("\n") == 2

    # The type's output gone from the store: the step runs again (so does the one after it).
    import shutil

    shutil.rmtree(exp / "model/hf/sft_custom")
    code, _, err = pl("-c", str(path))
    assert code == 0 and "train_sft_0: output missing from the store (model/hf/sft_custom)" in err, err[-3000:]
    assert "eval_0: input changed (train_sft_0)" in err
    assert (exp / "model/hf/sft_custom/word.txt").read_text() == "sft\n"

    # A setting changed: the step's config hash changes, it runs again.
    cfg = path.parent / "steps" / "train_sft_0.py"
    cfg.write_text(cfg.read_text().replace('lr = "3e-5"', 'lr = "4e-5"'))
    code, _, err = pl("-c", str(path))
    assert code == 0 and "train_sft_0: config changed" in err, err[-3000:]
    assert json.loads((exp / "model/hf/sft_custom/seen.json").read_text())["env"]["lr"] == "4e-5"


def test_dry_run_says_script_replaced_the_runner(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = project(proj, pool)
    code, out, err = pl("-c", str(path), "--dry-run")
    assert code == 0, err
    text = " ".join(out.split())
    assert ("note: train_sft_0: SCRIPT scripts/fake.py replaces runners/sft_run.py (settings as environment "
            "variables, ARGS as arguments); train_sft still names its outputs, checked before a skip: "
            "model/hf/sft_custom") in text, out
    assert ("note: eval_0: SCRIPT scripts/fake.py replaces runners/evals.py (settings as environment variables, ARGS "
            "as arguments); eval still names its outputs, checked before a skip: reports/eval/eval_0.json") in text
    assert out.rstrip().endswith("each step's plan: --full (YAML) or -o json")
    assert max(len(line) for line in out.splitlines()) <= 80, out

    code, out, err = pl("-c", str(path), "--dry-run", "-o", "json")
    assert code == 0, err
    sft, ev = json.loads(out)["steps"]
    assert sft["script"] == "scripts/fake.py" and sft["replaces"] == "runners/sft_run.py"
    assert sft["args"] == ["--epochs", "2", "--tag", "a b"] and sft["outputs"] == ["model/hf/sft_custom"]
    assert any(n.startswith("SCRIPT scripts/fake.py replaces runners/sft_run.py") for n in sft["notes"])
    assert ev["replaces"] == "runners/evals.py" and ev["outputs"] == ["reports/eval/eval_0.json"]
    # The settings are in the job's environment (the local backend's request lists the names it sets).
    assert {"LR", "lr", "WORD", "GREETING", "STEP_OUTPUTS"} <= set(sft["request"]["env"])
    assert not pool.exists()

    # A plain `script` step replaces nothing: no note.
    code, out, _ = pl("-c", str(write_project(proj, [{"id": "script_0", "type": "script"}],
                                               {"script_0.py": 'SCRIPT = "scripts/fake.py"\n'},
                                               {"DATAPOOL": f"file://{pool}"}, fmt="py")), "--dry-run", "--full")
    import yaml

    doc = next(yaml.safe_load_all(out))
    assert code == 0 and doc["step"] == "script_0" and "replaces" not in doc
    assert not any("SCRIPT" in n for n in doc.get("notes", [])), doc


def test_script_step_settings_that_cannot_be_env_vars_are_one_line(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = project(proj, pool)
    cfg = path.parent / "steps" / "train_sft_0.py"
    cfg.write_text(cfg.read_text() + 'JOB_ID = "mine"\n')
    code, out, err = pl("-c", str(path))
    assert code == 2 and out == ""
    assert err == ("error: step train_sft_0: JOB_ID is set by launch on every node, so a SCRIPT step cannot get it "
                   "from its config; rename the setting\n")
    cfg.write_text(cfg.read_text().replace('JOB_ID = "mine"\n', 'SCRIPT = ""\n'))
    code, out, err = pl("-c", str(path), "--dry-run")
    assert code == 2 and err == ("error: step train_sft_0: SCRIPT is empty; give the script's path (relative to the "
                                 "project root) or drop SCRIPT to run the type's runner\n")
    cfg.write_text(cfg.read_text().replace('SCRIPT = ""\n', 'SCRIPT = "scripts/nope.py"\n'))
    code, out, err = pl("-c", str(path), "--dry-run")
    assert code == 2 and err.startswith("error: step train_sft_0: script not found: scripts/nope.py"), err
    assert files_under(pool) == [] and files_under(tmp_path / "home") == []
