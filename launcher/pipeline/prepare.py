"""Prepare an experiment once (the seed's prepare_exp): layout, base model, raw data, a record of what it did.

    check every source first (nothing is written when one is missing) -> create the layout -> base model into
    model/base/<name> -> each tokenize step's RAW sources copied into data/raw/<mode>/<id>/ and merged, shuffled
    with the pipeline's SEED, into data/raw/<mode>/<id>.jsonl -> reports/prepare.json -> push to the store

Idempotent: a file is copied or written only when its content differs, so a second prepare with the same inputs
copies nothing (and its sync to the store moves nothing). Disabled steps are prepared too, as in the seed, and so
are tokenize step files in steps/ that STEPS does not name (the seed's prepare scans that folder): a one-line note
names them.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..node.layout import create_layout
from .load import Pipeline
from .stepenv import base_model_name, raw_sources, raw_target

MERGEABLE = (".jsonl", ".json", ".txt")
# Text the tiny offline model's tokenizer is trained on when BASE_MODEL is tiny:NAME (the smoke task's corpus).
TINY_TASK = "tasks/smoke_task.py"


@dataclass
class Binding:
    """Where the experiment lives on this machine and in its store (None: the local root is the store)."""

    root: Path
    store_url: str | None
    endpoint_url: str | None
    experiment: str

    @property
    def exp_dir(self) -> Path:
        return self.root / "experiments" / self.experiment


@dataclass
class Prepared:
    report: dict
    copied: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return self.report["fingerprint"]


def binding(pipe: Pipeline) -> Binding:
    """The same root and store a local job of this pipeline gets (launcher.planner.local_binding)."""
    from ..job import build_job
    from ..planner import local_binding

    job = build_job(f"{pipe.path.name}", script="pipeline", datapool=pipe.datapool, endpoint_url=pipe.endpoint_url,
                    experiment=pipe.experiment, workdir=str(pipe.project))
    root, store = local_binding(job)
    scheme = (store or "file://").split("://", 1)[0]
    if scheme not in ("file", "s3"):
        # Prepare pushes from this machine and the step records are read from here: both need a store this
        # machine reaches directly.
        raise UserError(f"datapool {store}: pipelines need a file:// or s3:// store (their records and prepared "
                        f"data live there); {scheme}:// is not supported for pipelines yet")
    return Binding(Path(root), store, pipe.endpoint_url, pipe.experiment)


def _resolve(project: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else project / p


def base_model_source(pipe: Pipeline) -> tuple[str, Path | None]:
    """('none'|'tiny'|'local'|'hf', source dir). Checked before anything is written."""
    spec = pipe.base_model
    if not spec:
        return "none", None
    if spec.startswith("tiny:"):
        name = base_model_name(spec)
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"BASE_MODEL {spec!r}: tiny:NAME takes a plain name, e.g. tiny:tiny-smoke")
        return "tiny", None
    local = _resolve(pipe.project, spec)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"BASE_MODEL {spec}: {local} has no config.json; is it a model directory?")
        return "local", local
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"BASE_MODEL {spec}: no such directory ({local}); give a model directory or a Hugging Face "
                        "id such as Qwen/Qwen2.5-0.5B-Instruct")
    return "hf", _hf_cached(spec)


def _hf_cached(repo_id: str) -> Path:
    """A Hugging Face id from the local cache; downloaded only when the hub is not marked offline."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"BASE_MODEL {repo_id}: huggingface_hub is not installed; pip install huggingface_hub "
                        "or give a local model directory") from None
    # The cache as the environment names it now (huggingface_hub reads it once, at import).
    cache = os.environ.get("HF_HUB_CACHE") or (str(Path(os.environ["HF_HOME"]) / "hub")
                                               if os.environ.get("HF_HOME") else None)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache))
    except Exception:  # noqa: BLE001 - not in the cache: maybe fetch it below
        if offline:
            raise UserError(f"BASE_MODEL {repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                            f"download it once online (huggingface-cli download {repo_id}) or give a local "
                            "directory") from None
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated model: one line
        raise UserError(f"BASE_MODEL {repo_id}: not in the local Hugging Face cache and the download failed "
                        f"({type(exc).__name__}); check the id and your network, or give a local directory") from None


def raw_plan(pipe: Pipeline) -> dict[str, list[Path]]:
    """Every tokenize step's RAW sources (disabled and unlisted steps too), checked to exist and be mergeable."""
    out = {}
    for step in (*pipe.steps, *pipe.unlisted):
        if not step.type.startswith("tokenize_"):
            continue
        files = []
        for rel in raw_sources(step):
            path = _resolve(pipe.project, rel)
            if not path.is_file():
                raise UserError(f"step {step.id}: RAW {rel} not found ({path}); paths are relative to the project "
                                "root")
            if path.suffix not in MERGEABLE:
                raise UserError(f"step {step.id}: RAW {rel}: prepare merges {', '.join(MERGEABLE)} files; convert it "
                                "or give the tokenizer its own --input in ARGS")
            files.append(path)
        if files:
            out[step.id] = files
    return out


