"""One optimisation step's forward/backward: plain, deep supervision over segments, or ACT halting.

Deep supervision (HRM section 3.3): the batch runs `segments` times, the recurrent state carried over but detached
between segments, and each segment gets its own loss. Backward runs per segment so memory stays that of a single
segment; the gradients add up and the caller takes one optimizer step.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .model import sequence_correct, sequence_loss


def _fwd(model, batch, carry):
    return model(batch["encoder_ids"], batch["encoder_mask"], batch["decoder_input_ids"], batch["labels"], carry)


def train_step(model, batch, cfg, autocast=nullcontext, scaler=None, generator=None) -> dict:
    """Runs forward and backward (gradients accumulate in .grad). Returns floats for logging."""
    if cfg.act.enabled:
        return _act_step(model, batch, cfg, autocast, scaler, generator)
    n_seg = cfg.segments
    carry = None
    total = 0.0
    for _ in range(n_seg):
        with autocast():
            loss, _, carry, _ = _fwd(model, batch, carry)
        _backward(loss / n_seg, scaler)
        total += float(loss.detach())
        carry = carry.detach()
    return {"loss": total / n_seg, "segments": float(n_seg)}


def _backward(loss, scaler):
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _act_step(model, batch, cfg, autocast, scaler, generator) -> dict:
    """ACT as in HRM: after each segment a Q-head scores (halt, continue). Q_halt learns whether the answer is right
    now; Q_continue learns the bootstrapped value of the next segment (computed without gradient). A sample stops
    once Q_halt > Q_continue and it has run its minimum number of segments (random for an exploring fraction)."""
    act = cfg.act
    m_max = act.max_segments
    b = batch["encoder_ids"].shape[0]
    device = batch["encoder_ids"].device
    explore = torch.rand(b, generator=generator, device="cpu") < act.exploration_prob
    min_seg = torch.where(explore, torch.randint(2, m_max + 1, (b,), generator=generator), torch.ones(b, dtype=torch.long))
    min_seg = min_seg.to(device)
    halted = torch.zeros(b, dtype=torch.bool, device=device)
    carry = None
    lm_total, q_total, used = 0.0, 0.0, 0
    for seg in range(m_max):
        active = ~halted
        if not bool(active.any()):
            break
        used += 1
        with autocast():
            _, logits, carry, q = _fwd(model, batch, carry)
            per_sample = sequence_loss(logits, batch["labels"])
            correct = sequence_correct(logits.detach(), batch["labels"]).float()
            act_f = active.float()
            lm_loss = (per_sample * act_f).sum() / b
            q_halt_loss = (F.binary_cross_entropy_with_logits(q[:, 0], correct, reduction="none") * act_f).sum() / b
            loss = lm_loss + 0.5 * q_halt_loss
            if seg + 1 < m_max:
                with torch.no_grad():
                    _, next_q = model.encode_segment(batch["encoder_ids"], batch["encoder_mask"], carry.detach())
                    next_q = next_q.float()
                    target = torch.sigmoid(next_q[:, 0] if seg + 2 == m_max else next_q.max(-1).values)
                q_cont_loss = (F.binary_cross_entropy_with_logits(q[:, 1], target, reduction="none") * act_f).sum() / b
                loss = loss + 0.5 * q_cont_loss
        # Averaged over the segment budget, like the plain deep-supervision path, so the gradient scale does
        # not grow with max_segments.
        _backward(loss / m_max, scaler)
        lm_total += float(lm_loss.detach())
        q_total += float(q_halt_loss.detach())
        with torch.no_grad():
            stop = (q[:, 0] > q[:, 1]) & (seg + 1 >= min_seg)
            halted |= stop | (seg + 1 == m_max)
        carry = carry.detach()
    return {"loss": lm_total / used, "q_loss": q_total / used, "segments": float(used)}


@torch.no_grad()
def eval_loss(model, batch, cfg, autocast=nullcontext) -> tuple[float, int]:
    """Teacher-forced loss of the final segment (what generation sees), summed over tokens, and the token count."""
    n_seg = cfg.act.max_segments if cfg.act.enabled else cfg.segments
    carry = None
    with autocast():
        for _ in range(n_seg):
            _, logits, carry, _ = _fwd(model, batch, carry)
    labels = batch["labels"]
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    return float(loss), int((labels != -100).sum())
