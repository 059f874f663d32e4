"""HRM-LM training throughput: tokens/s and peak memory for one fixed config, eager vs torch.compile.

    python bench/hrm_lm_bench.py                       # CPU-sized defaults
    python bench/hrm_lm_bench.py --preset gpu --mixed_precision bf16   # on a GPU; adds MFU

Each mode runs in its own process so peak memory is that mode's alone. Timing starts after warm-up steps
(which include compilation). Prints a Markdown table; the ratio column is tokens/s relative to eager.
MFU = model FLOPs (analytic, below) / step time / the GPU's dense bf16 peak from a small table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PRESETS = {
    # Small enough for a shared 2-core CPU box: the whole bench stays well under 3 minutes.
    "cpu": dict(d_model=128, n_heads=4, h_layers=2, l_layers=2, dec_layers=2, h_cycles=2, l_steps=2,
                batch=8, enc_len=64, dec_len=32, vocab=1024, steps=8, warmup=2),
    "gpu": dict(d_model=512, n_heads=8, h_layers=4, l_layers=4, dec_layers=4, h_cycles=2, l_steps=2,
                batch=64, enc_len=512, dec_len=256, vocab=32000, steps=30, warmup=5),
}

from runners.common.mfu import peak_flops as _peak_flops  # noqa: E402  (the one GPU peak table, runners' too)


def linear_params(module) -> int:
    import torch

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def step_flops(model, cfg, b: int, s_enc: int, s_dec: int) -> float:
    """FLOPs of one training step: HRM runs L N*T times and H N times forward, but backpropagates through one L and
    one H update only (one-step gradient); the decoder is an ordinary forward+backward (x3)."""
    d, n, t = cfg.d_model, cfg.h_cycles, cfg.l_steps
    p_l, p_h = linear_params(model.l_module), linear_params(model.h_module)
    p_dec = linear_params(model.decoder) + model.lm_head.weight.numel()
    tok_e, tok_d = b * s_enc, b * s_dec
    attn_e = 4 * b * s_enc * s_enc * d  # QK^T and AV, one layer application, forward
    fwd_l = 2 * tok_e * p_l + cfg.l_layers * attn_e
    fwd_h = 2 * tok_e * p_h + cfg.h_layers * attn_e
    enc = fwd_l * n * t + fwd_h * n + 2 * (fwd_l + fwd_h)
    dec_attn = cfg.dec_layers * (4 * b * s_dec * s_dec * d + 4 * b * s_dec * s_enc * d)
    dec = 3 * (2 * tok_d * p_dec + dec_attn)
    return float((enc + dec) * cfg.segments)


def worker(args) -> dict:
    import torch

    from runners.hrm_lm.config import ModelConfig
    from runners.hrm_lm.model import HRMLM
    from runners.hrm_lm.steps import train_step

    p = {**PRESETS[args.preset], **{k: v for k, v in vars(args).items() if k in PRESETS["cpu"] and v is not None}}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=p["vocab"], d_model=p["d_model"], n_heads=p["n_heads"], h_layers=p["h_layers"],
                      l_layers=p["l_layers"], dec_layers=p["dec_layers"], h_cycles=p["h_cycles"], l_steps=p["l_steps"])
    model = HRMLM(cfg).to(device)
    fwd = torch.compile(model) if args.mode == "compile" else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    b, se, sd = p["batch"], p["enc_len"], p["dec_len"]
    g = torch.Generator().manual_seed(0)
    batch = {
        "encoder_ids": torch.randint(4, p["vocab"], (b, se), generator=g),
        "encoder_mask": torch.ones(b, se, dtype=torch.long),
        "decoder_input_ids": torch.randint(4, p["vocab"], (b, sd), generator=g),
        "labels": torch.randint(4, p["vocab"], (b, sd), generator=g),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    if args.mixed_precision == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        from contextlib import nullcontext as autocast

    def one_step():
        opt.zero_grad(set_to_none=True)
        train_step(fwd, batch, cfg, autocast)
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(p["warmup"]):
        one_step()
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(p["steps"]):
        one_step()
    sync()
    dt = (time.perf_counter() - t0) / p["steps"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name()
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB (process RSS)
        name = platform.processor() or platform.machine()
    flops = step_flops(model, cfg, b, se, sd)
    peak_flops = _peak_flops(name) if device.type == "cuda" else None
    return {"mode": args.mode, "device": device.type, "device_name": name, "tokens_per_s": b * (se + sd) / dt,
            "step_ms": dt * 1000, "warmup_s": warm_s, "peak_mib": peak, "params": model.num_params(),
            "tflops": flops / dt / 1e12, "mfu": (flops / dt / peak_flops) if peak_flops else None,
            "threads": torch.get_num_threads(), "config": p}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: gpu on CUDA, else cpu")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--mixed_precision", choices=["none", "bf16"], default="none")
    for k in PRESETS["cpu"]:
        ap.add_argument(f"--{k}", type=int)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.preset is None:
        import torch

        args.preset = "gpu" if torch.cuda.is_available() else "cpu"
    if args.mode:  # worker process
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--preset", args.preset,
               "--mixed_precision", args.mixed_precision]
        for k in PRESETS["cpu"]:
            if getattr(args, k) is not None:
                cmd += [f"--{k}", str(getattr(args, k))]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if r.returncode != 0:
            print(f"{mode}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            rows.append({"mode": mode, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "?"})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return 1
    base = next((r["tokens_per_s"] for r in ok if r["mode"] == "eager"), ok[0]["tokens_per_s"])
    c = ok[0]["config"]
    print(f"HRM-LM bench: preset {args.preset}, d_model {c['d_model']}, H/L/dec layers "
          f"{c['h_layers']}/{c['l_layers']}/{c['dec_layers']}, N={c['h_cycles']} T={c['l_steps']}, batch {c['batch']}, "
          f"enc/dec len {c['enc_len']}/{c['dec_len']}, vocab {c['vocab']}, {ok[0]['params']:,} params, "
          f"precision {args.mixed_precision}, device {ok[0]['device']} ({ok[0]['device_name']}, "
          f"{ok[0]['threads']} threads), {c['steps']} timed steps after {c['warmup']} warm-up")
    gpu = ok[0]["device"] == "cuda"
    print()
    print("| mode | tokens/s | ratio vs eager | step ms | warm-up s | peak mem MiB | model TFLOP/s |"
          + (" MFU |" if gpu else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | failed: {r['error'][:80]} | | | | | |")
            continue
        mfu = f" {r['mfu'] * 100:.1f}% |" if gpu and r["mfu"] is not None else (" n/a |" if gpu else "")
        print(f"| {r['mode']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f}x | {r['step_ms']:.1f} | "
              f"{r['warmup_s']:.1f} | {r['peak_mib']:,.0f} | {r['tflops']:.4f} |" + mfu)
    if not gpu:
        print("\nCPU peak memory is the worker process's max RSS (includes the torch runtime), not tensors alone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
