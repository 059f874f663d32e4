"""MFU arithmetic: FLOPs per token from a model config match the model's own matmul weights; the peak table."""
from __future__ import annotations

import pytest

from runners.common.mfu import PEAK_BF16, flops_per_token, mfu_percent, peak_flops


def matmul_weights(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("kv_heads, tied", [(2, True), (4, False)])
def test_flops_per_token_counts_every_matmul_weight(kv_heads, tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    # 6 N per token (forward 2N, backward 4N), N = every Linear a token passes through, lm_head included even when
    # it shares the embedding's storage; plus the attention scores: 12 * layers * heads * head_dim * seq.
    assert flops_per_token(config, seq_len=0) == 6 * matmul_weights(model)
    assert flops_per_token(config, seq_len=128) - flops_per_token(config, seq_len=0) == 12 * 3 * 64 * 128


def test_peak_table_matches_cuda_device_names():
    assert peak_flops("NVIDIA H100 80GB HBM3") == PEAK_BF16["H100"] == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # the longer key wins over "H100"
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops("NVIDIA A10G") == PEAK_BF16["A10G"] and peak_flops("NVIDIA L40S") == 362e12
    assert peak_flops("Tesla T4") is None  # no bf16 tensor cores: no MFU rather than a wrong one
    # 1e4 tokens/s of a 6e9-FLOP/token model on one 989 TFLOP/s card is 6.07% of peak.
    assert mfu_percent(1e4, 6e9, 989e12) == pytest.approx(6.0667, rel=1e-4)
    assert mfu_percent(2e4, 6e9, 989e12, devices=2) == pytest.approx(6.0667, rel=1e-4)
