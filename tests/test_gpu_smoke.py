"""bench/gpu_smoke.sh, rehearsed on this CPU (DEVICE=cpu): its four runs go through `launch` and its table reads
their metrics back, so the first GPU session spends its minutes on numbers, not on the script's bugs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_smoke.sh"
RUNS = {"grpo-smoke": "rl-smoke", "ppo-smoke": "ppo-smoke", "spo-smoke": "spo-smoke",
        "sft-qwen2-0.5b": "sft-qwen2-0.5b"}


def _run(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "POOL": str(tmp_path / "pool"), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


def test_cpu_rehearsal_runs_every_job_and_prints_the_table(tmp_path):
    proc = _run(tmp_path, DEVICE="cpu", RL_STEPS="2", SFT_STEPS="2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CPU rehearsal" in proc.stdout
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| run ")}
    assert set(table) == set(RUNS)
    exp = tmp_path / "pool" / "experiments" / "gpu-smoke"
    for name, run_name in RUNS.items():
        exit_code, steps, engine, reward, tokens_per_s, _mfu = table[name]
        assert (exit_code, steps, engine) == ("0", "2", "transformers/transformers"), (name, table[name])
        assert float(tokens_per_s) > 0, (name, table[name])
        rows = [json.loads(line) for line in (exp / "reports" / run_name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == [1, 2], name
        assert (reward == "-") == (name.startswith("sft")), (name, reward)
    # The SFT run packs the smoke corpus (~27 tokens an example) into rows of max_seq_length (4 x 64 in the
    # rehearsal), so a step is mostly real tokens: the tokens/s that MFU is computed from.
    sft = [json.loads(line) for line in (exp / "reports" / "sft-qwen2-0.5b" / "metrics.jsonl").read_text().splitlines()]
    assert 0.75 * 4 * 64 < sft[0]["num_tokens"] <= 4 * 64, sft[0]


def test_no_cuda_or_an_unknown_device_is_exit_2_before_anything_runs(tmp_path):
    for device, message in (("cuda", "torch sees no CUDA GPU"), ("tpu", "DEVICE must be cuda or cpu")):
        proc = _run(tmp_path, DEVICE=device, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
        assert proc.returncode == 2, (device, proc.stdout, proc.stderr)
        assert message in proc.stdout + proc.stderr
        assert not (tmp_path / "pool" / "experiments").exists()
