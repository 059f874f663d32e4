#!/usr/bin/env bash
# GPU smoke and numbers: GRPO, PPO and SPO smoke runs, then SFT steps of a random-init Qwen2-0.5B-shaped model (32
# packed rows of 512 tokens per step, bf16), each through `launch` (local backend) on this machine's CUDA GPU. Prints tokens/s and MFU per run, as a
# table for docs/benchmarks.md with the card's name. Nothing is downloaded: every model is built from a config here
# (a GPU box without internet runs it as it is).
#
#   bash bench/gpu_smoke.sh
#   PYTHON=/opt/venv/bin/python POOL=/scratch/gpu-smoke SFT_STEPS=5 bash bench/gpu_smoke.sh
#
# Needs a CUDA build of torch in $PYTHON's environment. With vllm installed the RL rollouts go through vLLM
# (model.backend: auto), without it through transformers; the table says which. Exit code: the number of runs
# that failed (their logs are in $POOL/<name>.log).
#
# DEVICE=cpu rehearses the whole script on a CPU (tests/test_gpu_smoke.py does, in CI): the same runs and table,
# with a 2-layer model of the same family in float32, short rows and RL_STEPS/SFT_STEPS steps, so that the first GPU session
# spends its minutes on numbers, not on the script's bugs. Its numbers mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
POOL=${POOL:-/tmp/gpu-smoke}
EXP=gpu-smoke
SFT_STEPS=${SFT_STEPS:-3}   # the first step includes CUDA warm-up; the table reports the last one
RL_STEPS=${RL_STEPS:-}      # empty: each smoke config's own max_steps
export DEVICE=${DEVICE:-cuda}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LAUNCHER_HOME=${LAUNCHER_HOME:-$POOL/home}

case $DEVICE in
  cuda) "$PY" -c 'import sys, torch; torch.cuda.is_available() or sys.exit("gpu_smoke: torch sees no CUDA GPU (is it a CUDA build?)")' \
          || exit 2
        SFT=(--set model.dtype=bfloat16 --set trainer.bf16=true --set model.max_seq_length=512
             --set trainer.per_device_train_batch_size=32) ;;
  cpu)  SFT=(--set model.dtype=float32 --set model.max_seq_length=64 --set trainer.per_device_train_batch_size=4) ;;
  *)    echo "gpu_smoke: DEVICE must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac
rm -rf "$POOL/experiments/$EXP"   # a re-run measures again instead of finding finished runs
mkdir -p "$POOL"

# The 0.5B model: Qwen2.5-0.5B's shape (24 layers, d 896, GQA 14/2, vocab 151936, tied embeddings), random
# weights in bf16, with the smoke task's tiny tokenizer (ids < 512; the embedding keeps the full vocabulary).
POOL=$POOL EXP=$EXP "$PY" - <<'EOF' || exit 2
import os, sys
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
from runners.common.tiny_model import build_tiny_model
from tasks.smoke_task import get_corpus
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
base = Path(os.environ["POOL"]) / "experiments" / os.environ["EXP"] / "model" / "base"
tok = AutoTokenizer.from_pretrained(build_tiny_model(get_corpus(None), base / "tiny-smoke"))
cuda = os.environ["DEVICE"] == "cuda"
shape = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24) if cuda else \
    dict(vocab_size=512, hidden_size=56, intermediate_size=128, num_hidden_layers=2)   # the rehearsal's
config = Qwen2Config(**shape, num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                     rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
with torch.device(os.environ["DEVICE"]):
    model = Qwen2ForCausalLM(config).to(torch.bfloat16 if cuda else torch.float32)
model.save_pretrained(base / "qwen2-0.5b-random")
tok.save_pretrained(base / "qwen2-0.5b-random")
print(f"gpu_smoke: built qwen2-0.5b-random, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
      f"on {torch.cuda.get_device_name() if cuda else 'cpu'}")
EOF

FAILED=0
RUNS=()
run() {  # run NAME RUN_NAME SCRIPT ARGS...: one job through launch; its log lines that matter, then on
  local name=$1 run_name=$2; shift 2
  echo "== $name: launch $*"
  "$PY" -m launcher --experiment "$EXP" --datapool "file://$POOL" --name "$name" "$@" >"$POOL/$name.log" 2>&1
  local rc=$?
  grep -E "^(runner:|step |eval |error)" "$POOL/$name.log" | tail -n 6
  [ "$rc" -eq 0 ] || { echo "gpu_smoke: $name failed (exit $rc); log: $POOL/$name.log"; FAILED=$((FAILED + 1)); }
  RUNS+=("$name:$run_name:$rc")
}

RL=(--task tasks/smoke_task.py --set model.backend=auto)
[ -n "$RL_STEPS" ] && RL+=(--set trainer.max_steps="$RL_STEPS")
run grpo-smoke rl-smoke runners/rl_run.py --config configs/rl/smoke.yaml "${RL[@]}"
run ppo-smoke ppo-smoke runners/ppo_run.py --config configs/ppo/smoke.yaml "${RL[@]}"
run spo-smoke spo-smoke runners/spo_run.py --config configs/spo/smoke.yaml "${RL[@]}"
run sft-qwen2-0.5b sft-qwen2-0.5b runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py \
  --set run_name=sft-qwen2-0.5b --set model.init=pretrained --set model.name_or_path=model/base/qwen2-0.5b-random \
  --set model.backend=transformers "${SFT[@]}" --set trainer.packing=true --set task.num_examples=8192 \
  --set trainer.max_steps="$SFT_STEPS" \
  --set trainer.learning_rate=1e-5 --set trainer.save_steps=100000 --set output.save_final=false

POOL=$POOL EXP=$EXP "$PY" - "${RUNS[@]}" <<'EOF'
import json, os, sys
from pathlib import Path

import torch

exp = Path(os.environ["POOL"]) / "experiments" / os.environ["EXP"]
if os.environ["DEVICE"] == "cuda":
    print(f"\nGPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
else:
    print(f"\nCPU rehearsal (numbers mean nothing), torch {torch.__version__}\n")
print("| run | exit | steps | engine | reward first -> last | tokens/s (last step) | MFU % (last step) |")
print("|---|---|---|---|---|---|---|")
for item in sys.argv[1:]:
    name, run_name, rc = item.split(":")
    path = exp / "reports" / run_name / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if "loss" in r or "reward" in r]
    log = (Path(os.environ["POOL"]) / f"{name}.log").read_text(errors="replace")
    engine = next((line.split("backend ", 1)[1].split(" ")[0] for line in log.splitlines()
                   if line.startswith("runner: backend ")), "?")
    if not rows:
        print(f"| {name} | {rc} | 0 | {engine} | - | - | - |")
        continue
    last = rows[-1]
    reward = f"{rows[0]['reward']:.3f} -> {last['reward']:.3f}" if "reward" in last else "-"
    mfu = f"{last['mfu_percent']:.1f}" if "mfu_percent" in last else "-"
    print(f"| {name} | {rc} | {last['step']} | {engine} | {reward} | {last.get('tokens_per_s', 0):.0f} | {mfu} |")
EOF
exit "$FAILED"
