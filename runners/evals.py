"""Eval: generate completions for the task's eval prompts in batches, score them with the task's metrics.

    python runners/evals.py --config configs/eval/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]

Task hooks: get_eval_dataset(config) -> rows with "prompt" (string or chat messages);
compute_metrics(prompts, completions, dataset_rows, config, tokenizer) -> dict. Completions have the same shape
GRPO gives reward functions (a string, or [{"role": "assistant", "content": ...}] for chat prompts), so a task can
reuse its rewards as metrics. Writes reports/eval/<eval.name>.json under EXPERIMENT_DIR.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.backend import cuda_available, importable, select_backend  # noqa: E402
from runners.common.config import load_config, save_resolved  # noqa: E402
from runners.common.errors import RunnerError  # noqa: E402
from runners.common.model import build_if_needed, load_model_and_tokenizer, model_source  # noqa: E402
from runners.common.paths import run_paths  # noqa: E402
from runners.common.tasks import load_task, validate_task_section  # noqa: E402
from runners.common.training import parse_args, user_errors  # noqa: E402


def render_prompts(rows, tokenizer) -> list[str]:
    texts = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            texts.append(prompt)
        else:
            texts.append(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
    return texts


def generate_transformers(model, tokenizer, texts: list[str], gen) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row continues from its prompt
    model.eval()
    sampling = {"do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p} if gen.temperature > 0 else {"do_sample": False}
    out = []
    for start in range(0, len(texts), gen.batch_size):
        batch = tokenizer(texts[start:start + gen.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model.device)
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=gen.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
        out += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def generate_vllm(source: str, texts: list[str], gen) -> list[str]:  # pragma: no cover - needs CUDA + vllm
    from vllm import LLM, SamplingParams

    llm = LLM(model=source)
    params = SamplingParams(temperature=gen.temperature, top_p=gen.top_p, max_tokens=gen.max_new_tokens)
    return [r.outputs[0].text for r in llm.generate(texts, params)]


def main(argv=None):
    cli = parse_args(argv, "Batched generation + task metrics")
    with user_errors():
        # 1. Check every input before building anything.
        config = load_config(cli.config, cli.set)
        if config.trainer:
            raise RunnerError("'trainer' is not used by evals.py; generation settings go under 'generation'")
        if config.data.pretokenized:
            raise RunnerError("data.pretokenized is read by sft_run.py only; remove it from this config")
        task = load_task(cli.task, "eval")
        validate_task_section(task, config.task)
        paths = run_paths("evals", config.run_name)
        source, must_build = model_source(config, paths.experiment_dir)
        choice = select_backend(config.model.backend, cuda_available(), importable())
        rows = list(task.get_eval_dataset(config))
        if config.eval.num_samples:
            rows = rows[: config.eval.num_samples]
        if not rows:
            raise RunnerError("get_eval_dataset returned no rows")
        print(f"runner: generation with {choice.generation} ({choice.reason}); {len(rows)} prompts", flush=True)

        # 2. Model, generation, metrics.
        build_if_needed(config, source, must_build, task)
        if choice.generation == "vllm":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(source)
            model = None
        else:
            model, tokenizer, _ = load_model_and_tokenizer(config, source, choice)

    started = time.monotonic()
    texts = render_prompts(rows, tokenizer)
    if model is None:
        outputs = generate_vllm(source, texts, config.generation)
    else:
        outputs = generate_transformers(model, tokenizer, texts, config.generation)
    seconds = time.monotonic() - started
    prompts = [row["prompt"] for row in rows]
    completions = [o if isinstance(p, str) else [{"role": "assistant", "content": o}] for p, o in zip(prompts, outputs)]
    metrics = task.compute_metrics(prompts, completions, rows, config, tokenizer)

    out = paths.experiment_dir / "reports" / "eval" / f"{config.eval.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "name": config.eval.name,
        "model": source,
        "task": cli.task,
        "backend": choice.generation,
        "num_prompts": len(rows),
        "generation_seconds": round(seconds, 3),
        "metrics": metrics,
        "samples": [{"prompt": t, "completion": o} for t, o in zip(texts, outputs)][: config.eval.sample_completions],
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    save_resolved(config, out.with_suffix(".config.yaml"))
    print(f"runner: metrics {json.dumps(metrics, default=str)}", flush=True)
    print(f"runner: wrote {out}", flush=True)


if __name__ == "__main__":
    main()
