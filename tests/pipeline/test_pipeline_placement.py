"""Where each step runs: its own keys, then the pipeline's defaults, then the launch profile."""
from __future__ import annotations

import yaml

from launcher.pipeline.run import check

from .conftest import script_config, write_project


def test_step_keys_then_pipeline_defaults_then_profile(proj, tmp_path):
    (proj / "prof.yaml").write_text(yaml.safe_dump({"env": {"A": "profile", "B": "profile"}, "max_runtime": "1h",
                                                    "grace_period": "5s", "secrets": ["HF_TOKEN"]}))
    steps = [{"id": "script_0", "type": "script"},
             {"id": "script_1", "type": "script", "env": {"C": "step"}, "max_runtime": "3h", "secrets": ["WANDB_KEY"]},
             {"id": "script_2", "type": "script", "backend": "ssh", "enabled": True}]
    configs = {f"script_{i}.py": script_config(f"script_{i}", "w") for i in range(3)}
    path = write_project(proj, steps, configs, {
        "PROFILE": "prof.yaml", "ENV": {"B": "pipeline"}, "DATAPOOL": "s3://bucket/pool",
        "SSH": {"host": "me@box:2222"}})
    jobs = {sj.step.id: job for sj, job in check(str(path)).steps}
    a, b, c = jobs["script_0"], jobs["script_1"], jobs["script_2"]
    assert {k: a.env[k] for k in ("A", "B")} == {"A": "profile", "B": "pipeline"}
    assert b.env["C"] == "step" and b.env["B"] == "pipeline" and b.max_runtime == 3 * 3600 and a.max_runtime == 3600
    assert a.grace_period == 5 and b.secrets == ["HF_TOKEN", "WANDB_KEY"]
    # The ssh: section goes to the ssh step only (a local step with one would be refused).
    assert a.backend == "local" and a.ssh is None and c.backend == "ssh" and c.ssh.host == "me@box:2222"
    assert a.env["STEP_ID"] == "script_0" and a.env["STEP_ENV_PATH"] == "data/pipeline/script_0.env"
    assert c.env["STEP_INPUTS"] == "model/hf/script_0,model/hf/script_1"
    assert a.name == "script_0" and a.experiment == "exp" and a.datapool == "s3://bucket/pool"


def test_runner_steps_chain_through_the_datapool(tmp_path):
    """Each runner gets its config as it always does (--config/--task/--set), with the hand-offs filled in."""
    from .conftest import REPO

    exp = tmp_path / "exp"
    (exp / "steps").mkdir(parents=True)
    (exp / "steps" / "tokenize_cpt_0.py").write_text("RAW = ['configs/tokenize/smoke_corpus.txt']\n")
    (exp / "steps" / "train_cpt_0.py").write_text("CONFIG = 'configs/cpt/smoke.yaml'\n")
    (exp / "steps" / "train_dpo_0.py").write_text(
        "CONFIG = 'configs/dpo/smoke.yaml'\nTASK = 'tasks/smoke_task.py'\nSET = {'run_name': 'dpo-x'}\n")
    (exp / "steps" / "eval_0.py").write_text("CONFIG = 'configs/eval/smoke.yaml'\nTASK = 'tasks/smoke_task.py'\n"
                                              "SET = {'model.name_or_path': 'model/hf/elsewhere'}\n")
    (exp / "pipeline.py").write_text(
        "BASE_MODEL = 'tiny:t'\nSTEPS = [" + ", ".join(
            f"{{'id': '{s}', 'type': '{s.rsplit('_', 1)[0]}'}}"
            for s in ("tokenize_cpt_0", "train_cpt_0", "train_dpo_0", "eval_0")) + "]\n")
    steps = {sj.step.id: sj for sj, _ in check(str(exp / "pipeline.py"), project=REPO).steps}
    tok, cpt, dpo, ev = (steps[s] for s in ("tokenize_cpt_0", "train_cpt_0", "train_dpo_0", "eval_0"))
    assert tok.args == ["--mode", "cpt", "--name", "tokenize_cpt_0", "--input", "tokenize_cpt_0.jsonl",
                        "--tokenizer", "model/base/t"]
    assert tok.outputs == ["data/tokenized/cpt/tokenize_cpt_0"]
    assert cpt.args[:2] == ["--config", "configs/cpt/smoke.yaml"] and "--task" not in cpt.args
    assert {"run_name=train_cpt_0", "model.name_or_path=model/base/t",
            "data.tokenized=data/tokenized/cpt/tokenize_cpt_0"} <= set(cpt.args)
    # A run_name from SET names the output and the next step's model.
    assert dpo.outputs == ["model/hf/dpo-x"] and "model.name_or_path=model/hf/train_cpt_0" in dpo.args
    assert ev.env["MODEL_PREFIX"] == "model/hf/dpo-x"
    assert "model.name_or_path=model/hf/elsewhere" in ev.args and "model.name_or_path=model/hf/dpo-x" not in ev.args
    assert ev.outputs == ["reports/eval/eval_0.json"] and ev.env["STEP_INPUTS"] == "model/hf/train_cpt_0,model/hf/dpo-x"
