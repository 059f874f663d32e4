"""Run directory layout, atomic checkpoint writes, FIFO rotation and resume lookup.

<run_dir>/
  step_<N>.pt  step_<N>.yaml   rotating (newest `checkpoint_limit` kept), each with the config it was trained with
  final.pt     final.yaml      written when training ends, never rotated
  best-model/  best.pt  best.yaml  tokenizer.json  meta.json   lowest validation loss so far
  config.yaml  tokenizer.json  meta.json   the current invocation's config; tokenizer and meta of every checkpoint

Every .pt carries its config, meta and tokenizer (the tokenizer.json text, key "tokenizer"), so a `.pt` copied out
alone loads (generate, resume); the sibling .yaml (as the seed writes them) and the run folder's tokenizer.json and
meta.json stay for people and tools. Checkpoints written before the tokenizer was embedded still load, with the
tokenizer.json (and meta.json) found beside them: see `tokenizer_and_meta`.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def run_root(env: dict | None = None) -> Path:
    """CHECKPOINT_DIR when the agent sets it, else the agent's default, $EXPERIMENT_DIR/model/hrm_lm (runs are
    subfolders of it)."""
    from launcher.layout import checkpoint_dir

    return checkpoint_dir("hrm_lm_run", env)


def reports_dir(run_name: str, env: dict | None = None) -> Path:
    from launcher.layout import experiment_dir

    return experiment_dir(env) / "reports" / run_name


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def atomic_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    import torch

    # Our own files hold optimizer/scheduler state and RNG tuples, which the weights-only loader refuses.
    return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)


def latest(run_dir: Path) -> tuple[int, Path] | None:
    """Newest checkpoint by training step (final.pt counts with the step stored in it)."""
    candidates = step_checkpoints(run_dir)
    final = run_dir / "final.pt"
    if final.is_file():
        # mmap: only the step is needed, not gigabytes of weights read into memory.
        candidates.append((int(load(final, mmap=True)["step"]), final))
    if not candidates:
        return None
    # On a tie prefer final.pt (it is appended last and max keeps the last maximum only with this key).
    return max(candidates, key=lambda c: (c[0], c[1].name == "final.pt"))


def save_checkpoint(state: dict, path: Path, config_yaml: str) -> Path:
    """`path` plus its sibling `.yaml`; the YAML first, so a visible .pt always has its config beside it."""
    atomic_write_text(path.with_suffix(".yaml"), config_yaml)
    atomic_save(state, path)
    return path


def save_step(state: dict, run_dir: Path, limit: int, config_yaml: str) -> Path:
    path = save_checkpoint(state, run_dir / f"step_{state['step']}.pt", config_yaml)
    rotate(run_dir, limit)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rotate(run_dir: Path, limit: int) -> list[Path]:
    """FIFO: drop the oldest step_*.pt beyond `limit`; final.pt and best-model/ are never touched."""
    removed = []
    ckpts = step_checkpoints(run_dir)
    for _, path in ckpts[: max(0, len(ckpts) - limit)]:
        path.unlink()
        path.with_suffix(".yaml").unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_sidecars(target: Path, config_yaml: str, tokenizer, meta: dict) -> None:
    import json

    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(config_yaml)
    tokenizer.save(target / "tokenizer.json")
    (target / "meta.json").write_text(json.dumps(meta, indent=2))


def save_best(state: dict, run_dir: Path, config_yaml: str) -> Path:
    """best-model/best.pt + best.yaml, with copies of the run's tokenizer.json and meta.json."""
    best_dir = run_dir / "best-model"
    path = save_checkpoint(state, best_dir / "best.pt", config_yaml)
    for name in ("tokenizer.json", "meta.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, best_dir / name)
    return path


def tokenizer_and_meta(state: dict, path: Path):
    """(tokenizer, meta) of a loaded checkpoint: the copies inside it, else (a checkpoint from before they were
    embedded) the tokenizer.json / meta.json in its folder."""
    import json

    from .errors import HRMUserError
    from .tokenizer import load_tokenizer, tokenizer_from_json

    if state.get("tokenizer") is not None:
        tokenizer = tokenizer_from_json(state["tokenizer"], f"{path} (embedded tokenizer)")
    else:
        side = path.parent / "tokenizer.json"
        if not side.is_file():
            raise HRMUserError(f"{path} holds no tokenizer (written before checkpoints carried one) and there is no "
                               f"{side}; copy the run's tokenizer.json and meta.json beside it")
        tokenizer = load_tokenizer(side)
    meta = state.get("meta")
    if meta is None:
        side = path.parent / "meta.json"
        if not side.is_file():
            raise HRMUserError(f"{path} holds no meta and there is no {side}; copy the run's meta.json beside it")
        meta = json.loads(side.read_text())
    return tokenizer, meta
