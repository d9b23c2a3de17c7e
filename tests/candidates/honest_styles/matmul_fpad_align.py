"""C = A @ B with the reduction dim zero-padded to a multiple of BLOCK_K by
torch.nn.functional.pad before the launch (as FlashAttention's Python wrapper pads head_dim to a
multiple of 8), so the K loop needs no mask; M/N edges are masked.

Problem: level1/matmul
Style: F.pad to a BLOCK_K multiple before the launch (aten.constant_pad_nd in forward)
Expected: correct
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_K = 32


@triton.jit
def _mm_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptr + offs_m[:, None] * sam + (k0 + offs_k)[None, :] * sak,
                    mask=offs_m[:, None] < M, other=0.0)
        b = tl.load(b_ptr + (k0 + offs_k)[:, None] * sbk + offs_n[None, :] * sbn,
                    mask=offs_n[None, :] < N, other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + offs_m[:, None] * scm + offs_n[None, :] * scn, acc.to(c_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


class ModelNew(nn.Module):
    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        M, K = A.shape
        N = B.shape[1]
        if K % BLOCK_K != 0:
            pad = BLOCK_K - K % BLOCK_K
            A = F.pad(A, [0, pad])          # [M, K + pad]
            B = F.pad(B, [0, 0, 0, pad])    # [K + pad, N]
        Kp = A.shape[1]
        C = torch.empty((M, N), device=A.device, dtype=A.dtype)
        _mm_kernel[(triton.cdiv(M, 32), triton.cdiv(N, 32))](
            A, B, C, M, N, Kp, A.stride(0), A.stride(1), B.stride(0), B.stride(1), C.stride(0),
            C.stride(1), BLOCK_M=32, BLOCK_N=32, BLOCK_K=BLOCK_K)
        return C
