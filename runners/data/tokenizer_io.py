"""Load a model's tokenizer from a local dir, or train a byte-level BPE one and save it in Hugging Face format."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from runners.data.errors import DataError

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [EOS, BOS, PAD, IM_START, IM_END]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def check_tokenizer_dir(path: Path) -> Path:
    """Refuse early (before any work) when the dir cannot give us a fast tokenizer."""
    if not path.is_dir():
        raise DataError(f"tokenizer dir {path} does not exist; pass --tokenizer DIR (a local HF model dir) "
                        "or --train-tokenizer --vocab-size N")
    if not (path / "tokenizer.json").is_file():
        raise DataError(f"tokenizer dir {path} has no tokenizer.json (a fast tokenizer is needed); "
                        "save it with a fast tokenizer or use --train-tokenizer")
    return path


def tokenizer_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = path / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def load_hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "is_fast", False):
        raise DataError(f"tokenizer in {path} is not a fast tokenizer; batched encoding needs tokenizer.json")
    return tok


def _token_str(val) -> str | None:
    if isinstance(val, dict):
        return val.get("content")
    return val if isinstance(val, str) else None


def load_fast(path: Path):
    """(tokenizers.Tokenizer, special ids, vocab size) straight from tokenizer.json, without transformers.

    CPT needs no chat template, and not importing transformers (and so torch) keeps every forked worker
    ~300 MB lighter and the start seconds faster. Returns None when the special tokens cannot be read from
    the config files; the caller then falls back to transformers.
    """
    from tokenizers import Tokenizer

    cfg: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        p = path / name
        if p.is_file():
            try:
                cfg.update({k: v for k, v in json.loads(p.read_text()).items() if v is not None})
            except ValueError:
                return None
    tk = Tokenizer.from_file(str(path / "tokenizer.json"))
    ids = {}
    for key in ("bos", "eos", "pad"):
        tok = _token_str(cfg.get(f"{key}_token"))
        ids[f"{key}_id"] = tk.token_to_id(tok) if tok else None
        if tok and ids[f"{key}_id"] is None:
            return None
    if ids["eos_id"] is None:
        return None
    if ids["pad_id"] is None:
        ids["pad_id"] = ids["eos_id"]
    return tk, ids, tk.get_vocab_size(with_added_tokens=True)


def special_ids(tok) -> dict:
    eos = tok.eos_token_id
    if eos is None:
        raise DataError("tokenizer has no eos token; CPT packing separates documents with EOS. Set eos_token")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return {"bos_id": tok.bos_token_id, "eos_id": eos, "pad_id": pad}


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Path:
    """Byte-level BPE on the raw data, saved as a PreTrainedTokenizerFast with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise DataError(f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least "
                        f"{256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens)")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir
