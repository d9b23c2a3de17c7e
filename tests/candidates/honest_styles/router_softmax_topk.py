"""MoE router: softmax over experts in fp32, top-k experts per token (lowest index on ties),
weights renormalised over the chosen k; weights fp32 and expert ids int32.

Problem: level2/router_softmax_topk
Style: k from __init__ passed as a constexpr; Python int checks (top_k <= num_experts);
    several outputs of different dtypes; bf16 logits in, fp32 math; renormalize flag as a
    Python bool; int64 offsets
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _router_topk_kernel(logits_ptr, w_ptr, ids_ptr, n_experts, stride, K: tl.constexpr,
                        BLOCK_E: tl.constexpr, RENORMALIZE: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    valid = e < n_experts
    x = tl.load(logits_ptr + tok * stride + e, mask=valid, other=-float("inf")).to(tl.float32)
    p = tl.exp(x - tl.max(x, axis=0))
    p = tl.where(valid, p, 0.0)
    p = p / tl.sum(p, axis=0)
    taken = ~valid
    total = 0.0
    for i in range(K):
        cand = tl.where(taken, -1.0, p)
        best = tl.max(cand, axis=0)
        pick = tl.min(tl.where((cand == best) & (~taken), e, BLOCK_E), axis=0)
        tl.store(w_ptr + tok * K + i, best)
        tl.store(ids_ptr + tok * K + i, pick.to(tl.int32))
        total += best
        taken = taken | (e == pick)
    if RENORMALIZE:
        for i in range(K):
            w = tl.load(w_ptr + tok * K + i)
            tl.store(w_ptr + tok * K + i, w / total)


class ModelNew(nn.Module):
    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.renormalize = True

    def forward(self, logits: torch.Tensor):
        num_tokens, num_experts = logits.shape
        if self.top_k > num_experts:
            raise ValueError(f"top_k={self.top_k} > {num_experts} experts")
        logits = logits.contiguous()
        weights = torch.empty((num_tokens, self.top_k), dtype=torch.float32, device=logits.device)
        ids = torch.empty((num_tokens, self.top_k), dtype=torch.int32, device=logits.device)
        _router_topk_kernel[(num_tokens,)](logits, weights, ids, num_experts, logits.stride(0),
                                           K=self.top_k,
                                           BLOCK_E=triton.next_power_of_2(num_experts),
                                           RENORMALIZE=self.renormalize)
        return weights, ids
