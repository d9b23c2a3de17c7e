"""Low-rank KV-cache decode attention (MatryoshkaKV / Palu style): K and V cached as rank-r latents.

q: [B, Hq, D] bf16 (one new token; GQA: query head h reads KV head h // (Hq / Hkv)).
ck, cv: [B, Hkv, S, r] bf16 latent caches (r = 64 of D = 128). Weights (buffers): pk, pv
[Hkv, D, r] bf16 per-head up-projections with orthonormal columns, so the cached keys/values are
K_h = ck_h @ pk_h^T and V_h = cv_h @ pv_h^T ([S, D]). out = softmax(q K^T / sqrt(D)) V over all S
tokens, fp32 inside, cast to bf16: [B, Hq, D]. A kernel need not materialize K or V: q may be
projected into the latent space (q_h @ pk_h) and the latent output projected back (@ pv_h^T).
Main shape: 32 sequences of 8k context, Llama-3-8B heads; memory-bound on the latents
(2 x 268 MB, half a bf16 cache). Eager H100: 8.0 ms measured (fp32 reconstruction of
2 x 1.07 GB), 4.0 GB peak.
"""

import torch
import torch.nn as nn

from reference_ops.kvcache_attention import decode_attention
from reference_ops.kvcache_formats import lowrank_reconstruct

batch_size = 32
seq_len = 8192
n_heads = 32
n_kv_heads = 8
head_dim = 128
rank = 64

KBENCH = {
    "dtype": "bfloat16",
    # bf16 output of an fp32 softmax-weighted sum: a latent-space kernel rounds q @ pk, P and the
    # latent output to bf16 (3 x 4e-3, amplified by logits up to ~6), ~1e-2 rel-L2 on short rows;
    # bf16's 2e-2 relative with a 1e-2 floor, and rel-L2 2e-2 rejects zeros.
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 5, "seq_len": 4093},
        "long": {"batch_size": 4, "seq_len": 65536},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "seq_len": 128, "n_heads": 4, "n_kv_heads": 2, "head_dim": 32, "rank": 16},
        "odd": {"batch_size": 1, "seq_len": 77, "n_heads": 6, "n_kv_heads": 3, "head_dim": 24, "rank": 10},
    },
    # latent-space form: project q (2*Hq*D*r), scores and PV in rank r, project back (2*Hq*r*D)
    "flops": lambda s: s["batch_size"] * s["n_heads"] * (4 * s["seq_len"] * s["rank"] + 4 * s["head_dim"] * s["rank"]),
    "bytes": lambda s: (4 * s["batch_size"] * s["n_heads"] * s["head_dim"]
                        + 4 * s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * s["rank"]
                        + 4 * s["n_kv_heads"] * s["head_dim"] * s["rank"]),
    "fixed": ["n_heads", "n_kv_heads", "head_dim"],
    "tags": ["kvcache", "low-rank", "matryoshkakv", "decode", "attention", "gqa", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, n_kv_heads: int, head_dim: int, rank: int):
        super().__init__()
        assert rank <= head_dim
        # orthonormal up-projections (as from a per-head PCA of K and V)
        pk = torch.linalg.qr(torch.randn(n_kv_heads, head_dim, rank)).Q
        pv = torch.linalg.qr(torch.randn(n_kv_heads, head_dim, rank)).Q
        self.register_buffer("pk", pk.to(torch.bfloat16))  # [Hkv, D, r]
        self.register_buffer("pv", pv.to(torch.bfloat16))  # [Hkv, D, r]

    def forward(self, q: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor) -> torch.Tensor:
        k = lowrank_reconstruct(ck, self.pk)  # [B, Hkv, S, D] fp32
        v = lowrank_reconstruct(cv, self.pv)
        return decode_attention(q, k, v)[0].to(q.dtype)


def get_inputs():
    # q: [B, Hq, D] scaled so logits have std ~1.5; ck, cv: [B, Hkv, S, r] with per-rank
    # energies decaying like a PCA spectrum (the leading latent dims carry most of K/V).
    spectrum = torch.linspace(2.0, 0.5, rank)  # [r]
    q = (2.0 * torch.randn(batch_size, n_heads, head_dim)).to(torch.bfloat16)
    ck = (torch.randn(batch_size, n_kv_heads, seq_len, rank) * spectrum).to(torch.bfloat16)
    cv = (torch.randn(batch_size, n_kv_heads, seq_len, rank) * spectrum).to(torch.bfloat16)
    return [q, ck, cv]


def get_init_inputs():
    return [n_kv_heads, head_dim, rank]
