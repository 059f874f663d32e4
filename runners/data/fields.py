"""Field mapping: turn a raw record into CPT text or SFT messages.

Config keys (all optional; the defaults read `text` or `messages`):
  text_field: body                     # CPT text
  messages_field: conversation         # [{role, content}, ...]
  prompt_field: data.question          # QA-style sources: dotted paths, list indices allowed
  response_field: data.answers.text[0]
  context_field: data.context          # optional; {context} in the templates
  prompt_template: "{context}\n\nQuestion: {prompt}"   # {prompt}/{question}, {response}/{answer}, {context},
                                                     # or any field path
  response_template: "{response}"
  system_prompt: "You are concise."    # prepended as a system turn (SFT)
  text_template: "{title}\n\n{text}"   # CPT text built from several fields
  chosen_field: pair.good              # DPO mixtures (mode dpo): prompt_field, chosen_field, rejected_field
  rejected_field: pair.bad             #   (defaults: prompt, chosen, rejected)
  answer_field: meta.reference         # prompt mixtures (mode rlaif): prompt_field (default prompt) and an
                                       #   optional reference the reward functions receive as `answer`
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runners.data.errors import DataError

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_MISSING = object()
KNOWN_KEYS = {
    "text_field", "messages_field", "prompt_field", "response_field", "context_field",
    "prompt_template", "response_template", "system_prompt", "text_template",
    "chosen_field", "rejected_field", "answer_field",
}
# Modes whose records become rows (JSONL) rather than tokens: their prompt stands alone (no response_field).
ROW_MODES = ("dpo", "rlaif")
_ROW_KEYS = {"dpo": {"prompt_field", "chosen_field", "rejected_field", "system_prompt"},
             "rlaif": {"prompt_field", "answer_field", "system_prompt"}}


def parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_TOKEN.finditer(path):
        if m.start() != pos and path[pos:m.start()] != ".":
            raise DataError(f"field path {path!r} is malformed; write it like data.answers.text[0]")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(path):
        raise DataError(f"field path {path!r} is malformed; write it like data.answers.text[0]")
    return parts


def get_path(record: Any, parts: list[str | int]) -> Any:
    cur = record
    for p in parts:
        if isinstance(p, int):
            if not isinstance(cur, (list, tuple)) or not -len(cur) <= p < len(cur):
                return _MISSING
            cur = cur[p]
        else:
            if not isinstance(cur, dict) or p not in cur:
                return _MISSING
            cur = cur[p]
    return cur


@dataclass
class FieldMap:
    text_field: str | None = None
    messages_field: str | None = None
    prompt_field: str | None = None
    response_field: str | None = None
    context_field: str | None = None
    prompt_template: str | None = None
    response_template: str | None = None
    system_prompt: str | None = None
    text_template: str | None = None
    chosen_field: str | None = None
    rejected_field: str | None = None
    answer_field: str | None = None
    source: str = "input"
    _compiled: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: dict | None, source: str = "input", mode: str | None = None) -> "FieldMap":
        cfg = dict(cfg or {})
        allowed = _ROW_KEYS[mode] if mode in ROW_MODES else KNOWN_KEYS - {"chosen_field", "rejected_field",
                                                                           "answer_field"}
        unknown = set(cfg) - allowed
        if unknown:
            what = f"{mode} " if mode in ROW_MODES else ""
            raise DataError(
                f"source {source!r}: unknown {what}field mapping key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        fm = cls(**cfg, source=source)
        for p in (fm.chosen_field, fm.rejected_field, fm.answer_field):
            if p is not None:
                parse_path(p)
        if mode in ROW_MODES:
            if fm.prompt_field is not None:
                parse_path(fm.prompt_field)
            return fm
        if (fm.prompt_field is None) != (fm.response_field is None):
            raise DataError(f"source {source!r}: prompt_field and response_field go together; set both")
        if fm.context_field is not None and fm.prompt_field is None:
            raise DataError(f"source {source!r}: context_field needs prompt_field and response_field (QA records)")
        for p in (fm.text_field, fm.messages_field, fm.prompt_field, fm.response_field, fm.context_field):
            if p is not None:
                parse_path(p)
        return fm

    def _get(self, record: dict, path: str) -> Any:
        parts = self._compiled.get(path)
        if parts is None:
            parts = self._compiled[path] = parse_path(path)
        return get_path(record, parts)

    def _required(self, record: dict, path: str) -> Any:
        val = self._get(record, path)
        if val is _MISSING or val is None:
            keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"source {self.source!r}: field {path!r} missing in a record (its keys: {keys}); "
                "fix the field mapping (text_field / messages_field / prompt_field / response_field)"
            )
        return val

    def _render(self, template: str, record: dict, extra: dict[str, str]) -> str:
        def sub(m: re.Match) -> str:
            key = m.group(1)
            if key in extra:
                return extra[key]
            return _as_text(self._required(record, key))

        return _PLACEHOLDER.sub(sub, template)

    def has(self, record: dict, path: str) -> bool:
        """The path resolves to a non-empty value in this record (SQuAD v2 rows have `answers.text == []`)."""
        val = self._get(record, path)
        return val is not _MISSING and val is not None and val != "" and val != []

    def qa_pair(self, record: dict) -> tuple[str, str]:
        prompt = _as_text(self._required(record, self.prompt_field))
        response = _as_text(self._required(record, self.response_field))
        # The seed's normalize_qa templates say {question}/{answer}; ours say {prompt}/{response}: both work.
        extra = {"prompt": prompt, "response": response, "question": prompt, "answer": response}
        if self.context_field:
            extra["context"] = _as_text(self._required(record, self.context_field))
        if self.prompt_template:
            prompt = self._render(self.prompt_template, record, extra)
        if self.response_template:
            response = self._render(self.response_template, record, extra)
        return prompt, response

    def messages(self, record: dict) -> list[dict]:
        """SFT view of a record: a list of {role, content} turns."""
        if self.prompt_field:
            prompt, response = self.qa_pair(record)
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        else:
            path = self.messages_field or "messages"
            raw = self._required(record, path)
            if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
                raise DataError(f"source {self.source!r}: field {path!r} must be a list of {{role, content}} turns")
            msgs = []
            for m in raw:
                role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
                if role is None or content is None:
                    raise DataError(f"source {self.source!r}: a turn in {path!r} lacks role/content: {str(m)[:80]}")
                msgs.append({"role": {"human": "user", "gpt": "assistant"}.get(role, role), "content": str(content)})
        if self.system_prompt and not (msgs and msgs[0]["role"] == "system"):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"source {self.source!r}: a conversation has no assistant turn; SFT trains on assistant turns")
        return msgs

    def _value(self, record: dict, path: str):
        """A row value kept as it is when it is chat messages (a list of turns), else text."""
        val = self._required(record, path)
        if isinstance(val, list) and val and all(isinstance(m, dict) for m in val):
            return val
        return _as_text(val)

    def pair(self, record: dict) -> dict:
        """DPO view of a record: {prompt, chosen, rejected} (strings or chat messages, as the source holds them)."""
        row = {"prompt": self._value(record, self.prompt_field or "prompt"),
               "chosen": self._value(record, self.chosen_field or "chosen"),
               "rejected": self._value(record, self.rejected_field or "rejected")}
        return self._with_system(row)

    def prompt_row(self, record: dict) -> dict:
        """Prompt view (GRPO/PPO/SPO): {prompt[, answer]}; the answer reaches the reward functions as `answer`."""
        row = {"prompt": self._value(record, self.prompt_field or "prompt")}
        if self.answer_field:
            row["answer"] = self._value(record, self.answer_field)
        elif self.has(record, "answer"):
            row["answer"] = self._value(record, "answer")
        return self._with_system(row)

    def _with_system(self, row: dict) -> dict:
        if self.system_prompt:
            p = row["prompt"]
            if isinstance(p, list):
                if not (p and p[0].get("role") == "system"):
                    row["prompt"] = [{"role": "system", "content": self.system_prompt}, *p]
            else:
                row["prompt"] = f"{self.system_prompt}\n\n{p}"
        return row

    def text(self, record: dict) -> str:
        """CPT view of a record: one document string."""
        if self.text_template:
            return self._render(self.text_template, record, {})
        if self.prompt_field:
            prompt, response = self.qa_pair(record)
            return f"{prompt}\n{response}"
        if self.messages_field:
            return "\n".join(m["content"] for m in self.messages(record))
        return _as_text(self._required(record, self.text_field or "text"))


def _as_text(val: Any) -> str:
    if isinstance(val, str):
        return val
    if isinstance(val, list) and len(val) == 1:
        return _as_text(val[0])
    return str(val)
