"""Building blocks: RMSNorm, SwiGLU, rotary positions and attention over torch SDPA."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: under bf16/fp16 autocast the mean of squares underflows/overflows otherwise.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, expansion: float):
        super().__init__()
        # 2/3 keeps the parameter count of a plain 4x MLP; round to 64 for tensor-core friendly shapes.
        hidden = int(round(expansion * dim * 2 / 3 / 64)) * 64 or 64
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE); cos/sin tables grow on demand."""

    def __init__(self, head_dim: int, theta: float = 10000.0, max_len: int = 512):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(max_len)

    def _build(self, length: int) -> None:
        t = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, H, S, D) -> rotated, positions offset..offset+S-1."""
        seq = x.shape[-2]
        if offset + seq > self.cos.shape[0]:
            self._build(max(offset + seq, 2 * self.cos.shape[0]))
        cos = self.cos[offset : offset + seq].to(x.dtype)
        sin = self.sin[offset : offset + seq].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head attention; self-attention (with RoPE) or cross-attention (no positions on memory)."""

    def __init__(self, dim: int, n_heads: int, cross: bool = False, rotary: Rotary | None = None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"d_model {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.cross = cross
        self.rotary = rotary
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: dict | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """attn_mask: bool, broadcastable to (B, H, Sq, Sk), True = may attend.

        cache (generation only): for cross-attention holds the memory's K/V, computed once per prompt; for
        self-attention holds K/V of the tokens so far and is extended in place.
        """
        q = self._heads(self.q(x))
        if self.cross:
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = self.project_kv(memory)
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        else:
            k, v = self.project_kv(x)
            if self.rotary is not None:
                q = self.rotary(q, offset)
                k = self.rotary(k, offset)
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None)
        b, _, s, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(b, s, -1))
