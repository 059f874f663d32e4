# SFT on the tokenized chats, from the base model (MODEL_PREFIX); writes model/hf/train_sft_0.
CONFIG = "configs/sft/smoke.yaml"
TASK = "tasks/smoke_task.py"
SET = {"trainer": {"max_steps": 2, "save_steps": 2}}
