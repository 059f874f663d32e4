# Seed LLMRunner's example: tokenize a raw text corpus for continued pretraining, then train on it
# (tokenize_cpt_0 -> train_cpt_0), on the tiny offline model, on this machine's CPU.
#
#   launch pipeline -c configs/experiments/cpt_demo/pipeline.py --dry-run        # each step's plan, nothing runs
#   launch pipeline -c configs/experiments/cpt_demo/pipeline.py                  # prepare + the two steps
#   launch pipeline status -c configs/experiments/cpt_demo/pipeline.py
#
# Outputs land in ./datapool/experiments/cpt_demo (or under --datapool). No BASE_MODEL: the tokenize step trains a
# byte-level BPE tokenizer on the raw text and train_cpt_0 builds its tiny model on that tokenizer. A real
# experiment sets BASE_MODEL (a local model dir or a Hugging Face id); the tokenize step then uses its tokenizer
# and the training step starts from it. See docs/pipelines.md.
SEED = 0  # the raw-data shuffle

BACKEND = "local"
ENV = {"TOKENIZERS_PARALLELISM": "false"}

STEPS = [
    {"id": "tokenize_cpt_0", "type": "tokenize_cpt", "config": "steps/tokenize_cpt_0.py", "enabled": True},
    {"id": "train_cpt_0", "type": "train_cpt", "config": "steps/train_cpt_0.py", "enabled": True},
]
