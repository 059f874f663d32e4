"""Generate from a trained HRM-LM run: greedy by default, sampling with --temperature/--top_k.

    python runners/hrm_lm/generate.py --run_name R --prompt "What is 12 + 7?"
    python runners/hrm_lm/generate.py --prompt "What is 12 + 7?" --dataset synthetic --run_name R   # the seed's line
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make `runners` importable and keep runners/hrm_lm/ itself off sys.path (its module names
    # such as tokenizer.py must not shadow top-level packages).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (_here, _here.parent)]
    sys.path.insert(0, str(_here.parents[1]))
    __package__ = "runners.hrm_lm"

from runners.hrm_lm.errors import HRMUserError, fail  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate.py", description="Generate with a trained HRM-LM run.")
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch of prompts")
    p.add_argument("--run_name", help="the run's folder under $CHECKPOINT_DIR (default: hrm_lm)")
    p.add_argument("--save_dir", help="the checkpoint directory of a run trained with --save_dir")
    p.add_argument("--dataset", help="'synthetic' or the prepared directory the run trained on; checked against the "
                                     "checkpoint (the tokenizer always comes from the checkpoint itself)")
    p.add_argument("--checkpoint", default="auto",
                   help="auto (best-model if present, else newest), best, latest, or a path to a .pt file (a lone "
                        ".pt loads: it carries its tokenizer, meta and config)")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0, help="sample only from the k most likely tokens (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def find_checkpoint(run_dir: Path, which: str) -> Path:
    from . import checkpoint as ck

    if which not in ("auto", "best", "latest"):
        path = Path(which)
        if not path.is_file():
            raise HRMUserError(f"checkpoint not found: {path}")
        return path
    best = run_dir / "best-model" / "best.pt"
    if which in ("auto", "best") and best.is_file():
        return best
    if which == "best":
        raise HRMUserError(f"no best model in {run_dir} (train with --save_best_model)")
    found = ck.latest(run_dir)
    if found is None:
        raise HRMUserError(f"no checkpoint in {run_dir}: train first, or pass --run_name / --checkpoint")
    return found[1]


def check_dataset(dataset: str | None, meta: dict, path: Path) -> None:
    """`--dataset` names what the run should have trained on; say so when the checkpoint disagrees."""
    if dataset is None:
        return
    if dataset == "synthetic":
        if meta.get("source") != "synthetic":
            raise HRMUserError(f"{path} was not trained on the synthetic set; drop --dataset or pick the right run")
        return
    from .data import read_meta
    from .train import resolve_dataset_dir

    data_meta = read_meta(resolve_dataset_dir(dataset))
    for key in ("vocab_size", "pad_id", "bos_id", "eos_id"):
        if data_meta.get(key) != meta.get(key):
            raise HRMUserError(f"{path} was trained with {key}={meta.get(key)}, but --dataset {dataset} has "
                               f"{data_meta.get(key)}; drop --dataset or pick the right run")


def load_run(run_name: str | None, which: str = "auto", save_dir: str | None = None, dataset: str | None = None):
    """(model, tokenizer, meta, checkpoint path) for a run, on CPU or the GPU when there is one."""
    import torch

    from . import checkpoint as ck
    from .config import validate_config
    from .model import HRMLM

    if save_dir and not run_name:
        run_dir = Path(save_dir).expanduser().resolve()
    else:
        run_dir = ck.run_root() / (run_name or "hrm_lm")
    path = find_checkpoint(run_dir, which)
    try:
        state = ck.load(path)
    except Exception as exc:  # a truncated copy, a text file: one line, not a traceback
        raise HRMUserError(f"{path}: not an HRM-LM checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not {"config", "model"} <= state.keys():  # another framework's .pt
        raise HRMUserError(f"{path}: not an HRM-LM checkpoint (no model and config inside)")
    # The checkpoint's own tokenizer and meta; a checkpoint from before they were embedded reads its folder's files.
    tokenizer, meta = ck.tokenizer_and_meta(state, path)
    check_dataset(dataset, meta, path)
    cfg = validate_config(state["config"], str(path))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = HRMLM(cfg.model).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, tokenizer, meta, path


def complete(model, tokenizer, meta, prompts: list[str], max_new_tokens=32, temperature=0.0, top_k=0, seed=0):
    import torch

    from .data import collate
    from .model import generate

    device = next(model.parameters()).device
    rows = [{"encoder_ids": tokenizer.encode(p) or [meta["eos_id"]], "decoder_input_ids": [0], "labels": [0]}
            for p in prompts]
    batch = collate(rows, meta["pad_id"])
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    outs = generate(model, batch["encoder_ids"].to(device), batch["encoder_mask"].to(device), meta["bos_id"],
                    meta["eos_id"], max_new_tokens, temperature, top_k, gen)
    return [tokenizer.decode(o) for o in outs]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.max_new_tokens < 1 or args.temperature < 0 or args.top_k < 0:
            raise HRMUserError("--max_new_tokens must be >= 1, --temperature and --top_k >= 0")
        model, tokenizer, meta, path = load_run(args.run_name, args.checkpoint, args.save_dir, args.dataset)
    except HRMUserError as exc:
        fail(str(exc))
    print(f"# checkpoint: {path}", file=sys.stderr)
    texts = complete(model, tokenizer, meta, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                     args.seed)
    for prompt, text in zip(args.prompt, texts):
        print(f"{prompt}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
