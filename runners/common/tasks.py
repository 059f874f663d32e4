"""Load a task plugin (a file path or a module name) and check its hooks before any model is built."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ValidationError

from runners.common.errors import RunnerError

# Hooks per runner: (required, optional). A runner never names a task; it only calls these.
HOOKS = {
    "sft": (["get_sft_dataset"], ["get_sft_eval_dataset", "get_sft_formatting_func", "get_sft_data_collator"]),
    "rl": (["get_rl_dataset", "get_reward_funcs"], ["get_rl_eval_dataset"]),
    "ppo": (["get_rl_dataset", "get_reward_funcs"], ["get_rl_eval_dataset"]),
    "spo": (["get_rl_dataset", "get_reward_funcs"], ["get_rl_eval_dataset"]),
    "dpo": (["get_dpo_dataset"], ["get_dpo_eval_dataset"]),
    "eval": (["get_eval_dataset", "compute_metrics"], []),
}
ALL_HOOKS = sorted({h for req, opt in HOOKS.values() for h in req + opt} | {"get_corpus"})


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise RunnerError(f"--task {spec}: no such file")
        name = f"_task_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses/pickling look the module up by name
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise RunnerError(f"--task {spec}: no such module or file (give a path like tasks/smoke_task.py)") from None
        raise


def present_hooks(module: ModuleType) -> list[str]:
    return [h for h in ALL_HOOKS if callable(getattr(module, h, None))]


def load_task(spec: str, kind: str, required: list[str] | None = None) -> ModuleType:
    """Import the task and refuse it, listing needed vs present hooks, if the runner cannot use it."""
    required = HOOKS[kind][0] if required is None else list(required)
    if spec is None:
        raise RunnerError(f"--task is required: the {kind} runner reads its data from a task's hooks "
                          f"({', '.join(required)}); e.g. --task tasks/smoke_task.py")
    module = _import(spec)
    missing = [h for h in required if not callable(getattr(module, h, None))]
    if missing:
        have = present_hooks(module)
        raise RunnerError(
            f"task {spec} cannot run the {kind} runner: missing {', '.join(missing)}; "
            f"needs {', '.join(required)}; has {', '.join(have) or 'no hooks'}"
        )
    return module


def validate_task_section(module: ModuleType, section: dict) -> BaseModel | dict:
    """A task with a pydantic `TaskConfig` gets its `task:` section checked like the rest of the YAML."""
    model = getattr(module, "TaskConfig", None)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        return section
    try:
        return model.model_validate(section)
    except ValidationError as err:
        from runners.common.config import did_you_mean

        first = err.errors()[0]
        path = ".".join(["task", *map(str, first["loc"])])
        if first["type"] == "extra_forbidden":
            allowed = list(model.model_fields)
            return_hint = did_you_mean(str(first["loc"][-1]), allowed)
            raise RunnerError(f"unknown key '{path}'{return_hint}; allowed here: {', '.join(allowed)}") from None
        raise RunnerError(f"'{path}': {first['msg']} (got {first.get('input')!r})") from None
