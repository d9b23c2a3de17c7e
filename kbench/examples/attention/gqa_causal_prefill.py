"""Causal GQA prefill as a flash-attention forward in Triton. One program per (query block,
query head, batch) streams the keys of its kv head (h // group) once: scores and the online
softmax stay in fp32 registers, P goes to the second tl.dot in bf16, and nothing of size
S x S ever reaches memory. Key blocks strictly below the diagonal need no mask; only the
diagonal blocks apply the causal and sequence-end masks."""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_M = 64
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 3
TUNE = {"BLOCK_M": [64, 128], "BLOCK_N": [32, 64], "NUM_WARPS": [4, 8], "NUM_STAGES": [2, 3, 4]}


@triton.jit
def _online_softmax_step(acc, m_i, l_i, s, v):
    # s: [BM, BN] fp32 scores in log2 units; v: [BN, D]
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _gqa_causal_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, seq_len, qk_scale,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_os, stride_od,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    # A Python float argument is fp32 under eager Triton but fp64 under torch.compile
    # (Inductor): cast, or the fp64 scores would promote the loop-carried m_i.
    qk_scale = qk_scale.to(tl.float32)
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # longest (latest) query blocks first
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    kv_h = h // GROUP
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh
    o_base = o_ptr + b * stride_ob + h * stride_oh

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_base + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < seq_len, other=0.0)  # [BM, D]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # Keys [0, start_m): visible to every query of the block, all inside the sequence.
    for start_n in range(0, start_m, BLOCK_N):
        cols = start_n + offs_n
        kt = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None] * stride_kd)  # [D, BN]
        v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd)  # [BN, D]
        s = tl.dot(q, kt) * qk_scale
        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v)

    # Diagonal keys [start_m, start_m + BLOCK_M): causal and sequence-end masks. Key start_m
    # is visible to every row, so each row's max is finite after the first block.
    for start_n in range(start_m, tl.minimum(start_m + BLOCK_M, seq_len), BLOCK_N):
        cols = start_n + offs_n
        in_seq = cols < seq_len
        kt = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None] * stride_kd,
                     mask=in_seq[None, :], other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=in_seq[:, None], other=0.0)
        s = tl.dot(q, kt) * qk_scale
        s = tl.where((offs_m[:, None] >= cols[None, :]) & in_seq[None, :], s, float("-inf"))
        acc, m_i, l_i = _online_softmax_step(acc, m_i, l_i, s, v)

    o = acc / l_i[:, None]
    tl.store(o_base + offs_m[:, None] * stride_os + offs_d[None, :] * stride_od,
             o.to(o_ptr.dtype.element_ty), mask=offs_m[:, None] < seq_len)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]
        B, Hq, S, D = q.shape
        Hkv = k.shape[1]
        assert Hq % Hkv == 0 and D == triton.next_power_of_2(D), (Hq, Hkv, D)
        o = torch.empty_like(q)  # [B, Hq, S, D]
        qk_scale = math.log2(math.e) / math.sqrt(D)  # softmax via exp2
        grid = (triton.cdiv(S, BLOCK_M), Hq, B)
        _gqa_causal_fwd_kernel[grid](
            q, k, v, o, S, qk_scale,
            *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            GROUP=Hq // Hkv, HEAD_DIM=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        return o
