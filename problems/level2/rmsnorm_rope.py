"""RMSNorm + RoPE on DeepSeek MLA's compressed KV: split, normalize one part, rotate the other.

kv: [num_tokens, kv_lora_rank + rope_dim] bf16, the output of MLA's ``kv_a_proj_with_mqa``;
positions: [num_tokens] int64 in [0, max_position). Returns (kv_c, k_pe):
  kv_c = rms_norm(kv[:, :kv_lora_rank]) * weight, eps 1e-6, in fp32 -> [num_tokens, 512] bf16;
  k_pe = rope(kv[:, kv_lora_rank:], positions) -> [num_tokens, 64] bf16, INTERLEAVED pairing
  (dims 2i and 2i+1 rotate together by angle pos * theta^(-2i/64), theta 10000, DeepSeek /
  GPT-J style), cos/sin read from the ``cos_sin_cache`` buffer [max_position, 64] (fp32, first
  32 columns cos, last 32 sin) at each token's position; rotation in fp32.
Eager H100 estimate: ~15 small kernels over 38-76 MB tensors (+ fp32 temporaries) ~0.5 ms (measured 0.42 ms).
"""

import torch
import torch.nn as nn

from reference_ops.llama import rms_norm
from reference_ops.rope import apply_rope, rope_cache, rope_cos_sin

num_tokens = 32768  # a large prefill batch
kv_lora_rank = 512
rope_dim = 64
max_position = 163840
eps = 1e-6

KBENCH = {
    "dtype": "bfloat16",
    # normalization and a rotation, done in fp32 and rounded once to bf16 (2^-9 relative):
    # eager matches to ~1 ulp; 1e-2 absorbs that, zeros or the raw input fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"num_tokens": 4093}, "small_batch": {"num_tokens": 8192}},
    "cpu_shapes": {"small": {"num_tokens": 64, "max_position": 4096},
                   "odd": {"num_tokens": 37, "max_position": 1000}},
    "flops": lambda s: s["num_tokens"] * (4 * s["kv_lora_rank"] + 6 * s["rope_dim"]),
    "bytes": lambda s: 2 * 2 * s["num_tokens"] * (s["kv_lora_rank"] + s["rope_dim"])
                       + 8 * s["num_tokens"] + 4 * s["num_tokens"] * s["rope_dim"] + 2 * s["kv_lora_rank"],
    "fixed": ["kv_lora_rank", "rope_dim", "max_position"],
    "tags": ["norm", "rmsnorm", "rope", "mla", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, kv_lora_rank: int, rope_dim: int, max_position: int):
        super().__init__()
        self.kv_lora_rank = kv_lora_rank
        self.weight = nn.Parameter(torch.rand(kv_lora_rank, dtype=torch.bfloat16) + 0.5)
        self.register_buffer("cos_sin_cache", rope_cache(max_position, rope_dim, 10000.0))

    def forward(self, kv: torch.Tensor, positions: torch.Tensor):
        kv_c, k_pe = kv.split([self.kv_lora_rank, kv.shape[-1] - self.kv_lora_rank], dim=-1)
        cos, sin = rope_cos_sin(self.cos_sin_cache, positions)  # [T, rope_dim/2]
        return rms_norm(kv_c, self.weight, eps), apply_rope(k_pe, cos, sin, interleaved=True)


def get_inputs():
    # kv: [T, kv_lora_rank + rope_dim]; positions: [T]
    kv = torch.randn(num_tokens, kv_lora_rank + rope_dim) * (0.5 + torch.rand(num_tokens, 1))
    positions = torch.randint(0, max_position, (num_tokens,))
    return [kv.to(torch.bfloat16), positions]


def get_init_inputs():
    return [kv_lora_rank, rope_dim, max_position]
