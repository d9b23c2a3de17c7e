"""Mamba (S6) selective scan and the Mamba mixer block, in plain PyTorch.

The scan is the sequential recurrence of ``mamba_ssm``'s ``selective_scan_ref``: one step per
position, state ``[B, D, N]`` in float32. A kernel may reorder it (chunked or parallel scan) as
long as it keeps float32 precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "causal_conv1d_silu", "mamba_mixer"]


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    """y = (scan + D * u) * silu(z), in float32, returned in u's dtype.

    u, delta, z: [Bt, Dm, L]; A: [Dm, N] (negative); B, C: [Bt, N, L]; D, delta_bias: [Dm].
    delta <- softplus(delta + delta_bias); for t = 0..L-1:
        h = exp(delta_t * A) * h + delta_t * B_t * u_t     # h: [Bt, Dm, N], h_{-1} = 0
        y_t = sum_n h[..., n] * C_t[n]
    """
    dtype = u.dtype
    u, delta, z = u.float(), delta.float(), z.float()
    A, B, C = A.float(), B.float(), C.float()
    delta = F.softplus(delta + delta_bias.float()[:, None])  # [Bt, Dm, L]
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # [Bt, Dm, L, N]
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # [Bt, Dm, L, N]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # h: [Bt, Dm, N]
    ys = []
    for t in range(u.shape[2]):
        h = delta_a[:, :, t] * h + delta_b_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # [Bt, Dm, L]
    y = y + u * D.float()[:, None]
    return (y * F.silu(z)).to(dtype)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv (left padding width - 1) + SiLU. x: [B, D, L]; weight: [D, 1, W]."""
    width = weight.shape[-1]
    return F.silu(F.conv1d(x, weight, bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]])


def mamba_mixer(x: torch.Tensor, p: dict[str, torch.Tensor], d_state: int) -> torch.Tensor:
    """Mamba-1 mixer (``mamba_simple.Mamba`` without the inference cache).

    x: [B, L, d_model]; p: in_proj [2 Di, d_model], conv_w [Di, 1, W], conv_b [Di],
    x_proj [R + 2 N, Di], dt_proj_w [Di, R], dt_proj_b [Di], A_log [Di, N], D [Di],
    out_proj [d_model, Di] -> [B, L, d_model].
    """
    rank = p["dt_proj_w"].shape[1]
    xz = F.linear(x, p["in_proj"])  # [B, L, 2 Di]
    xs, z = xz.chunk(2, dim=-1)
    xs = causal_conv1d_silu(xs.transpose(1, 2), p["conv_w"], p["conv_b"])  # [B, Di, L]
    x_dbl = F.linear(xs.transpose(1, 2), p["x_proj"])  # [B, L, R + 2 N]
    dt, b, c = x_dbl.split([rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, p["dt_proj_w"])  # [B, L, Di]; its bias is added inside the scan
    A = -torch.exp(p["A_log"].float())  # [Di, N]
    y = selective_scan(xs, dt.transpose(1, 2), A, b.transpose(1, 2), c.transpose(1, 2),
                       p["D"], z.transpose(1, 2), p["dt_proj_b"])  # [B, Di, L]
    return F.linear(y.transpose(1, 2), p["out_proj"])
