# Greedy eval of the GRPO model (MODEL_PREFIX = model/hf/train_rl_0); writes reports/eval/eval_0.json.
CONFIG = "configs/eval/smoke.yaml"
TASK = "tasks/smoke_task.py"
SET = {"eval": {"num_samples": 8}}
