# The demo experiment: tokenize -> SFT -> GRPO -> eval on the tiny offline model, every step on this machine's CPU.
#
#   launch pipeline -c configs/experiments/demo/pipeline.py --dry-run        # each step's plan, nothing runs
#   launch pipeline -c configs/experiments/demo/pipeline.py --prepare-only   # datapool, base model, raw data
#   launch pipeline -c configs/experiments/demo/pipeline.py                  # prepare + the four steps
#   launch pipeline status -c configs/experiments/demo/pipeline.py
#
# Outputs land in ./datapool/experiments/demo (or under --datapool). A second run skips every step; edit one step
# config and that step and the ones after it run again. See docs/pipelines.md.

# model/base/tiny-smoke: the tiny offline Llama (its tokenizer trained on the smoke task's text). A real
# experiment names a local directory or a Hugging Face id here, e.g. "Qwen/Qwen2.5-0.5B-Instruct".
BASE_MODEL = "tiny:tiny-smoke"
SEED = 0  # the raw-data shuffle

# Defaults for every step; a step overrides them with its own "backend", "gpu", "max_runtime", ... keys, e.g.
#   {"id": "train_rl_0", "type": "train_rl", "config": "steps/train_rl_0.py", "backend": "ec2", "gpu": "A10G"}
BACKEND = "local"
ENV = {"TOKENIZERS_PARALLELISM": "false"}

STEPS = [
    {"id": "tokenize_sft_0", "type": "tokenize_sft", "config": "steps/tokenize_sft_0.py", "enabled": True},
    {"id": "train_sft_0", "type": "train_sft", "config": "steps/train_sft_0.py", "enabled": True},
    {"id": "train_rl_0", "type": "train_rl", "config": "steps/train_rl_0.py", "enabled": True},
    {"id": "eval_0", "type": "eval", "config": "steps/eval_0.py", "enabled": True},
]
