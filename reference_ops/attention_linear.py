"""Linear-attention references in fp32: Lightning attention (per-head scalar decay) and the
gated delta rule (Gated DeltaNet).

No softmax and no normalisation of the output: these are the token-mixing cores that a
model wraps with its own projections, gates and norms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["lightning_attention", "lightning_attention_quadratic", "gated_delta_rule"]

Tensor = torch.Tensor


def lightning_attention(
    q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, chunk: int = 256
) -> Tensor:
    """Causal linear attention with per-head decay lambda_h = exp(-slopes[h]):

        o_t = sum_{s <= t} lambda^(t - s) (q_t . k_s) v_s

    q, k: [B, H, S, Dk]; v: [B, H, S, Dv]; slopes: [H] > 0. Returns [B, H, S, Dv] fp32.
    Computed chunk by chunk (Lightning Attention-2): exact intra-chunk products plus a
    [Dk, Dv] state per head carried between chunks; only non-positive exponents are used.
    """
    B, H, S, Dk = q.shape
    assert slopes.shape == (H,) and bool((slopes > 0).all())
    q, k, v = q.float(), k.float(), v.float()
    sl = slopes.float()[:, None, None]  # [H, 1, 1]
    state = q.new_zeros(B, H, Dk, v.shape[-1])  # sum_s lambda^(t - s) k_s v_s^T up to t
    outs = []
    for c0 in range(0, S, chunk):
        qc, kc, vc = q[:, :, c0:c0 + chunk], k[:, :, c0:c0 + chunk], v[:, :, c0:c0 + chunk]
        n = qc.shape[2]
        if c0 == 0 or n != chunk:  # decay factors depend only on positions inside the chunk
            i = torch.arange(n, device=q.device, dtype=torch.float32)
            dist = i[:, None] - i[None, :]  # [n, n] t - s
            intra = torch.where(dist >= 0, torch.exp(-sl * dist.clamp_min(0)), 0.0)  # [H, n, n]
            to_q = torch.exp(-sl * (i + 1)[:, None])  # [H, n, 1] lambda^(t + 1 - c0)
            to_end = torch.exp(-sl * (n - 1 - i)[:, None])  # [H, n, 1] lambda^(c0 + n - 1 - s)
            whole = torch.exp(-sl * n)  # [H, 1, 1] lambda^n
        o = ((qc @ kc.transpose(-1, -2)) * intra) @ vc  # this chunk's keys
        o = o + (qc * to_q) @ state  # earlier chunks, through the state
        state = state * whole + (kc * to_end).transpose(-1, -2) @ vc
        outs.append(o)
    return torch.cat(outs, dim=2)


def lightning_attention_quadratic(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor) -> Tensor:
    """The same as :func:`lightning_attention` by its definition, ``((q k^T) * M) v`` with
    ``M[t, s] = lambda^(t - s)`` for s <= t (O(S^2) memory; for checking on small shapes)."""
    S = q.shape[2]
    t = torch.arange(S, device=q.device)
    dist = (t[:, None] - t[None, :]).float()
    m = torch.where(dist >= 0, torch.exp(-slopes.float()[:, None, None] * dist.clamp_min(0)), 0.0)
    return ((q.float() @ k.float().transpose(-1, -2)) * m) @ v.float()


def gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor) -> Tensor:
    """Gated delta rule (Gated DeltaNet, Yang et al. 2024), the sequential recurrence:

        q_t, k_t <- q_t / ||q_t||, k_t / ||k_t||           (L2 over the key dim)
        S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T   S: [Dv, Dk], S_0 = 0
        o_t = S_t q_t * Dk**-0.5

    q, k: [B, T, H, Dk]; v: [B, T, H, Dv]; g (log decay, <= 0), beta (in [0, 1]): [B, T, H].
    Returns [B, T, H, Dv] fp32.
    """
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    assert k.shape == q.shape and v.shape[:3] == (B, T, H) and g.shape == beta.shape == (B, T, H)

    def steps(x: Tensor) -> Tensor:  # [B, T, H, ...] -> [T, B * H, ...]: one slice per step
        return x.transpose(0, 1).flatten(1, 2)

    q = steps(F.normalize(q.float(), dim=-1) * Dk ** -0.5)[..., None]  # [T, BH, Dk, 1]
    k = F.normalize(k.float(), dim=-1)
    k_col = steps(k)[..., None]  # [T, BH, Dk, 1]
    bk_row = steps(k * beta.float()[..., None])[:, :, None, :]  # [T, BH, 1, Dk] beta_t k_t^T
    v = steps(v.float())[..., None]  # [T, BH, Dv, 1]
    alpha = steps(g.float().exp())[..., None, None]  # [T, BH, 1, 1]
    S = q.new_zeros(B * H, Dv, Dk)
    out = q.new_empty(T, B * H, Dv, 1)
    for t in range(T):
        S.mul_(alpha[t])  # exp(g_t) S_{t-1}
        u = torch.baddbmm(v[t], S, k_col[t], alpha=-1)  # v_t - exp(g_t) S_{t-1} k_t
        # with S' = exp(g_t) S_{t-1}: S' (I - b k k^T) + b v k^T = S' + (v - S' k) b k^T
        S.baddbmm_(u, bk_row[t])
        torch.bmm(S, q[t], out=out[t])  # o_t = S_t q_t
    return out[..., 0].unflatten(1, (B, H)).transpose(0, 1)  # [B, T, H, Dv]
