"""QK-norm + RoPE (Qwen3): split a fused QKV projection, RMS-normalize each q and k head, rotate.

qkv: [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim] bf16, laid out [q | k | v], each
part head-major ([H, head_dim] per token); positions: [num_tokens] int64 in [0, max_position).
Returns (q [num_tokens, num_heads, head_dim], k [num_tokens, num_kv_heads, head_dim]) bf16 (v is
untouched and not returned). Per head: ``rms_norm(x) * w`` over head_dim (eps 1e-6; q and k have
their own weight [head_dim]), then NeoX-style RoPE (dim i pairs with i + 64, theta 1e6) with
cos/sin read from ``cos_sin_cache`` [max_position, head_dim] (first half cos, second half sin)
at each token's position; all in fp32, rounded to bf16 once (an intermediate bf16 rounding
before the rotation would cost ~1 ulp of |x| ~ 4 on outputs near zero).
Eager H100 estimate: ~25 kernels over 134-268 MB tensors (q in fp32 is 268 MB): measured 2.7 ms.
"""

import torch
import torch.nn as nn

from reference_ops.llama import rms_norm
from reference_ops.rope import apply_rope, rope_cache, rope_cos_sin

num_tokens = 16384
num_heads = 32
num_kv_heads = 8
head_dim = 128
max_position = 40960
eps = 1e-6

KBENCH = {
    "dtype": "bfloat16",
    # fp32 math rounded once to bf16 (2^-9 relative): correct kernels agree to ~1 ulp;
    # 1e-2 covers it, zeros, qkv, a wrong pairing or ignored positions fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"num_tokens": 3001}, "decode": {"num_tokens": 2048}},
    "cpu_shapes": {"small": {"num_tokens": 32, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64, "max_position": 4096},
                   "odd": {"num_tokens": 19, "num_heads": 3, "num_kv_heads": 1, "head_dim": 32, "max_position": 1000}},
    "flops": lambda s: s["num_tokens"] * (s["num_heads"] + s["num_kv_heads"]) * s["head_dim"] * 10,
    "bytes": lambda s: 2 * s["num_tokens"] * s["head_dim"] * (2 * s["num_heads"] + 3 * s["num_kv_heads"])
                       + s["num_tokens"] * (8 + 4 * s["head_dim"]) + 4 * s["head_dim"],
    "fixed": ["max_position"],
    "tags": ["norm", "rmsnorm", "rope", "qk-norm", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, max_position: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_norm = nn.Parameter(torch.rand(head_dim, dtype=torch.bfloat16) + 0.5)
        self.k_norm = nn.Parameter(torch.rand(head_dim, dtype=torch.bfloat16) + 0.5)
        self.register_buffer("cos_sin_cache", rope_cache(max_position, head_dim, 1e6))

    def forward(self, qkv: torch.Tensor, positions: torch.Tensor):
        t, d = qkv.shape[0], self.head_dim
        q, k, _ = qkv.split([self.num_heads * d, self.num_kv_heads * d, self.num_kv_heads * d], dim=-1)
        q = rms_norm(q.reshape(t, self.num_heads, d).float(), self.q_norm, eps)  # [T, Hq, D] fp32
        k = rms_norm(k.reshape(t, self.num_kv_heads, d).float(), self.k_norm, eps)  # [T, Hkv, D] fp32
        cos, sin = rope_cos_sin(self.cos_sin_cache, positions)  # [T, D/2]
        q = apply_rope(q, cos[:, None], sin[:, None]).to(qkv.dtype)
        return q, apply_rope(k, cos[:, None], sin[:, None]).to(qkv.dtype)


def get_inputs():
    # qkv: [T, (Hq + 2 Hkv) * D]; positions: [T]
    width = (num_heads + 2 * num_kv_heads) * head_dim
    qkv = torch.randn(num_tokens, width) * (0.5 + torch.rand(num_tokens, 1))
    return [qkv.to(torch.bfloat16), torch.randint(0, max_position, (num_tokens,))]


def get_init_inputs():
    return [num_heads, num_kv_heads, head_dim, max_position]
