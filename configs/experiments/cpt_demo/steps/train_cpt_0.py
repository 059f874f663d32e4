# CPT on tokenize_cpt_0's blocks (the pipeline passes data.tokenized, which replaces the config's own data source);
# the tiny model is built on that output's tokenizer. Writes model/hf/train_cpt_0.
CONFIG = "configs/cpt/smoke.yaml"
SET = {"trainer": {"max_steps": 4, "save_steps": 4, "logging_steps": 2}}
