"""Mamba-1 mixer block (Mamba-370m dims): in_proj, causal conv1d + SiLU, selective scan, gate, out_proj.

x: [batch_size, seq_len, d_model] bf16 -> [batch_size, seq_len, d_model] bf16. With Di = d_inner,
N = d_state, R = dt_rank:
  xs, z = split(x @ in_proj^T)                       # [B, L, Di] each (bf16)
  xs = silu(causal_depthwise_conv1d(xs, width 4))    # channel-first [B, Di, L]
  dt, Bc, Cc = split(xs @ x_proj^T, [R, N, N]);  dt = dt @ dt_proj_w^T
  y = selective_scan(xs, dt, A = -exp(A_log), Bc, Cc, D, z, dt_proj_b)   # fp32 inside
  out = y @ out_proj^T
The scan (reference_ops.scan.selective_scan): delta = softplus(dt + dt_proj_b);
h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t (h: [B, Di, N], fp32, h_{-1} = 0);
y_t = <h_t, C_t> + D u_t, times silu(z_t); rounded to bf16. The reference runs the recurrence
one position at a time; a chunked or parallel scan is fine if it keeps fp32.
Eager H100 estimate: 256 sequential steps x ~5 small kernels (~60 us a step) + projections
(~0.03 TFLOP) = ~16 ms (measured 16.8 ms); the [B, Di, L, N] fp32 discretization tensors take
2 x 268 MB.
"""

import math

import torch
import torch.nn as nn

from reference_ops.scan import mamba_mixer

batch_size = 8
seq_len = 256
d_model = 1024
d_inner = 2048
d_state = 16
dt_rank = 64
d_conv = 4

KBENCH = {
    "dtype": "bfloat16",
    # bf16 projections around an fp32 scan: eager's bf16 roundings of dt, B, C and the conv
    # output put it 5.3e-3 rel-L2 from fp64 (max element at 16% of a 5e-2 bound, measured on an
    # H100); 3e-2 leaves margin, a dropped scan, gate or D term fails.
    "atol": 3e-2,
    "rtol": 3e-2,
    "shapes": {"odd": {"batch_size": 3, "seq_len": 201}, "wide": {"batch_size": 32, "seq_len": 128}},
    "cpu_shapes": {"small": {"batch_size": 2, "seq_len": 48, "d_model": 32, "d_inner": 64, "dt_rank": 8},
                   "odd": {"batch_size": 1, "seq_len": 37, "d_model": 24, "d_inner": 40, "dt_rank": 5}},
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["d_inner"] * (
        3 * s["d_model"] + 2 * s["dt_rank"] + 2 * s["d_state"] + s["d_conv"] + 6 * s["d_state"]),
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["seq_len"] * s["d_model"] + s["d_inner"] * (
        3 * s["d_model"] + 2 * s["dt_rank"] + 2 * s["d_state"] + s["d_conv"] + 1)) + 4 * s["d_inner"] * (s["d_state"] + 2),
    "fixed": ["d_state"],
    "tags": ["mamba", "ssm", "selective-scan", "recurrence", "model"],
}


def _w(out_f: int, in_f: int, gain: float = 1.0) -> nn.Parameter:
    return nn.Parameter((torch.randn(out_f, in_f) * (gain * in_f**-0.5)).to(torch.bfloat16))


class Model(nn.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int, dt_rank: int, d_conv: int):
        super().__init__()
        self.d_state = d_state
        self.in_proj = _w(2 * d_inner, d_model)
        conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)  # mamba's default init
        self.conv_w = nn.Parameter(conv.weight.detach().to(torch.bfloat16))
        self.conv_b = nn.Parameter(conv.bias.detach().to(torch.bfloat16))
        self.x_proj = _w(dt_rank + 2 * d_state, d_inner, gain=3.0)  # unit-scale dt, B, C
        self.dt_proj_w = nn.Parameter(((torch.rand(d_inner, dt_rank) * 2 - 1) * dt_rank**-0.5).to(torch.bfloat16))
        # dt_proj bias: softplus^-1 of dt ~ log-uniform in [1e-3, 1e-1] (mamba_simple's init)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_proj_b = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) with |A| log-uniform in [0.5, 2 N] (S4D-real spans 1..N; trained values spread)
        self.A_log = nn.Parameter(torch.rand(d_inner, d_state) * math.log(4 * d_state) + math.log(0.5))
        self.D = nn.Parameter(torch.rand(d_inner) + 0.5)
        self.out_proj = _w(d_model, d_inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mamba_mixer(x, dict(self.named_parameters()), self.d_state)


def get_inputs():
    # x: [B, L, d_model]
    return [torch.randn(batch_size, seq_len, d_model, dtype=torch.bfloat16)]


def get_init_inputs():
    return [d_model, d_inner, d_state, dt_rank, d_conv]
