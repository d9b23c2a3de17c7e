"""Embedding lookup: each program copies one token's row of the table; ids are int64 and all
row offsets are computed in int64 (vocab x hidden can exceed 2**31 elements).

Problem: level1/embedding
Style: gather with int64 ids and offsets; bf16 copied bit-exactly; 2-D grid over
    (tokens, hidden blocks); a bounds check on the Python ints; views for the output shape
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _embedding_kernel(ids_ptr, table_ptr, out_ptr, hidden, stride_table, stride_out,
                      BLOCK_H: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    hb = tl.program_id(1)
    row = tl.load(ids_ptr + tok).to(tl.int64)
    cols = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = cols < hidden
    vals = tl.load(table_ptr + row * stride_table + cols, mask=mask)
    tl.store(out_ptr + tok * stride_out + cols, vals, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        if vocab <= 0 or hidden <= 0:
            raise ValueError("vocab and hidden must be positive")
        self.table = nn.Parameter(torch.randn(vocab, hidden).to(torch.bfloat16))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).contiguous()
        vocab, hidden = self.table.shape
        out = torch.empty((flat.numel(), hidden), dtype=self.table.dtype, device=self.table.device)
        block_h = min(triton.next_power_of_2(hidden), 512)
        grid = (flat.numel(), triton.cdiv(hidden, block_h))
        _embedding_kernel[grid](flat, self.table, out, hidden, self.table.stride(0),
                                out.stride(0), BLOCK_H=block_h)
        return out.view(*ids.shape, hidden)
