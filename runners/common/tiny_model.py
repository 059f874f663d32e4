"""A tiny Llama built offline: byte-level BPE trained on the task's own text, ChatML template.

Used by CPU tests and smoke configs; real runs load a hub model instead.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MARKER = "tiny_model.json"


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Every byte in the alphabet: any text encodes, even text the corpus never had.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"  # generation pads left; trainers set their own side when they need to
    return fast


def build_tiny_model(
    texts: list[str], out_dir: Path, vocab_size: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Build (or reuse) a tiny LlamaForCausalLM + tokenizer in `out_dir`; returns `out_dir`.

    Reused when `out_dir` already holds one with the same sizes, so SFT -> GRPO -> eval share a base.
    Written to a temp dir then renamed, so a killed build never leaves half a model behind.
    """
    out_dir = Path(out_dir)
    spec = {"vocab_size": vocab_size, "hidden": hidden, "layers": layers}
    marker = out_dir / _MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == spec:
            return out_dir
        raise ValueError(f"{out_dir} holds a tiny model with other sizes ({marker.read_text()}); pick another name")
    if not texts:
        raise ValueError("build_tiny_model needs some text to train the tokenizer on")

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps(spec))
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another process built it first; theirs is as good as ours
            if not (out_dir / _MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
