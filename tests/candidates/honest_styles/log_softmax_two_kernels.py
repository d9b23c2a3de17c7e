"""log_softmax over a large vocabulary as two kernels: a split pass writes each chunk's max and
sum of exponentials, a second pass reduces the chunks of a row and writes x - logsumexp.

Problem: level1/log_softmax_128k
Style: several kernels and launcher helpers per op; a 2-D grid (rows x chunks); int64 offsets;
    integer arithmetic on shapes (triton.cdiv); @triton.heuristics for an EVEN flag
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

CHUNK = 512


@triton.heuristics({"EVEN": lambda args: args["n_cols"] % args["CHUNK_SIZE"] == 0})
@triton.jit
def _chunk_stats_kernel(x_ptr, max_ptr, sum_ptr, n_cols, stride, n_chunks,
                        CHUNK_SIZE: tl.constexpr, EVEN: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    cols = chunk * CHUNK_SIZE + tl.arange(0, CHUNK_SIZE)
    if EVEN:
        x = tl.load(x_ptr + row * stride + cols).to(tl.float32)
    else:
        x = tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=-float("inf"))
        x = x.to(tl.float32)
    m = tl.max(x, axis=0)
    s = tl.sum(tl.exp(x - m), axis=0)
    tl.store(max_ptr + row * n_chunks + chunk, m)
    tl.store(sum_ptr + row * n_chunks + chunk, s)


@triton.jit
def _log_softmax_write_kernel(x_ptr, y_ptr, max_ptr, sum_ptr, n_cols, stride, n_chunks,
                              CHUNK_SIZE: tl.constexpr, CHUNKS_P2: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    c = tl.arange(0, CHUNKS_P2)
    cm = c < n_chunks
    maxes = tl.load(max_ptr + row * n_chunks + c, mask=cm, other=-float("inf"))
    sums = tl.load(sum_ptr + row * n_chunks + c, mask=cm, other=0.0)
    m = tl.max(maxes, axis=0)
    lse = m + tl.log(tl.sum(sums * tl.exp(maxes - m), axis=0))
    cols = chunk * CHUNK_SIZE + tl.arange(0, CHUNK_SIZE)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride + cols, x - lse, mask=mask)


def _stats(x2d, n_chunks):
    rows = x2d.shape[0]
    maxes = torch.empty((rows, n_chunks), dtype=torch.float32, device=x2d.device)
    sums = torch.empty_like(maxes)
    _chunk_stats_kernel[(rows, n_chunks)](x2d, maxes, sums, x2d.shape[1], x2d.stride(0),
                                          n_chunks, CHUNK_SIZE=CHUNK)
    return maxes, sums


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    rows, n_cols = x2d.shape
    n_chunks = triton.cdiv(n_cols, CHUNK)
    maxes, sums = _stats(x2d, n_chunks)
    y = torch.empty_like(x2d)
    _log_softmax_write_kernel[(rows, n_chunks)](x2d, y, maxes, sums, n_cols, x2d.stride(0),
                                                n_chunks, CHUNK_SIZE=CHUNK,
                                                CHUNKS_P2=triton.next_power_of_2(n_chunks))
    return y.view(x.shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_softmax(x)
