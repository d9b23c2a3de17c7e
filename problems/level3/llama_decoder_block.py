"""One Llama-3-8B decoder layer over a causal prefill: RMSNorm, RoPE, GQA attention, SwiGLU MLP.

x: [batch_size, seq_len, hidden] bf16 (positions 0..seq_len-1 in every sequence); returns the
layer output, same shape, bf16:
  h = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rms_norm(x) * w1
  y = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                   n2 = rms_norm(h) * w2
RMSNorm eps 1e-5 in fp32; num_heads query heads and num_kv_heads kv heads of head_dim (query head
i reads kv head i // (num_heads / num_kv_heads)); causal softmax(q k^T / sqrt(head_dim)); NeoX-style
RoPE (dim i pairs with i + 64), theta 500000, cos/sin from the ``cos_sin_cache`` buffer
[seq_len, head_dim] (first half cos, second half sin). No biases. Weights are Gaussian (q/k
scaled up so attention is peaked, as in trained models); norm weights in [0.5, 1.5].
Eager H100 estimate: 1.8 TFLOP of bf16 GEMMs ~3 ms + causal SDPA (69 GFLOP) ~0.2 ms + norm/RoPE
elementwise ~0.4 ms = ~3.6 ms (measured 3.9 ms); ~0.44 GB of weights, ~1.5 GB activations.
"""

import torch
import torch.nn as nn

from reference_ops.llama import llama_block
from reference_ops.rope import rope_cache

batch_size = 2
seq_len = 2048
hidden = 4096
intermediate = 14336
num_heads = 32
num_kv_heads = 8
head_dim = 128
eps = 1e-5

KBENCH = {
    "dtype": "bfloat16",
    # seven bf16 GEMMs (K up to 14336) with bf16 roundings between them, a softmax and two
    # residual adds: eager is 4.7e-3 rel-L2 from fp64, worst element at half of this bound
    # (measured on an H100); skipping attention, RoPE, the mask or the MLP fails (rel. err > 0.3).
    "atol": 5e-2,
    "rtol": 5e-2,
    "shapes": {"odd": {"batch_size": 1, "seq_len": 1000}, "long": {"batch_size": 1, "seq_len": 4096}},
    "cpu_shapes": {
        "small": {"batch_size": 2, "seq_len": 16, "hidden": 64, "intermediate": 128,
                  "num_heads": 4, "num_kv_heads": 2, "head_dim": 16},
        "odd": {"batch_size": 1, "seq_len": 29, "hidden": 48, "intermediate": 80,
                "num_heads": 3, "num_kv_heads": 1, "head_dim": 16},
    },
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * (
        s["hidden"] * s["head_dim"] * 2 * (s["num_heads"] + s["num_kv_heads"]) + 3 * s["hidden"] * s["intermediate"]
    ) + 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] ** 2 * s["head_dim"],
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["seq_len"] * s["hidden"] + 2 * s["hidden"]
                            + s["hidden"] * s["head_dim"] * 2 * (s["num_heads"] + s["num_kv_heads"])
                            + 3 * s["hidden"] * s["intermediate"]) + 4 * s["seq_len"] * s["head_dim"],
    "tags": ["llama", "transformer", "decoder", "gqa", "rope", "rmsnorm", "swiglu", "model"],
}


def _w(out_f: int, in_f: int, gain: float = 1.0) -> nn.Parameter:
    return nn.Parameter((torch.randn(out_f, in_f) * (gain * in_f**-0.5)).to(torch.bfloat16))


class Model(nn.Module):
    def __init__(self, hidden: int, intermediate: int, num_heads: int, num_kv_heads: int,
                 head_dim: int, seq_len: int):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.attn_norm = nn.Parameter((torch.rand(hidden) + 0.5).to(torch.bfloat16))
        self.wq = _w(num_heads * head_dim, hidden, gain=1.5)
        self.wk = _w(num_kv_heads * head_dim, hidden, gain=1.5)
        self.wv = _w(num_kv_heads * head_dim, hidden)
        self.wo = _w(hidden, num_heads * head_dim)
        self.ffn_norm = nn.Parameter((torch.rand(hidden) + 0.5).to(torch.bfloat16))
        self.w_gate = _w(intermediate, hidden)
        self.w_up = _w(intermediate, hidden)
        self.w_down = _w(hidden, intermediate)
        self.register_buffer("cos_sin_cache", rope_cache(seq_len, head_dim, 500000.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        cos, sin = self.cos_sin_cache[:s].chunk(2, dim=-1)  # [S, D/2] each
        return llama_block(x, dict(self.named_parameters()), cos, sin,
                           self.num_heads, self.num_kv_heads, eps)


def get_inputs():
    # x: [B, S, hidden]
    return [torch.randn(batch_size, seq_len, hidden, dtype=torch.bfloat16)]


def get_init_inputs():
    return [hidden, intermediate, num_heads, num_kv_heads, head_dim, seq_len]
