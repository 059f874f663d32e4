"""Config loading and validation, backend selection, task hook checks: no training here."""
from __future__ import annotations

import pytest

from runners.common.backend import BackendChoice, select_backend
from runners.common.config import check_trainer_keys, load_config, yaml_load
from runners.common.errors import RunnerError
from runners.common.tasks import load_task


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_typo_names_dotted_path_and_suggests(tmp_path):
    with pytest.raises(RunnerError) as err:
        load_config(write(tmp_path, "model:\n  name_or_pth: x\n"))
    assert "'model.name_or_pth'" in str(err.value) and "did you mean 'name_or_path'" in str(err.value)
    with pytest.raises(RunnerError, match=r"'lora\.r'.*valid integer"):
        load_config(write(tmp_path, "lora:\n  r: many\n"))
    with pytest.raises(RunnerError, match=r"unknown key 'generaton'.*did you mean 'generation'"):
        load_config(write(tmp_path, "generaton: {}\n"))


def test_set_overrides_are_yaml_typed_and_nested(tmp_path):
    path = write(tmp_path, "trainer:\n  learning_rate: 1e-5\n", name="myrun.yaml")
    config = load_config(path, ["trainer.max_steps=7", "lora.enabled=true", "lora.target_modules=[q_proj, v_proj]",
                                "trainer.learning_rate=2e-3", "model.name_or_path=org/model"])
    assert config.trainer == {"learning_rate": 2e-3, "max_steps": 7}
    assert config.lora.enabled is True and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.model.name_or_path == "org/model"
    assert config.run_name == "myrun"  # defaults to the YAML's stem
    with pytest.raises(RunnerError, match="expected key.sub=value"):
        load_config(path, ["trainer.max_steps"])
    with pytest.raises(RunnerError, match="unknown key 'lora.rank'"):
        load_config(path, ["lora.rank=8"])


def test_yaml_reads_exponents_as_floats():
    assert yaml_load("a: 1e-5\nb: 3\nc: word") == {"a": 1e-5, "b": 3, "c": "word"}


def test_trainer_keys_checked_against_trl_config(tmp_path):
    from trl import GRPOConfig

    config = load_config(write(tmp_path, "trainer:\n  num_generation: 4\n"))
    with pytest.raises(RunnerError, match=r"unknown key 'trainer.num_generation' for GRPOConfig.*'num_generations'"):
        check_trainer_keys(config, GRPOConfig)
    config = load_config(write(tmp_path, "trainer:\n  output_dir: /tmp/x\n"))
    with pytest.raises(RunnerError, match="set by the runner"):
        check_trainer_keys(config, GRPOConfig)


@pytest.mark.parametrize(
    "requested, cuda, found, expected",
    [
        ("auto", False, {"unsloth", "vllm"}, BackendChoice("transformers", "transformers", "")),
        ("auto", True, {"unsloth", "vllm"}, BackendChoice("unsloth", "vllm", "")),
        ("auto", True, {"vllm"}, BackendChoice("transformers", "vllm", "")),
        ("auto", True, set(), BackendChoice("transformers", "transformers", "")),
        ("unsloth", True, {"unsloth"}, BackendChoice("unsloth", "transformers", "")),
        ("vllm", True, {"vllm"}, BackendChoice("transformers", "vllm", "")),
        ("transformers", True, {"unsloth", "vllm"}, BackendChoice("transformers", "transformers", "")),
    ],
)
def test_select_backend(requested, cuda, found, expected):
    got = select_backend(requested, cuda, found)
    assert (got.loader, got.generation) == (expected.loader, expected.generation)


@pytest.mark.parametrize("requested, cuda, found, why", [
    ("unsloth", False, {"unsloth"}, "no CUDA GPU"),
    ("unsloth", True, set(), "not installed"),
    ("vllm", False, {"vllm"}, "no CUDA GPU"),
    ("vllm", True, {"unsloth"}, "not installed"),
])
def test_select_backend_refuses_what_cannot_run(requested, cuda, found, why):
    with pytest.raises(RunnerError, match=why):
        select_backend(requested, cuda, found)


def test_task_missing_hook_lists_needed_and_present(tmp_path):
    task = write(tmp_path, "def get_rl_dataset(config):\n    return []\n", name="half_task.py")
    with pytest.raises(RunnerError) as err:
        load_task(str(task), "rl")
    msg = str(err.value)
    assert "missing get_reward_funcs" in msg
    assert "needs get_rl_dataset, get_reward_funcs" in msg and "has get_rl_dataset" in msg


def test_task_by_module_name_and_missing_module():
    assert load_task("tasks.smoke_task", "dpo").get_dpo_dataset
    with pytest.raises(RunnerError, match="no such module or file"):
        load_task("tasks.nope_task", "rl")
    with pytest.raises(RunnerError, match="no such file"):
        load_task("tasks/nope_task.py", "rl")


def test_build_tiny_model_is_a_small_llama_and_is_reused(tmp_path):
    import json

    from transformers import AutoTokenizer

    from runners.common.tiny_model import build_tiny_model

    out = build_tiny_model(["hello wordle crane", "what is 2 + 3"] * 20, tmp_path / "base" / "tiny")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "zebra ✓"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nzebra ✓<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok("zebra ✓")["input_ids"]) == "zebra ✓"  # byte-level: text it never saw round-trips
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model([], out) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other sizes"):
        build_tiny_model(["x"], out, hidden=32)
