"""Two tokenizers behind one small interface: a fixed character vocabulary (synthetic data) and a `tokenizers`
byte-level BPE (real text). Both live in `tokenizer.json`; the char one is recognised by its `"type": "char"`."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import HRMUserError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: str | None = None):
        # Printable ASCII covers every synthetic prompt and most hand-typed ones.
        self.chars = chars if chars is not None else "".join(chr(c) for c in range(32, 127))
        self.itos = list(SPECIALS) + list(self.chars)
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.unk_id) for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids if i >= len(SPECIALS) and i < len(self.itos))

    def to_json(self) -> str:
        return json.dumps({"type": "char", "chars": self.chars})

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())


class BPETokenizer:
    kind = "bpe"

    def __init__(self, tok):
        self.tok = tok
        ids = [tok.token_to_id(s) for s in SPECIALS]
        if None in ids[:3]:
            raise HRMUserError(f"tokenizer lacks one of the special tokens {SPECIALS[:3]}; retrain it or add them")
        self.pad_id, self.bos_id, self.eos_id = ids[:3]

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # Rust-side thread pool: this is where the parallel encoding of `prepare.py` happens.
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def to_json(self) -> str:
        return self.tok.to_str()

    def save(self, path: Path) -> None:
        self.tok.save(str(path))


def train_bpe(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


def load_tokenizer(path: str | Path):
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise HRMUserError(f"tokenizer not found: {path}")
    return tokenizer_from_json(path.read_text(), str(path))


def tokenizer_from_json(text: str, source: str = "tokenizer"):
    """The tokenizer a `tokenizer.json` text describes: a file's, or the copy embedded in every checkpoint."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise HRMUserError(f"{source}: not a JSON tokenizer file") from None
    if data.get("type") == "char":
        return CharTokenizer(data["chars"])
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_str(text))
