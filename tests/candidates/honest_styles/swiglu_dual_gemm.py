"""SwiGLU MLP prologue as one dual GEMM: each program accumulates x @ W_gate^T and
x @ W_up^T for the same tile in fp32 and writes silu(gate) * up once, in bf16.

Problem: level2/swiglu
Style: weights kept in nn.Linear submodules built like the reference and read through
    .weight (never called); tl.dot on bf16 tiles with fp32 accumulators; transposed weight
    access through strides; autotune keyed on sizes; int64 offsets
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.autotune(
    configs=[triton.Config({"BM": 32, "BN": 32, "BK": 32}, num_warps=4),
             triton.Config({"BM": 64, "BN": 64, "BK": 32}, num_warps=4, num_stages=3)],
    key=["M", "N", "K"],
)
@triton.jit
def _swiglu_kernel(x_ptr, wg_ptr, wu_ptr, out_ptr, M, N, K, stride_xm, stride_xk,
                   stride_wn, stride_wk, stride_om, stride_on,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    rk = tl.arange(0, BK)
    gate = tl.zeros((BM, BN), tl.float32)
    up = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w_mask = (kk[:, None] < K) & (rn[None, :] < N)
        wg = tl.load(wg_ptr + rn[None, :] * stride_wn + kk[:, None] * stride_wk, mask=w_mask,
                     other=0.0)
        wu = tl.load(wu_ptr + rn[None, :] * stride_wn + kk[:, None] * stride_wk, mask=w_mask,
                     other=0.0)
        gate += tl.dot(x, wg)
        up += tl.dot(x, wu)
    # the unfused code rounds both projections to bf16 before the activation
    g = gate.to(out_ptr.dtype.element_ty).to(tl.float32)
    u = up.to(out_ptr.dtype.element_ty).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :] * stride_on,
             y.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


class ModelNew(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False, dtype=torch.bfloat16)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            self.gate_proj.weight.normal_(0.0, hidden**-0.5)
            self.up_proj.weight.normal_(0.0, hidden**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wg, wu = self.gate_proj.weight, self.up_proj.weight  # [N, K] each
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        M, K = x2d.shape
        N = wg.shape[0]
        assert wu.stride() == wg.stride()
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
        grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]))  # noqa: E731
        _swiglu_kernel[grid](x2d, wg, wu, out, M, N, K, x2d.stride(0), x2d.stride(1),
                             wg.stride(0), wg.stride(1), out.stride(0), out.stride(1))
        return out.view(*x.shape[:-1], N)
