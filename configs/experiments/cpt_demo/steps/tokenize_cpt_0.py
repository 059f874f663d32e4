# Raw text -> data/tokenized/cpt/tokenize_cpt_0: 64-token blocks, 5% held out, a tokenizer trained on the text.
# Prepare copies RAW into data/raw/cpt/tokenize_cpt_0/ and merges + shuffles it into data/raw/cpt/tokenize_cpt_0.jsonl
# (a .txt file: one document per line).
RAW = ["configs/experiments/cpt_demo/raw/stories_a.txt", "configs/experiments/cpt_demo/raw/stories_b.txt"]
# The tokenizer runner's flags: --train-tokenizer --vocab-size 512 --block-size 64 --validation-fraction 0.05 --workers 1
SET = {"train_tokenizer": True, "vocab_size": 512, "block_size": 64, "validation_fraction": 0.05, "workers": 1}
