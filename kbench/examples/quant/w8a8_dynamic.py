"""W8A8 with dynamic per-token activation scales, in two Triton kernels: one quantizes each
row of x to int8 (absmax / 127 scale, round half to even, as torch.round), one multiplies
int8 codes on the tensor cores with an int32 accumulator and applies both scales in its
epilogue before the fp16 store."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_M = 128
BLOCK_N = 256
BLOCK_K = 128
GROUP_M = 8
NUM_WARPS = 8
NUM_STAGES = 3
TUNE = {
    "BLOCK_M": [64, 128],
    "BLOCK_N": [64, 128, 256],
    "BLOCK_K": [64, 128],
    "NUM_WARPS": [4, 8],
    "NUM_STAGES": [3, 4, 5],
}


@triton.jit
def _round_half_even(v):
    # Exact for |v| < 2**22: |v| - floor(|v|) is exact, so ties are seen as ties.
    a = tl.abs(v)
    r = tl.floor(a)
    f = a - r
    r_is_odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    r = tl.where((f > 0.5) | ((f == 0.5) & r_is_odd), r + 1.0, r)
    return tl.where(v < 0, -r, r)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, BLOCK: tl.constexpr):
    # One program per row; the whole row (K <= BLOCK) sits in registers, so x is read once.
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < K
    x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=0)
    scale = tl.math.div_rn(tl.maximum(amax, 1e-8), 127.0)  # IEEE division, as torch
    q = _round_half_even(tl.math.div_rn(x, scale))
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)
    tl.store(q_ptr + row * stride_qm + offs, q.to(tl.int8), mask=mask)
    tl.store(s_ptr + row, scale)


@triton.jit
def _int8_matmul_kernel(
    a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # c = (a @ b^T) * sa[:, None] * sb[None, :]; a: [M, K] int8, b: [N, K] int8
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak  # [BM, BK]
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn  # [BK, BN] of b^T

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)  # int8 x int8 -> int32, exact
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    sa = tl.load(sa_ptr + offs_m, mask=offs_m < M, other=0.0)
    sb = tl.load(sb_ptr + offs_n, mask=offs_n < N, other=0.0)
    c = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


class ModelNew(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        # Offline weight quantization, identical to the reference's so the seed gives the
        # same codes: Gaussian W, one absmax / 127 scale per output channel.
        w = torch.randn(out_features, in_features) * in_features**-0.5  # [N, K] fp32
        w_scale = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127  # [N, 1]
        w_q = torch.round(w / w_scale).clamp(-127, 127).to(torch.int8)  # [N, K]
        self.register_buffer("w_q", w_q)
        self.register_buffer("w_scale", w_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # the row kernel reads x[m, :] as one contiguous run
        M, K = x.shape
        N = self.w_q.shape[0]
        x_q = torch.empty((M, K), dtype=torch.int8, device=x.device)
        x_scale = torch.empty((M,), dtype=torch.float32, device=x.device)
        _quantize_rows_kernel[(M,)](
            x, x_q, x_scale, K, x.stride(0), x_q.stride(0),
            BLOCK=triton.next_power_of_2(K), num_warps=8,
        )
        y = torch.empty((M, N), dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
        _int8_matmul_kernel[grid](
            x_q, self.w_q, x_scale, self.w_scale, y, M, N, K,
            x_q.stride(0), x_q.stride(1), self.w_q.stride(0), self.w_q.stride(1),
            y.stride(0), y.stride(1),
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        return y
