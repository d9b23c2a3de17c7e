"""Token-embedding lookup, y[b, s] = table[ids[b, s]]: ids [batch_size, seq_len] int64 in
[0, vocab), table a bf16 parameter [vocab, hidden] (Llama-3-8B: 128256 x 4096, ~N(0, 1)), y
[batch_size, seq_len, hidden] bf16. A gather: every id is valid (no padding index), ids repeat
freely, and each output row is an exact copy of a table row (zero FLOPs).
H100 estimate: 1.07 GB of rows gathered + 1.07 GB written -> ~0.7 ms at ~3 TB/s; the
table is 1.05 GB.
Measured: 0.76 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 32
seq_len = 4096
vocab = 128256
hidden = 4096

KBENCH = {
    "dtype": "bfloat16",
    "atol": 0.0,  # rows are copied, not computed
    "rtol": 0.0,
    "shapes": {"odd": {"batch_size": 3, "seq_len": 4093, "hidden": 4099}, "decode": {"seq_len": 1}},
    "cpu_shapes": {"small": {"batch_size": 2, "seq_len": 16, "vocab": 1000, "hidden": 64},
                   "odd": {"batch_size": 3, "seq_len": 7, "vocab": 257, "hidden": 37}},
    "flops": 0,
    # ids + the rows read (each distinct row at least once) + the output
    "bytes": lambda s: (8 * s["batch_size"] * s["seq_len"]
                       + 2 * min(s["batch_size"] * s["seq_len"], s["vocab"]) * s["hidden"]
                       + 2 * s["batch_size"] * s["seq_len"] * s["hidden"]),
    "tags": ["data-movement", "gather", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        # table: [vocab, hidden] bf16
        self.table = nn.Parameter(torch.randn(vocab, hidden).to(torch.bfloat16))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.table)


def get_inputs():
    # ids: [batch_size, seq_len] int64 in [0, vocab)
    return [torch.randint(0, vocab, (batch_size, seq_len))]


def get_init_inputs():
    return [vocab, hidden]
