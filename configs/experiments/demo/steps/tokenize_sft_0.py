# Chat data -> data/tokenized/sft/tokenize_sft_0 with the base model's tokenizer (only assistant turns trained).
# Prepare copies RAW into data/raw/sft/tokenize_sft_0/ and merges + shuffles it into data/raw/sft/tokenize_sft_0.jsonl.
RAW = ["configs/experiments/demo/raw/chat_a.jsonl", "configs/experiments/demo/raw/chat_b.jsonl"]
SET = {"max_length": 64, "workers": 1}  # the tokenizer runner's flags: --max-length 64 --workers 1
