"""vLLM-style fused residual add + RMSNorm: one kernel writes the new residual (rounded to the
activation dtype, as the unfused code does) and the normalised output.

Problem: level2/add_rmsnorm
Style: two outputs from one kernel; bf16 in, fp32 accumulation with an explicit bf16 round of
    the residual; dtype taken from the output pointer; float scalar argument; int64 offsets;
    multi-block fallback for long rows; launcher helper with shape checks
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

_MAX_BLOCK = 8192


@triton.jit
def _fused_add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, h_ptr, n_cols, stride_row, eps,
                              BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offset = row * stride_row
    if SINGLE_PASS:
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(res_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
        h = (x + r).to(h_ptr.dtype.element_ty)  # the next residual, in the activation dtype
        tl.store(h_ptr + offset + cols, h, mask=mask)
        hf = h.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(hf * hf, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offset + cols, (hf * inv * w).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(x_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
            r = tl.load(res_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
            h = (x + r).to(h_ptr.dtype.element_ty)
            tl.store(h_ptr + offset + cols, h, mask=mask)
            hf = h.to(tl.float32)
            acc += hf * hf
        inv = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            hf = tl.load(h_ptr + offset + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + offset + cols, (hf * inv * w).to(out_ptr.dtype.element_ty),
                     mask=mask)


def fused_add_rms_norm(x, residual, weight, eps, max_block=_MAX_BLOCK):
    assert x.shape == residual.shape and x.dtype == residual.dtype
    hidden = x.shape[-1]
    assert weight.numel() == hidden, "weight must match the hidden size"
    x2d = x.reshape(-1, hidden).contiguous()
    r2d = residual.reshape(-1, hidden).contiguous()
    out = torch.empty_like(x2d)
    h = torch.empty_like(x2d)
    block = triton.next_power_of_2(hidden)
    single = block <= max_block
    if not single:
        block = max_block
    _fused_add_rmsnorm_kernel[(x2d.shape[0],)](x2d, r2d, weight, out, h, hidden, x2d.stride(0),
                                               eps, BLOCK=block, SINGLE_PASS=single)
    return out.view(x.shape), h.view(x.shape)


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(hidden, dtype=torch.bfloat16) + 0.5)
        self.eps = 1e-5
        self.max_block = 128 if hidden % 2 else _MAX_BLOCK  # odd sizes take the looped path

    def forward(self, x: torch.Tensor, residual: torch.Tensor):
        return fused_add_rms_norm(x, residual, self.weight, self.eps, self.max_block)
