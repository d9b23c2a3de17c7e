"""SageAttention-style quantized attention (INT8 Q.K^T, FP8 e4m3 P.V), non-causal, as in video
diffusion transformers. q, k, v: [B, H, S, D] bf16, same head count. The reference is the
exact fake-quant computation in fp32 (reference_ops/attention_sage.py): K smoothed by
subtracting its per-(batch, head, channel) mean over tokens; Q quantized to int8 per block of
128 tokens and K per block of 64 tokens of one (batch, head), symmetric, scale = amax / 127,
codes round-half-even and clamped to +-127; logits = codes_q . codes_k * scale_q * scale_k *
D**-0.5; P = exp(logits - row max) quantized to e4m3 as P * 448 (row sum l taken from the
unquantized P); V quantized to e4m3 per (batch, head, channel) with scale = amax / 448;
out = (P_e4m3 @ V_e4m3) * scale_v / 448 / l, cast to bf16 [B, H, S, D]. An online-softmax
kernel quantizes exp(logits - running max) instead: the tolerance admits that (~2.5e-2
rel-L2 against this reference at the main shape); unquantized bf16 attention (~3.9e-2) passes
too, being more precise but slower; fp8 Q.K^T (~5.4e-2) sits at the bound.
Eager on an H100: ~16 ms measured (1024-query chunks, several fp32 passes over
[B, H, 1024, S]); peak memory ~2.5 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention_sage import sage_attention

batch_size = 1
seq_len = 4096
num_heads = 24  # HunyuanVideo-like: 24 heads of 128
head_dim = 128
block_q = 128  # quantization group sizes (tokens), part of the problem's definition
block_k = 64

KBENCH = {
    "dtype": "bfloat16",
    # e4m3 rounding of P differs between a running-max (online softmax) and this final-max
    # quantization: ~2.5e-2 rel-L2 between valid kernels (elementwise <= 0.15 of the bound);
    # unquantized bf16 attention lands ~3.9e-2 (passes: more precise, not faster); fp8 Q.K^T
    # ~5.4e-2; zeros 1.0
    "atol": 5e-2,
    "rtol": 5e-2,
    "shapes": {
        "odd": {"batch_size": 2, "seq_len": 3001},
        "long": {"batch_size": 1, "seq_len": 5120},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 2},
        "odd": {"batch_size": 2, "seq_len": 77, "num_heads": 1},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["seq_len"] ** 2 * s["head_dim"],
    "bytes": lambda s: 4 * 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] * s["head_dim"],
    "fixed": ["num_heads", "head_dim", "block_q", "block_k"],
    "tags": ["attention", "quantized", "int8", "fp8", "sageattention", "non-causal", "video"],
}


class Model(nn.Module):
    def __init__(self, block_q: int, block_k: int):
        super().__init__()
        self.block_q = block_q
        self.block_k = block_k

    def forward(self, q, k, v):
        return sage_attention(q, k, v, self.block_q, self.block_k).to(q.dtype)


def get_inputs():
    # q, k, v: [B, H, S, D]; k gets a per-channel offset, as real keys have (what smoothing removes)
    shape = (batch_size, num_heads, seq_len, head_dim)
    q = torch.randn(shape, dtype=torch.bfloat16)
    k_bias = torch.randn(batch_size, num_heads, 1, head_dim) * 2.0
    k = (torch.randn(shape) + k_bias).to(torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return [block_q, block_k]
