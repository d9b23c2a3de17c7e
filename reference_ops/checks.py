"""Building blocks of output checks, shared by the verifier's comparison and problems' checks.

Reasons, never exceptions: each returns ``None`` or one line saying what is wrong.

Example:
    >>> import torch
    >>> tensor_reason(torch.zeros(2, 3), torch.zeros(2, 4), "values")
    'values shape (2, 3) != expected (2, 4)'
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["tensor_reason"]


def tensor_reason(out: Any, like: torch.Tensor, what: str = "output") -> str | None:
    """Reason if ``out`` is not a plain tensor of ``like``'s shape, dtype and device type."""
    if type(out) is not torch.Tensor:
        return (f"{what} is {type(out).__module__}.{type(out).__qualname__}, expected a plain "
                "torch.Tensor")
    if out.shape != like.shape:
        return f"{what} shape {tuple(out.shape)} != expected {tuple(like.shape)}"
    if out.dtype != like.dtype:
        return f"{what} dtype {out.dtype} != expected {like.dtype}"
    if out.device.type != like.device.type:
        return f"{what} is on {out.device.type}, expected {like.device.type}"
    return None
