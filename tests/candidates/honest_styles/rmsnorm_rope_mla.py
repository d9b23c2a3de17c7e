"""DeepSeek MLA KV prologue: RMSNorm of the compressed kv (first kv_lora_rank columns) and
interleaved RoPE of the rope part (last columns), two kernels behind one launcher.

Problem: level2/rmsnorm_rope
Style: several kernels and launcher helpers per op; split of a row by column offsets
    (views, no copies); interleaved pairs through a reshape of the loaded tile; int64
    positions; bf16 in, fp32 math; float eps
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_part(kv_ptr, w_ptr, out_ptr, n_cols, stride_kv, stride_out, eps,
                  BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(kv_ptr + row * stride_kv + cols, mask=mask, other=0.0).to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (x * inv * w).to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _rope_interleaved(kv_ptr, pos_ptr, cache_ptr, out_ptr, col_offset, stride_kv, stride_out,
                      stride_cache, HALF: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, HALF)
    base = kv_ptr + row * stride_kv + col_offset
    x_even = tl.load(base + 2 * i).to(tl.float32)
    x_odd = tl.load(base + 2 * i + 1).to(tl.float32)
    pos = tl.load(pos_ptr + row).to(tl.int64)
    cos = tl.load(cache_ptr + pos * stride_cache + i)
    sin = tl.load(cache_ptr + pos * stride_cache + HALF + i)
    dst = out_ptr + row * stride_out
    tl.store(dst + 2 * i, (x_even * cos - x_odd * sin).to(out_ptr.dtype.element_ty))
    tl.store(dst + 2 * i + 1, (x_odd * cos + x_even * sin).to(out_ptr.dtype.element_ty))


def mla_kv_prologue(kv, positions, weight, cache, kv_lora_rank, eps):
    t, width = kv.shape
    rope_dim = width - kv_lora_rank
    assert rope_dim == cache.shape[-1] and rope_dim % 2 == 0
    kv = kv if kv.stride(-1) == 1 else kv.contiguous()
    kv_c = torch.empty((t, kv_lora_rank), dtype=kv.dtype, device=kv.device)
    k_pe = torch.empty((t, rope_dim), dtype=kv.dtype, device=kv.device)
    _rmsnorm_part[(t,)](kv, weight, kv_c, kv_lora_rank, kv.stride(0), kv_c.stride(0), eps,
                        BLOCK=triton.next_power_of_2(kv_lora_rank))
    _rope_interleaved[(t,)](kv, positions, cache, k_pe, kv_lora_rank, kv.stride(0),
                            k_pe.stride(0), cache.stride(0), HALF=rope_dim // 2)
    return kv_c, k_pe


def _rope_cache(max_pos: int, rot_dim: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).float()


class ModelNew(nn.Module):
    def __init__(self, kv_lora_rank: int, rope_dim: int, max_position: int):
        super().__init__()
        self.kv_lora_rank = kv_lora_rank
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.rand(kv_lora_rank, dtype=torch.bfloat16) + 0.5)
        self.register_buffer("cos_sin_cache", _rope_cache(max_position, rope_dim, 10000.0))

    def forward(self, kv: torch.Tensor, positions: torch.Tensor):
        return mla_kv_prologue(kv, positions, self.weight, self.cos_sin_cache, self.kv_lora_rank,
                               self.eps)
