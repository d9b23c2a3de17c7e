"""Qwen3-style QK-norm + RoPE: per head RMSNorm of q and k with their own weights, then
neox-style rotary embedding with cos/sin gathered from the cache by position; v untouched.

Problem: level2/qk_norm_rope
Style: autograd Function taking Python ints (num_heads, head_dim, rotary_dim % 2 != 0
    check); ctx attributes; one kernel launched twice through a launcher helper; int64
    positions and offsets; bf16 in, fp32 math; float eps argument
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _norm_rope_kernel(qkv_ptr, out_ptr, w_ptr, cache_ptr, pos_ptr, col_offset, n_heads,
                      stride_tok, stride_out_tok, stride_cache, eps, HEAD_DIM: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    half: tl.constexpr = HEAD_DIM // 2
    d = tl.arange(0, half)
    src = qkv_ptr + tok * stride_tok + col_offset + head * HEAD_DIM
    x1 = tl.load(src + d).to(tl.float32)
    x2 = tl.load(src + half + d).to(tl.float32)
    inv = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=0) + tl.sum(x2 * x2, axis=0)) / HEAD_DIM + eps)
    x1 = x1 * inv * tl.load(w_ptr + d).to(tl.float32)
    x2 = x2 * inv * tl.load(w_ptr + half + d).to(tl.float32)
    # the reference rounds the normed value to the activation dtype only at the end
    pos = tl.load(pos_ptr + tok).to(tl.int64)
    cos = tl.load(cache_ptr + pos * stride_cache + d)
    sin = tl.load(cache_ptr + pos * stride_cache + half + d)
    dst = out_ptr + tok * stride_out_tok + head * HEAD_DIM
    tl.store(dst + d, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty))
    tl.store(dst + half + d, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty))


def _norm_rope(qkv, weight, cache, positions, col_offset, n_heads, head_dim, eps):
    t = qkv.shape[0]
    out = torch.empty((t, n_heads * head_dim), dtype=qkv.dtype, device=qkv.device)
    _norm_rope_kernel[(t, n_heads)](qkv, out, weight, cache, positions, col_offset, n_heads,
                                    qkv.stride(0), out.stride(0), cache.stride(0), eps,
                                    HEAD_DIM=head_dim)
    return out


class QKNormRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, positions, q_w, k_w, cache, num_heads, num_kv_heads, head_dim, eps):
        rotary_dim = cache.shape[-1]
        if rotary_dim % 2 != 0 or rotary_dim != head_dim:
            raise ValueError(f"rotary dim {rotary_dim} must be even and equal head_dim {head_dim}")
        if qkv.shape[-1] != (num_heads + 2 * num_kv_heads) * head_dim:
            raise ValueError("qkv width does not match the head counts")
        qkv = qkv.contiguous()
        q = _norm_rope(qkv, q_w, cache, positions, 0, num_heads, head_dim, eps)
        k = _norm_rope(qkv, k_w, cache, positions, num_heads * head_dim, num_kv_heads, head_dim,
                       eps)
        ctx.num_heads, ctx.num_kv_heads, ctx.head_dim = num_heads, num_kv_heads, head_dim
        t = qkv.shape[0]
        return q.view(t, num_heads, head_dim), k.view(t, num_kv_heads, head_dim)


def _rope_cache(max_position: int, rot_dim: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    freqs = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).float()


class ModelNew(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, max_position: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.eps = 1e-6
        self.q_norm = nn.Parameter(torch.rand(head_dim, dtype=torch.bfloat16) + 0.5)
        self.k_norm = nn.Parameter(torch.rand(head_dim, dtype=torch.bfloat16) + 0.5)
        self.register_buffer("cos_sin_cache", _rope_cache(max_position, head_dim, 1e6))

    def forward(self, qkv: torch.Tensor, positions: torch.Tensor):
        return QKNormRope.apply(qkv, positions, self.q_norm, self.k_norm, self.cos_sin_cache,
                                self.num_heads, self.num_kv_heads, self.head_dim, self.eps)