def _same(src: Path, dst: Path) -> bool:
    if not dst.is_file():
        return False
    a, b = src.stat(), dst.stat()
    # Copies keep the source's mtime (copy2), like rsync: a big base model is not hashed on every prepare.
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copy2(src.resolve(), tmp)  # the HF cache holds symlinks to blobs: copy the bytes
    os.replace(tmp, dst)


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _rows(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [{"text": line} for line in text.splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise UserError(f"RAW {path}: a .json source must hold a list of records")
        return data
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise UserError(f"RAW {path}: line {n} is not JSON; fix the file (one JSON record per line)") from None
    return rows


def _tree_fingerprint(base: Path) -> list:
    if not base.is_dir():
        return []
    return sorted([p.relative_to(base).as_posix(), p.stat().st_size, int(p.stat().st_mtime)]
                  for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))


def _build_tiny(pipe: Pipeline, out_dir: Path) -> None:
    """The tiny offline Llama, built by the runners' own code in a child process (torch stays out of launch)."""
    code = ("import sys; from pathlib import Path; from runners.common.config import RunConfig; "
            "from runners.common.model import build_if_needed; from runners.common.tasks import load_task; "
            "t = load_task(sys.argv[2], 'rl'); "
            "build_if_needed(RunConfig(), sys.argv[1], True, t)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(pipe.project), os.environ.get("PYTHONPATH"))
                                                        if p)}
    proc = subprocess.run([sys.executable, "-c", code, str(out_dir), TINY_TASK], cwd=pipe.project, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"BASE_MODEL {pipe.base_model}: building the tiny model failed: {tail}")


def prepare(pipe: Pipeline, bind: Binding, log=print) -> Prepared:
    kind, source = base_model_source(pipe)
    raw = raw_plan(pipe)
    exp = bind.exp_dir
    create_layout(exp)
    copied: list[str] = []
    report: dict = {"experiment": pipe.experiment, "pipeline": pipe.path.name, "seed": pipe.seed}
    name = base_model_name(pipe.base_model)
    if kind == "tiny":
        target = exp / "model" / "base" / name
        built = not (target / "config.json").is_file()
        if built:
            log(f"[pipeline] prepare: building the tiny offline model into model/base/{name}")
            _build_tiny(pipe, target)
            copied.append(f"model/base/{name}")
        report["base_model"] = {"spec": pipe.base_model, "kind": "tiny", "path": f"model/base/{name}"}
    elif kind in ("local", "hf"):
        target = exp / "model" / "base" / name
        for src in sorted(p for p in source.rglob("*") if p.is_file() and ".cache" not in p.parts):
            rel = src.relative_to(source)
            if not _same(src, target / rel):
                _copy(src, target / rel)
                copied.append(f"model/base/{name}/{rel.as_posix()}")
        report["base_model"] = {"spec": pipe.base_model, "kind": kind, "source": str(source),
                                "path": f"model/base/{name}"}
    if name:
        report["base_model"]["files"] = _tree_fingerprint(exp / "model" / "base" / name)
    report["raw"] = {}
    for step in (*pipe.steps, *pipe.unlisted):
        if step.id not in raw:
            continue
        mode = step.type.removeprefix("tokenize_")
        rows = []
        kept = []
        for src in raw[step.id]:
            rel = f"data/raw/{mode}/{step.id}/{src.name}"
            if not _same(src, exp / rel):
                _copy(src, exp / rel)
                copied.append(rel)
            kept.append(rel)
            rows += _rows(src)
        # Seeded per step: the same inputs and SEED give the same order on any machine.
        random.Random(f"{pipe.seed}:{step.id}").shuffle(rows)
        data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        merged = raw_target(step)
        if _write_if_changed(exp / merged, data):
            copied.append(merged)
        report["raw"][step.id] = {"sources": [str(p) for p in raw[step.id]], "copies": kept, "merged": merged,
                                  "rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}
    if pipe.unlisted:
        log(unlisted_note(pipe, raw))
        report["unlisted"] = [s.id for s in pipe.unlisted]
    # Unlisted steps never run, so no step computes from their data: it stays out of the fingerprint (a new
    # tokenize file dropped into steps/ does not re-run the pipeline).
    unlisted = {s.id for s in pipe.unlisted}
    inputs = {"base_model": report.get("base_model"),
              "raw": {k: v["sha256"] for k, v in report["raw"].items() if k not in unlisted}}
    report["fingerprint"] = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    report["copied"] = copied
    _write_if_changed(exp / "reports" / "prepare.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    if bind.store_url:
        push(bind, ["data/raw/", "model/base/", "reports/prepare.json"])
    log(f"[pipeline] prepare: {exp} ready; " + (f"copied {len(copied)} file(s)" if copied else "nothing new to copy"))
    return Prepared(report, copied)


def unlisted_note(pipe: Pipeline, raw: dict[str, list[Path]]) -> str:
    """One line: the steps/ files STEPS does not name, what was prepared for them, how to run them."""
    names = ", ".join(f"steps/{Path(s.config or s.id).name}" for s in pipe.unlisted)
    done = [raw_target(s) for s in pipe.unlisted if s.id in raw]
    what = f"raw data prepared ({', '.join(done)})" if done else "no RAW to prepare"
    first = pipe.unlisted[0]
    return (f"[pipeline] prepare: note: {names} not in STEPS: {what}, not run; to run one, add it to STEPS, "
            f"e.g. {{\"id\": \"{first.id}\", \"type\": \"{first.type}\"}}")


def push(bind: Binding, include: list[str]) -> None:
    from ..datapool import open_store, sync
    from ..datapool.local import LocalStore

    sub = f"experiments/{bind.experiment}"
    local, remote = LocalStore(bind.root, sub), open_store(bind.store_url, sub, endpoint_url=bind.endpoint_url)
    try:
        sync(local, remote, include=include)
    finally:
        local.close()
        remote.close()
