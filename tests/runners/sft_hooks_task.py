"""Fixture task for the optional SFT hooks: raw {question, answer} rows that only the formatting func makes text of,
and a collator that masks the prompt (completion-only loss) and records every batch it builds.

The rows have no `text`, `prompt`, `completion` or `messages` column, so SFTTrainer can only train on them through
the formatting func, and TRL's own labels cover every token, so any -100 in a batch comes from this collator.
`task.trace` names the JSONL file the collator appends its batches to.
"""
from __future__ import annotations

import json
from pathlib import Path

# A special token: one id that never merges with the text around it, so the collator finds the answer by id alone.
SEP = "<|im_start|>"
PAIRS = [("2+3", "5"), ("capital of Peru", "Lima"), ("opposite of up", "down"), ("7*6", "42"),
         ("colour of snow", "white"), ("first letter", "a"), ("10-4", "6"), ("plural of cat", "cats")]


def prompt_text(question: str) -> str:
    return f"Q: {question}{SEP}"


def get_corpus(config) -> list[str]:
    return [f"Q: {q} A: {a}" for q, a in PAIRS] * 5


def get_sft_dataset(config, tokenizer):
    from datasets import Dataset

    return Dataset.from_list([{"question": q, "answer": a} for q, a in PAIRS * 2])


def get_sft_formatting_func(config, tokenizer):
    def formatting(row: dict) -> str:
        return prompt_text(row["question"]) + row["answer"]

    return formatting


def get_sft_data_collator(config, tokenizer):
    import torch

    sep = tokenizer.convert_tokens_to_ids(SEP)
    trace = Path(config.task["trace"])

    def collate(examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for e in examples:
            ids = list(e["input_ids"])
            answer_start = len(ids) - ids[::-1].index(sep)
            pad = width - len(ids)
            batch["input_ids"].append(ids + [tokenizer.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(ids) + [0] * pad)
            batch["labels"].append([-100] * answer_start + ids[answer_start:] + [-100] * pad)
        with trace.open("a") as f:
            f.write(json.dumps(batch) + "\n")
        return {k: torch.tensor(v) for k, v in batch.items()}

    return collate
