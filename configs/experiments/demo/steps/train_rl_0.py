# GRPO from the SFT model (MODEL_PREFIX = model/hf/train_sft_0); writes model/hf/train_rl_0.
CONFIG = "configs/rl/smoke.yaml"
TASK = "tasks/smoke_task.py"
SET = {"trainer": {"max_steps": 2, "save_steps": 2}}
