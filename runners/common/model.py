"""Find, build and load the model: tiny (offline), local dir or hub id; Unsloth on CUDA, else transformers."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from runners.common.backend import BackendChoice
from runners.common.config import RunConfig
from runners.common.errors import RunnerError
from runners.common.paths import looks_like_hub_id, resolve_in_experiment


def corpus_for_tiny(task: ModuleType | None, config: RunConfig) -> list[str]:
    """Text for the tiny tokenizer: the task's own (`get_corpus`), else its RL/eval prompts."""
    if task is None:
        raise RunnerError("model.init: tiny builds its tokenizer from a task's text the first time: pass --task "
                          "(e.g. tasks/smoke_task.py) or set model.name_or_path to a model that is built")
    if callable(getattr(task, "get_corpus", None)):
        return [t for t in task.get_corpus(config) if t]
    for hook in ("get_rl_dataset", "get_eval_dataset"):
        if callable(getattr(task, hook, None)):
            rows = getattr(task, hook)(config)
            texts = []
            for row in rows:
                prompt = row["prompt"]
                texts.append(prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt))
            return texts
    raise RunnerError("model.init: tiny needs text for its tokenizer: add get_corpus(config) -> list[str] to the task")


def model_source(config: RunConfig, exp_dir: Path) -> tuple[str, bool]:
    """(path or hub id, whether it must be built). Checks a local dir exists before anything is built."""
    name = config.model.name_or_path
    if config.model.init == "tiny":
        if "/" in name or name.startswith("."):
            raise RunnerError(f"model.name_or_path: with init: tiny give a plain name (got {name!r})")
        path = exp_dir / "model" / "base" / name
        return str(path), not (path / "config.json").is_file()
    local = resolve_in_experiment(name, exp_dir)
    if local.is_dir():
        if not any((local / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise RunnerError(f"model.name_or_path: {local} has no config.json; is it a model directory?")
        return str(local), False
    if looks_like_hub_id(name) and not Path(name).expanduser().is_absolute():
        return name, False
    raise RunnerError(f"model.name_or_path: no model directory at {local} (relative paths are inside EXPERIMENT_DIR)")


def build_if_needed(config: RunConfig, source: str, must_build: bool, task: ModuleType | None) -> None:
    if not must_build:
        return
    from runners.common.tiny_model import build_tiny_model

    t = config.model.tiny
    build_tiny_model(corpus_for_tiny(task, config), Path(source), t.vocab_size, t.hidden, t.layers, seed=config.seed)


def _torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32  # CPU: half precision is slow and unstable there
    return getattr(torch, name)


def load_model_and_tokenizer(config: RunConfig, source: str, choice: BackendChoice):
    """Returns (model, tokenizer, peft_applied). With Unsloth the LoRA adapters are added here (its fast path)."""
    if choice.loader == "unsloth":
        return _load_unsloth(config, source)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _torch_dtype(config.model.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if (Path(source) / "adapter_config.json").is_file():
            # A LoRA run saved with output.final: adapter; merged here so every runner sees a plain model.
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(source, dtype=dtype).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise RunnerError(f"model.name_or_path: cannot load {source!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora.enabled:
        check_lora_targets(model, config.lora.target_modules)
    return model, tokenizer, False


def _load_unsloth(config: RunConfig, source: str):  # pragma: no cover - needs a CUDA GPU; not run yet
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source,
        max_seq_length=config.model.max_seq_length,
        load_in_4bit=config.model.load_in_4bit,
        full_finetuning=not config.lora.enabled,
        dtype=None if config.model.dtype == "auto" else _torch_dtype(config.model.dtype),
    )
    if not config.lora.enabled:
        return model, tokenizer, False
    check_lora_targets(model, config.lora.target_modules)
    model = FastLanguageModel.get_peft_model(
        model,
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        use_gradient_checkpointing="unsloth",
        random_state=config.seed,
    )
    return model, tokenizer, True


def check_lora_targets(model, targets) -> None:
    """peft matches targets by module-name suffix; a name that matches nothing fails here, not mid-training."""
    if targets == "all-linear":
        return
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)})
    names = {name for name, _ in model.named_modules()}
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            from runners.common.errors import did_you_mean

            raise RunnerError(
                f"lora.target_modules: '{target}' is not a module of this model{did_you_mean(target, linear)}; "
                f"linear layers: {', '.join(linear)}"
            )


def peft_config(config: RunConfig):
    if not config.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )


def save_final(model, tokenizer, out_dir: Path, config: RunConfig) -> Path:
    """Merged full weights (loadable by any engine) or just the adapter, per output.final."""
    out_dir.mkdir(parents=True, exist_ok=True)
    is_peft = hasattr(model, "peft_config")
    if is_peft and config.output.final == "merged":
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
