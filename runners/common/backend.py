"""Which engine loads the model and which one generates: a pure function, so it is tested on CPU.

Unsloth needs CUDA; vLLM needs CUDA. On a laptop or CI both fall back to plain transformers/TRL.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Collection

from runners.common.errors import RunnerError

BACKENDS = ("auto", "unsloth", "vllm", "transformers")


@dataclass(frozen=True)
class BackendChoice:
    loader: str  # "unsloth" | "transformers": who builds the model (and the LoRA adapters)
    generation: str  # "vllm" | "transformers": who samples (GRPO rollouts, eval)
    reason: str


def importable(names: Collection[str] = ("unsloth", "vllm")) -> set[str]:
    """find_spec only: importing unsloth on a machine without a GPU raises, and vllm is slow to import."""
    found = set()
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                found.add(name)
        except (ImportError, ValueError):
            pass
    return found


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def select_backend(requested: str, cuda_available: bool, importable: Collection[str]) -> BackendChoice:
    if requested not in BACKENDS:
        raise RunnerError(f"model.backend: {requested!r} is not one of {', '.join(BACKENDS)}")
    has_unsloth = cuda_available and "unsloth" in importable
    has_vllm = cuda_available and "vllm" in importable
    gen = "vllm" if has_vllm else "transformers"
    if requested == "transformers":
        return BackendChoice("transformers", "transformers", "asked for transformers")
    if requested == "unsloth":
        if not has_unsloth:
            why = "no CUDA GPU" if not cuda_available else "the unsloth package is not installed"
            raise RunnerError(f"model.backend: unsloth needs a CUDA GPU and unsloth ({why}); use auto or transformers")
        return BackendChoice("unsloth", gen, "asked for unsloth")
    if requested == "vllm":
        if not has_vllm:
            why = "no CUDA GPU" if not cuda_available else "the vllm package is not installed"
            raise RunnerError(f"model.backend: vllm needs a CUDA GPU and vllm ({why}); use auto or transformers")
        return BackendChoice("transformers", "vllm", "asked for vllm")
    if has_unsloth:
        return BackendChoice("unsloth", gen, "auto: CUDA and unsloth present")
    if not cuda_available:
        return BackendChoice("transformers", "transformers", "auto: no CUDA, plain transformers")
    return BackendChoice("transformers", gen, "auto: CUDA without unsloth")


def import_backend(choice: BackendChoice) -> None:
    if choice.loader == "unsloth":  # pragma: no cover - needs CUDA; not run yet
        import unsloth  # noqa: F401


def vllm_trainer_args(config, choice: BackendChoice) -> dict:
    """Trainer arguments for rollouts through vLLM (colocated) when the choice has it; asking for vLLM without it
    is an error. One place, so every on-policy runner (GRPO, PPO, SPO) picks the same engine the same way."""
    if config.trainer.get("use_vllm") and choice.generation != "vllm":
        raise RunnerError("trainer.use_vllm: vllm is not usable here (needs CUDA and vllm); remove it or set false")
    if choice.generation != "vllm":
        return {}
    return {"use_vllm": True, "vllm_mode": config.trainer.get("vllm_mode", "colocate")}
