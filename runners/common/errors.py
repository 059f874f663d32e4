"""User mistakes in runners: one `error:` line on stderr and exit 2, before any work.

`RunnerError` is the one error type of every runner (SFT, DPO, GRPO, PPO, SPO, CPT, eval, tokenize, HRM-LM):
runners/data's `DataError` and HRM-LM's `HRMUserError` are subclasses, so one `except RunnerError` catches them.
Runners do not import `launcher` for this, so they run the same with or without the agent.
"""
from __future__ import annotations

import difflib
import sys
from typing import Iterable, NoReturn


class RunnerError(Exception):
    """A user mistake; the message is one line that names the problem and the fix."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def die(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
