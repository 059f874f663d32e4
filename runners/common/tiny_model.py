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


class TinyModelMismatch(ValueError):
    """`out_dir` already holds a tiny model built from another spec (`found`, the marker's text)."""

    def __init__(self, out_dir: Path, found: str):
        super().__init__(f"{out_dir} holds a tiny model built from another spec ({found})")
        self.out_dir, self.found = out_dir, found


def tiny_model_ready(out_dir: Path, spec: dict, marker: str = _MARKER) -> bool:
    """True when `out_dir` holds the tiny model `spec` describes, False when it holds none.

    Raises TinyModelMismatch when it holds one built from another spec: reusing it would silently train a
    model of other sizes (or on another tokenizer's ids), and overwriting it could destroy someone's base.
    """
    path = Path(out_dir) / marker
    if not path.is_file():
        return False
    found = path.read_text()
    if json.loads(found) == spec:
        return True
    raise TinyModelMismatch(Path(out_dir), found)


def build_tiny_llama(
    tokenizer,
    out_dir: Path,
    hidden: int,
    layers: int,
    heads: int = 4,
    kv_heads: int | None = None,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    spec: dict | None = None,
    marker: str = _MARKER,
) -> Path:
    """Build (or reuse) a tiny LlamaForCausalLM sized to `tokenizer` and save both to `out_dir`; returns `out_dir`.

    `spec` is what makes two builds the same model (written to `marker`; default: the sizes). Written to a
    temp dir then renamed, so a killed build never leaves half a model behind.
    """
    out_dir = Path(out_dir)
    kv_heads = heads if kv_heads is None else kv_heads
    if spec is None:
        spec = {"vocab_size": len(tokenizer), "hidden": hidden, "layers": layers, "heads": heads,
                "kv_heads": kv_heads, "max_position_embeddings": max_position_embeddings}
    if tiny_model_ready(out_dir, spec, marker):
        return out_dir

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Only the tokenizer's ids: the other generation settings stay transformers' defaults, not a model-config copy.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return _save_whole(model, tokenizer, out_dir, spec, marker)


def _save_whole(model, tokenizer, out_dir: Path, spec: dict, marker: str) -> Path:
    """Model, tokenizer and marker written beside `out_dir`, then renamed into place: a reader sees all or none."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / marker).write_text(json.dumps(spec))
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another process built it first; theirs is as good as ours
            if not (out_dir / marker).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def build_tiny_model(
    texts: list[str], out_dir: Path, vocab_size: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Build (or reuse) a tiny LlamaForCausalLM + a BPE tokenizer trained on `texts` in `out_dir`; returns `out_dir`.

    Reused when `out_dir` already holds one with the same sizes, so SFT -> GRPO -> eval share a base.
    """
    out_dir = Path(out_dir)
    spec = {"vocab_size": vocab_size, "hidden": hidden, "layers": layers}
    try:
        if tiny_model_ready(out_dir, spec):
            return out_dir  # checked before training a tokenizer: that is the slow part
    except TinyModelMismatch as exc:
        raise ValueError(f"{out_dir} holds a tiny model with other sizes ({exc.found}); pick another name") from None
    if not texts:
        raise ValueError("build_tiny_model needs some text to train the tokenizer on")
    # 4 query heads sharing 2 key/value heads: the GQA layout of the real models these runs stand in for.
    return build_tiny_llama(_train_tokenizer(texts, vocab_size), out_dir, hidden, layers, heads=4, kv_heads=2,
                            max_position_embeddings=1024, seed=seed, spec=spec)


def build_tiny_reward_model(base_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Build (or reuse) a tiny reward model in `out_dir`: LlamaForSequenceClassification (one output) with the tiny
    LM's config, trunk and tokenizer from `base_dir` (a tiny model built above) and a fresh score head; saved like
    the policy (weights, tokenizer, marker), so `reward.model: <out_dir>` loads it. Returns `out_dir`.

    Its head is random: tests train it for what they want it to prefer (a few torch steps) and save it again.
    """
    out_dir, base_dir = Path(out_dir), Path(base_dir)
    spec = {"reward_model_of": json.loads((base_dir / _MARKER).read_text()), "seed": seed}
    if tiny_model_ready(out_dir, spec):
        return out_dir

    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized": that is the point
    try:
        model = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1,
                                                               pad_token_id=tokenizer.pad_token_id)
    finally:
        hf_logging.set_verbosity(verbosity)
    return _save_whole(model, tokenizer, out_dir, spec, _MARKER)


def main(argv=None) -> None:
    """`python -m runners.common.tiny_model --reward_model NAME --task TASK`: a tiny reward model in the
    experiment's model/reward/NAME (EXPERIMENT_DIR, as the runners resolve it) on its tiny base model/base/BASE,
    built from the task's text first if no run has built it yet (the smoke configs' sizes). Its score head is
    random: a model to wire `reward.model` up with, not a judge."""
    import argparse
    import sys

    from launcher.layout import experiment_dir

    parser = argparse.ArgumentParser(prog="python -m runners.common.tiny_model", description=main.__doc__)
    parser.add_argument("--reward_model", required=True, help="name: written to model/reward/NAME")
    parser.add_argument("--base", default="tiny-smoke", help="the tiny policy in model/base/ (default tiny-smoke)")
    parser.add_argument("--task", help="builds the base from this task's text when it is not built yet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line of output, not "Loading weights" bars
    exp = experiment_dir()
    base, out = exp / "model" / "base" / args.base, exp / "model" / "reward" / args.reward_model
    if not (base / _MARKER).is_file():
        if args.task is None:
            sys.exit(f"error: {base} holds no tiny model; pass --task (e.g. tasks/smoke_task.py) to build it")
        from runners.common.config import RunConfig
        from runners.common.model import corpus_for_tiny
        from runners.common.tasks import load_task

        build_tiny_model(corpus_for_tiny(load_task(args.task, "rl", required=[]), RunConfig()), base)
    build_tiny_reward_model(base, out, seed=args.seed)
    print(f"tiny reward model in {out} (reward.model: model/reward/{args.reward_model})")


if __name__ == "__main__":
    main()
