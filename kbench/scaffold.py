"""``kbench problems new``: a problem file that already passes the suite quality tests, to be
edited into the real thing."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from kbench.errors import ConfigError
from kbench.problems import SUITES

__all__ = ["TEMPLATE", "write_scaffold"]

TEMPLATE = '''"""{name}: <one paragraph: what it computes, layouts, tie-breaking, masked rows>.

Eager H100 estimate at the main shape: <ms> (fill in after `kbench problems show`).
"""

import torch
import torch.nn as nn

# Main shape: module-level constants (realistic sizes; eager PyTorch ~0.5-20 ms on an H100).
batch_size = 4096
hidden = 4096

KBENCH = {{
    "dtype": "float32",
    # Tolerances: what a correct kernel in this dtype reaches (say why in one line).
    "atol": 1e-4,
    "rtol": 1e-4,
    # Extra GPU shapes as overrides of the constants; keep one that is not a tile multiple.
    "shapes": {{"odd": {{"batch_size": 1023, "hidden": 4093}}}},
    # Tiny shapes for CPU checks with the Triton interpreter.
    "cpu_shapes": {{"small": {{"batch_size": 8, "hidden": 64}}, "odd": {{"batch_size": 3, "hidden": 37}}}},
    # Roofline: FLOPs and minimum bytes moved (inputs read once + outputs written once).
    "flops": lambda s: 4 * s["batch_size"] * s["hidden"],
    "bytes": lambda s: 4 * (s["batch_size"] * s["hidden"] * 2 + s["hidden"]),
    "fixed": [],  # integer constants kbench must never perturb (head counts, group sizes...)
    "tags": ["{suite}"],
}}


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch_size, hidden] -> [batch_size, hidden]
        return x * torch.sigmoid(x) * self.scale


def get_inputs():
    return [torch.randn(batch_size, hidden)]


def get_init_inputs():
    return [hidden]
'''


def write_scaffold(name: str, suite: str, root: Path) -> Path:
    """Write ``root/<suite>/<name>.py``; refuse to overwrite or to use a bad name."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ConfigError(f"problem name {name!r}: use snake_case letters, digits and _")
    if suite not in SUITES:
        raise ConfigError(f"--suite {suite!r}: choose one of {', '.join(SUITES)}")
    path = root / suite / f"{name}.py"
    if path.exists():
        raise ConfigError(f"{path} exists already; choose another name (nothing was written)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(name=name, suite=suite))
    return path
