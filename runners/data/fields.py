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
}


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
    source: str = "input"
    _compiled: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: dict | None, source: str = "input") -> "FieldMap":
        cfg = dict(cfg or {})
        unknown = set(cfg) - KNOWN_KEYS
        if unknown:
            raise DataError(
                f"source {source!r}: unknown field mapping key(s) {sorted(unknown)}; allowed: {sorted(KNOWN_KEYS)}"
            )
        fm = cls(**cfg, source=source)
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
