"""Batch encoders that run in worker processes: raw records -> token arrays.

Workers get the tokenizer by fork (set with `init` in the parent before the pool starts), so nothing heavy
is pickled per task; a task carries raw JSONL bytes or dicts, a result carries numpy arrays.
"""
from __future__ import annotations

import numpy as np

from runners.data.errors import DataError
from runners.data.readers import to_record

IGNORE_INDEX = -100
_STATE: dict = {}


BPE_CACHE_WORDS = 1 << 18


def init(backend, fieldmaps: list, mode: str, ids: dict, add_bos: bool = False, max_length: int = 0,
         hf_tokenizer=None) -> None:
    """`backend` is a tokenizers.Tokenizer; `hf_tokenizer` (transformers) only for SFT's chat template."""
    # The BPE word cache (10k words by default) misses constantly on a real vocabulary's long tail; a
    # larger one makes encoding markedly faster at a bounded cost (tens of MB per worker).
    resize = getattr(getattr(backend, "model", None), "_resize_cache", None)
    if callable(resize):
        resize(BPE_CACHE_WORDS)
    _STATE.update(tok=hf_tokenizer, backend=backend, fieldmaps=fieldmaps, mode=mode,
                  add_bos=add_bos, max_length=max_length, **ids)


def encode_batch(batch: list[tuple[int, object]]):
    return encode_cpt(batch) if _STATE["mode"] == "cpt" else encode_sft(batch)


def encode_cpt(batch: list[tuple[int, object]]) -> tuple[np.ndarray, int, int]:
    """Documents -> one flat array `doc0 EOS doc1 EOS ...` (BOS first when asked). Returns (ids, docs, empty)."""
    fms = _STATE["fieldmaps"]
    texts = [fms[i].text(to_record(raw)) for i, raw in batch]
    texts = [t for t in texts if t]
    empty = len(batch) - len(texts)
    backend = _STATE["backend"]
    enc = backend.encode_batch_fast if hasattr(backend, "encode_batch_fast") else backend.encode_batch
    encs = enc(texts, add_special_tokens=False)
    eos, bos = [_STATE["eos_id"]], ([_STATE["bos_id"]] if _STATE["add_bos"] and _STATE["bos_id"] is not None else [])
    buf: list[int] = []
    for e in encs:  # list.extend + one np.array: C loops, no per-token Python frame
        buf.extend(bos)
        buf.extend(e.ids)
        buf.extend(eos)
    return np.array(buf, dtype=np.uint32), len(texts), empty


def assistant_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render the chat and find the character spans the model should learn (assistant turns).

    A span runs from the end of the generation prompt before an assistant turn to the end of that turn's
    render (its content plus the end-of-turn marker), found by rendering prefixes of the conversation. If a
    template does not render prefixes as prefixes, fall back to the content string itself.
    """
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start_txt = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        end_txt = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        if full.startswith(start_txt) and full.startswith(end_txt) and len(end_txt) > len(start_txt):
            spans.append((len(start_txt), len(end_txt)))
            cursor = len(end_txt)
        else:
            at = full.find(m["content"], cursor)
            if at < 0:
                raise DataError("chat template drops assistant content; cannot mask turns with this template")
            spans.append((at, at + len(m["content"])))
            cursor = at + len(m["content"])
    return full, spans


def encode_sft(batch: list[tuple[int, object]]):
    """Conversations -> (input_ids, labels) with labels -100 everywhere but assistant spans."""
    tok, backend, fms, max_len = _STATE["tok"], _STATE["backend"], _STATE["fieldmaps"], _STATE["max_length"]
    texts, all_spans = [], []
    for i, raw in batch:
        full, spans = assistant_spans(tok, fms[i].messages(to_record(raw)))
        texts.append(full)
        all_spans.append(spans)
    encs = backend.encode_batch(texts, add_special_tokens=False)
    out_ids, out_labels, truncated = [], [], 0
    for e, spans in zip(encs, all_spans):
        ids = np.asarray(e.ids, dtype=np.int32)
        starts = np.fromiter((o[0] for o in e.offsets), dtype=np.int64, count=len(ids))
        keep = np.zeros(len(ids), dtype=bool)
        for a, b in spans:
            keep |= (starts >= a) & (starts < b)
        labels = np.where(keep, ids, IGNORE_INDEX).astype(np.int32)
        if max_len and len(ids) > max_len:
            ids, labels = ids[:max_len], labels[:max_len]
            truncated += 1
        out_ids.append(ids)
        out_labels.append(labels)
    return out_ids, out_labels, truncated
