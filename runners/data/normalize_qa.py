"""QA sources (SQuAD, TriviaQA, ...) -> prompt/response JSONL, as the seed's `normalize_qa_dataset.py` does.

    python runners/hrm_lm/prepare.py normalize_qa --input squad/train.jsonl --output qa/squad_prompts.jsonl \
        --question-field data.question --answer-field 'data.answers.text[0]' \
        [--context-field data.context --prompt-template '{question}\nContext: {context}']

Inputs: .json / .jsonl / .parquet / .arrow files or directories (format auto-detected, see readers.py). Field paths
are dotted with list indices (`data.answers.text[0]`). Templates take {question} (= {prompt}), {answer}
(= {response}), {context} and any field path; a literal `\n` / `\t` typed in a shell becomes a newline / tab.
Records whose question or answer is missing or empty (SQuAD v2's unanswerable questions) are skipped and counted.
The output is written to a temporary file and renamed, so it appears complete or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from runners.data.errors import DataError
from runners.data.fields import FieldMap, parse_path
from runners.data.readers import iter_records, list_files

# What `{question}` alone would lose when a context is given: the seed's documented example.
DEFAULT_CONTEXT_TEMPLATE = "{question}\nContext: {context}"
_SKIP_SUFFIXES = (".yaml", ".yml", ".md", ".txt", ".py", ".lock")


def unescape(template: str | None) -> str | None:
    """`"{question}\\nContext: {context}"` typed in bash arrives with a backslash and an n."""
    if template is None:
        return None
    return template.replace("\\n", "\n").replace("\\t", "\t")


QA_FLAGS = ("--question-field", "--answer-field", "--context-field")


def qa_fieldmap(question: str, answer: str, context: str | None = None, prompt_template: str | None = None,
                response_template: str | None = None, source: str = "input", flags: tuple = QA_FLAGS) -> FieldMap:
    """`flags`: how the caller's command line spells the three paths, for the error message."""
    for flag, path in zip(flags, (question, answer, context)):
        if path is not None:
            try:
                parse_path(path)
            except DataError as exc:
                raise DataError(f"{flag}: {exc}") from None
    if context and not prompt_template:
        prompt_template = DEFAULT_CONTEXT_TEMPLATE
    return FieldMap.from_config({
        "prompt_field": question, "response_field": answer, "context_field": context,
        "prompt_template": unescape(prompt_template), "response_template": unescape(response_template),
    }, source=source)


def input_files(paths: Iterable[str], exclude: Path | None = None) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        for f in list_files(Path(raw)):
            if f.suffix.lower() in _SKIP_SUFFIXES:
                continue
            if exclude is not None and (f.resolve() == exclude or exclude in f.resolve().parents):
                continue
            files.append(f)
    if not files:
        raise DataError(f"no data files in {' '.join(paths)}; give .json/.jsonl/.parquet/.arrow files or directories")
    return files


def qa_pairs(records: Iterable[dict], fm: FieldMap, stats: dict) -> Iterator[tuple[str, str]]:
    """(prompt, response) per record; a record lacking its question, answer or context is skipped and counted."""
    needed = [p for p in (fm.prompt_field, fm.response_field, fm.context_field) if p]
    for rec in records:
        stats["read"] += 1
        if not isinstance(rec, dict) or not all(fm.has(rec, p) for p in needed):
            stats["skipped"] += 1
            if stats["skipped"] == 1:
                stats["first_keys"] = sorted(rec)[:8] if isinstance(rec, dict) else type(rec).__name__
            continue
        yield fm.qa_pair(rec)


def normalize(inputs: list[str], output: Path, fm: FieldMap) -> dict:
    """Write {"prompt", "response"} lines to `output`; returns the counts. Nothing is left behind on an error."""
    output = output.expanduser().resolve()
    if output.is_dir():
        raise DataError(f"--output {output} is a directory; give a .jsonl file path")
    files = input_files(inputs, exclude=output)
    stats = {"read": 0, "written": 0, "skipped": 0, "files": len(files)}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for f in files:
                for prompt, response in qa_pairs(iter_records(f), fm, stats):
                    out.write(json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False) + "\n")
                    stats["written"] += 1
        if stats["written"] == 0:
            paths = ", ".join(repr(p) for p in (fm.prompt_field, fm.response_field, fm.context_field) if p)
            raise DataError(f"none of the {stats['read']} records has {paths} (first record's keys: "
                            f"{stats.get('first_keys')}); fix --question-field/--answer-field/--context-field")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "--source", dest="input", nargs="+", required=True,
                   help=".json/.jsonl/.parquet/.arrow files or directories")
    p.add_argument("--output", "--dest", dest="output", required=True, help="the prompt/response .jsonl to write")
    p.add_argument("--question-field", "--question_field", "--prompt-field", dest="question", default="question",
                   help="dotted path of the question, e.g. data.question (default: question)")
    p.add_argument("--answer-field", "--answer_field", "--response-field", dest="answer", default="answer",
                   help="dotted path of the answer, e.g. 'data.answers.text[0]' (default: answer)")
    p.add_argument("--context-field", "--context_field", dest="context",
                   help="dotted path of a passage to put in the prompt, e.g. data.context")
    p.add_argument("--prompt-template", "--prompt_template", dest="prompt_template",
                   help="default {question}, or '{question}\\nContext: {context}' with --context-field")
    p.add_argument("--response-template", "--response_template", dest="response_template",
                   help="default {answer}")


def run(args: argparse.Namespace) -> int:
    fm = qa_fieldmap(args.question, args.answer, args.context, args.prompt_template, args.response_template,
                     source=" ".join(args.input))
    stats = normalize(args.input, Path(args.output), fm)
    skipped = f", skipped {stats['skipped']} incomplete (no question, answer or context)" if stats["skipped"] else ""
    print(f"normalized {stats['written']} of {stats['read']} records from {stats['files']} file(s) into "
          f"{args.output}{skipped}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m runners.data.normalize_qa ...` (also `prepare.py normalize_qa ...`)."""
    p = argparse.ArgumentParser(prog="normalize_qa", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
