"""Two-layer LSTM inference (nn.LSTM, batch_first, fp32): the full output sequence of the top layer.

x: [batch_size, seq_len, input_size] fp32 -> [batch_size, seq_len, hidden_size] fp32, zero initial
states, no dropout. Per layer and step (PyTorch's gate order i, f, g, o):
  gates = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh;  i, f, o = sigmoid(.), g = tanh(.)
  c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
Layer 2 reads layer 1's h sequence. Weights use nn.LSTM's init (uniform +-1/sqrt(hidden)) with
the forget-gate bias b_ih[hidden:2 hidden] raised by 1 (common practice, longer memory). The
input projections of a layer are one big GEMM; the recurrence is 2 x seq_len dependent steps.
Eager H100 estimate: cuDNN, 512 dependent steps of a [64, 1024] x [1024, 4096] GEMM + gates,
~10-15 us each = ~6 ms (measured 8.1 ms).
"""

import torch
import torch.nn as nn

batch_size = 64
seq_len = 256
input_size = 1024
hidden_size = 1024
num_layers = 2

KBENCH = {
    "dtype": "float32",
    # fp32 through 256 steps; eager on an H100 (cuDNN may use TF32 inside) lands 3.7e-4 rel-L2
    # and <= 1.6e-4 abs from fp64 (measured); 2e-3 leaves 5x, bf16 GEMM inputs (~4e-3) fail.
    "atol": 2e-3,
    "rtol": 2e-3,
    "shapes": {"odd": {"batch_size": 7, "seq_len": 333, "input_size": 1000, "hidden_size": 1000},
               "long": {"batch_size": 128, "seq_len": 512}},
    "cpu_shapes": {"small": {"batch_size": 4, "seq_len": 16, "input_size": 32, "hidden_size": 32},
                   "odd": {"batch_size": 3, "seq_len": 11, "input_size": 24, "hidden_size": 40}},
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * 4 * s["hidden_size"] * (
        s["input_size"] + s["hidden_size"] + (s["num_layers"] - 1) * 2 * s["hidden_size"]),
    "bytes": lambda s: 4 * (s["batch_size"] * s["seq_len"] * (s["input_size"] + s["hidden_size"])
                            + 4 * s["hidden_size"] * (s["input_size"] + s["hidden_size"] + 2
                                                      + (s["num_layers"] - 1) * (2 * s["hidden_size"] + 2))),
    "tags": ["rnn", "lstm", "recurrence", "model"],
}


class Model(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=0.0)
        with torch.no_grad():
            for layer in range(num_layers):
                getattr(self.lstm, f"bias_ih_l{layer}")[hidden_size : 2 * hidden_size] += 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return out


def get_inputs():
    # x: [B, L, input_size]
    return [torch.randn(batch_size, seq_len, input_size)]


def get_init_inputs():
    return [input_size, hidden_size, num_layers]
