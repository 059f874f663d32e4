"""HRM encoder + causal decoder.

Encoder (Wang et al. 2025): two recurrent transformer modules share the input. Per segment the low-level module L
runs T steps per high-level H update, for N cycles:

    z_L <- L(z_L, z_H + x)        every step
    z_H <- H(z_H, z_L)            every T steps

Only the final L and H updates build a graph (one-step gradient approximation): the N*T-1 earlier updates run under
`no_grad`, so memory does not grow with N*T. The decoder is a pre-norm causal transformer that cross-attends to the
final z_H.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import Attention, RMSNorm, Rotary, SwiGLU

IGNORE_INDEX = -100


class EncoderBlock(nn.Module):
    """Post-norm block, as in HRM: keeps the recurrent state on a fixed scale however many times it is applied."""

    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.attn = Attention(cfg.d_model, cfg.n_heads, rotary=rotary)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_expansion)
        self.norm1 = RMSNorm(cfg.d_model)
        self.norm2 = RMSNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, attn_mask=mask))
        return self.norm2(x + self.mlp(x))


class ReasoningModule(nn.Module):
    """One HRM level: add the injected input to the state, then a stack of blocks."""

    def __init__(self, cfg: ModelConfig, n_layers: int, rotary: Rotary):
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(cfg, rotary) for _ in range(n_layers))

    def forward(self, state: torch.Tensor, injection: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = state + injection
        for layer in self.layers:
            h = layer(h, mask)
        return h


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, rotary=rotary)
        self.cross_attn = Attention(cfg.d_model, cfg.n_heads, cross=True)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_expansion)
        self.norm1 = RMSNorm(cfg.d_model)
        self.norm2 = RMSNorm(cfg.d_model)
        self.norm3 = RMSNorm(cfg.d_model)

    def forward(self, x, memory, memory_mask, cache: dict | None = None, offset: int = 0):
        self_cache = cache["self"] if cache is not None else None
        cross_cache = cache["cross"] if cache is not None else None
        # Training sees whole right-padded sequences (causal mask suffices); generation feeds one token at a time
        # against the cache, where every cached key is in the past.
        x = x + self.self_attn(self.norm1(x), is_causal=cache is None, cache=self_cache, offset=offset)
        x = x + self.cross_attn(self.norm2(x), memory=memory, attn_mask=memory_mask, cache=cross_cache)
        return x + self.mlp(self.norm3(x))


@dataclass
class Carry:
    z_h: torch.Tensor
    z_l: torch.Tensor

    def detach(self) -> "Carry":
        return Carry(self.z_h.detach(), self.z_l.detach())


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 1/0 padding mask -> bool (B, 1, 1, S) for SDPA, True = attend."""
    return None if mask is None else mask.bool()[:, None, None, :]


class HRMLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size must be resolved (from meta.json) before building the model")
        self.cfg = cfg
        d = cfg.d_model
        self.embed_scale = math.sqrt(d)
        self.embed = nn.Embedding(cfg.vocab_size, d)
        rotary = Rotary(d // cfg.n_heads, cfg.rope_theta, cfg.max_position)
        self.rotary = rotary
        self.h_module = ReasoningModule(cfg, cfg.h_layers, rotary)
        self.l_module = ReasoningModule(cfg, cfg.l_layers, rotary)
        # Fixed (not learned) initial states, as in HRM: every new sequence starts from the same point.
        self.register_buffer("h_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2.0, b=2.0))
        self.register_buffer("l_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2.0, b=2.0))
        self.q_head = nn.Linear(d, 2)
        self.decoder = nn.ModuleList(DecoderBlock(cfg, rotary) for _ in range(cfg.dec_layers))
        self.final_norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # Start the Q-head strongly at "continue" (HRM's choice) so early training does not halt at once.
        nn.init.zeros_(self.q_head.weight)
        nn.init.constant_(self.q_head.bias, -5.0)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(module.embedding_dim))

    # ---- encoder -------------------------------------------------------------------------------------------
    def initial_carry(self, batch: int, seq: int) -> Carry:
        return Carry(
            self.h_init.expand(batch, seq, -1).clone(),
            self.l_init.expand(batch, seq, -1).clone(),
        )

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) * self.embed_scale

    def encode_segment(self, encoder_ids, encoder_mask, carry: Carry | None = None) -> tuple[Carry, torch.Tensor]:
        """One HRM segment: N cycles x T low-level steps. Returns the new carry and Q logits (halt, continue)."""
        b, s = encoder_ids.shape
        if carry is None:
            carry = self.initial_carry(b, s)
        x = self.embed_tokens(encoder_ids)
        mask = key_mask(encoder_mask)
        z_h, z_l = carry.z_h, carry.z_l
        n, t = self.cfg.h_cycles, self.cfg.l_steps
        with torch.no_grad():
            for i in range(n * t - 1):
                z_l = self.l_module(z_l, z_h + x, mask)
                if (i + 1) % t == 0:
                    z_h = self.h_module(z_h, z_l, mask)
        # The one step that carries gradient.
        z_l = self.l_module(z_l, z_h + x, mask)
        z_h = self.h_module(z_h, z_l, mask)
        return Carry(z_h, z_l), self.q_logits(z_h, encoder_mask)

    def q_logits(self, z_h: torch.Tensor, encoder_mask: torch.Tensor | None) -> torch.Tensor:
        if encoder_mask is None:
            pooled = z_h.mean(1)
        else:
            m = encoder_mask.to(z_h.dtype).unsqueeze(-1)
            pooled = (z_h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.q_head(pooled).float()

    @torch.no_grad()
    def encode(self, encoder_ids, encoder_mask) -> torch.Tensor:
        """Inference encoding: all segments (or ACT halting per sample); returns the memory z_H."""
        carry = None
        act = self.cfg.act
        n_seg = act.max_segments if act.enabled else self.cfg.segments
        halted = torch.zeros(encoder_ids.shape[0], dtype=torch.bool, device=encoder_ids.device)
        for seg in range(n_seg):
            new, q = self.encode_segment(encoder_ids, encoder_mask, carry)
            if carry is not None and act.enabled:
                keep = halted[:, None, None]
                new = Carry(torch.where(keep, carry.z_h, new.z_h), torch.where(keep, carry.z_l, new.z_l))
            carry = new
            if act.enabled:
                halted |= q[:, 0] > q[:, 1]
                if bool(halted.all()):
                    break
        return carry.z_h

    # ---- decoder -------------------------------------------------------------------------------------------
    def decode(self, memory, encoder_mask, decoder_input_ids, caches: list | None = None, offset: int = 0):
        h = self.embed_tokens(decoder_input_ids)
        mask = key_mask(encoder_mask)
        for i, block in enumerate(self.decoder):
            h = block(h, memory, mask, cache=None if caches is None else caches[i], offset=offset)
        return self.lm_head(self.final_norm(h))

    def forward(self, encoder_ids, encoder_mask, decoder_input_ids, labels=None, carry: Carry | None = None):
        """One segment end to end: (loss or None, logits, carry, q_logits)."""
        carry, q = self.encode_segment(encoder_ids, encoder_mask, carry)
        logits = self.decode(carry.z_h, encoder_mask, decoder_input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits, carry, q

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean token loss (B,), used by ACT which weighs samples by whether they are still running."""
    tok = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels != IGNORE_INDEX).float()
    return (tok * valid).sum(1) / valid.sum(1).clamp_min(1.0)


def sequence_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced exact match per sample (B,) bool: every label token is the argmax."""
    valid = labels != IGNORE_INDEX
    return ((logits.argmax(-1) == labels) | ~valid).all(1)


@torch.no_grad()
def generate(
    model: HRMLM,
    encoder_ids: torch.Tensor,
    encoder_mask: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy (temperature 0) or sampled decoding. The encoder runs once per prompt; the decoder keeps a KV cache
    (self-attention grows per token, cross-attention K/V are projected once)."""
    model.eval()
    memory = model.encode(encoder_ids, encoder_mask)
    b = encoder_ids.shape[0]
    caches = [{"self": {}, "cross": {}} for _ in model.decoder]
    token = torch.full((b, 1), bos_id, dtype=torch.long, device=encoder_ids.device)
    done = torch.zeros(b, dtype=torch.bool, device=encoder_ids.device)
    out: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        logits = model.decode(memory, encoder_mask, token, caches=caches, offset=step)[:, -1].float()
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / temperature
            if top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        out.append(nxt)
        done |= nxt == eos_id
        token = nxt[:, None]
        if bool(done.all()):
            break
    if not out:
        return [[] for _ in range(b)]
    seqs = torch.stack(out, 1).tolist()
    result = []
    for seq in seqs:
        result.append(seq[: seq.index(eos_id)] if eos_id in seq else seq)
    return result
