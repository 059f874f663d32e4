"""Model FLOPs utilisation: the one table of GPU peaks (runners and bench/ both read it) and FLOPs per token.

MFU = achieved model FLOP/s / the GPU's dense bf16 tensor-core peak. Model FLOPs count the matmuls a training
step must do (forward + backward = 3x forward), not what recomputation adds, so activation checkpointing does not
inflate it. Stdlib only: importing it costs nothing.
"""
from __future__ import annotations

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets. Matched against
# torch.cuda.get_device_name() by substring, longest key first ("H100 PCIe" before "H100").
PEAK_BF16: dict[str, float] = {
    "B200": 2250e12,
    "H200": 989e12,
    "GH200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 125e12,  # GA102 like the A10; AWS publishes no separate figure
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called `device_name` (as CUDA names it), or None for one not in the table."""
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16[key]
    return None


_TWO_MATRIX_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi"}


def _get(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def flops_per_token(model_config, seq_len: int) -> float:
    """Training FLOPs per token of a decoder-only transformer (PaLM, appendix B): 6 N + 12 L d s.

    N counts the weights every token multiplies through (attention, MLP, the LM head; not the embedding lookup),
    computed from the config so it is the same number for a LoRA run (whose backward still flows through them).
    """
    cfg = getattr(model_config, "text_config", None) or model_config
    d = int(_get(cfg, "hidden_size", "n_embd", "d_model"))
    layers = int(_get(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    heads = int(_get(cfg, "num_attention_heads", "n_head"))
    kv_heads = int(_get(cfg, "num_key_value_heads", default=heads))
    head_dim = int(_get(cfg, "head_dim", default=d // heads))
    ffn = int(_get(cfg, "intermediate_size", "n_inner", default=4 * d))
    vocab = int(_get(cfg, "vocab_size"))
    attn = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    # Llama, Qwen, Mistral, Gemma: gate, up and down projections; the older GPT-style MLPs have two.
    mlp = (2 if getattr(cfg, "model_type", "") in _TWO_MATRIX_MLP else 3) * d * ffn
    n = layers * (attn + mlp) + d * vocab
    return 6.0 * n + 12.0 * layers * heads * head_dim * seq_len


def mfu_percent(tokens_per_s: float, flops_per_tok: float, peak: float, devices: int = 1) -> float:
    return 100.0 * tokens_per_s * flops_per_tok / (peak * max(devices, 1))
