"""Warm torch's CPU vector math once per process, before any result counts.

On torch's CPU builds (seen with 2.13 on a 2-core x86 box), the first call of a vectorized
unary function (``exp``, ``log``, ``tanh``, ``erf``, ``sin``, ...) on a tensor large enough to
be split across the intra-op threads sometimes returns the chunks of the worker thread
computed a little off: ``exp`` up to 1.5e-4 relative, in about one fresh process out of four,
and ``log``, ``tanh``, ``erf`` and ``sin`` alike (a first call and a second on the same input
differed). Every later call is right. The verifier computes
references on the CPU in CPU runs, and the sandbox's child draws perturbed inputs that must
match the verifier's bit for bit; so both call :func:`warm` before anything counts."""

from __future__ import annotations

__all__ = ["UNARY", "warm"]

# Unary functions that go through torch's vectorized CPU math (the functions seen off on a
# first call, and their relatives).
UNARY = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan",
         "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf",
         "erfc", "erfinv", "sigmoid", "sqrt", "rsqrt", "reciprocal", "lgamma", "digamma")

_DONE = False


def warm() -> None:
    """Call each of :data:`UNARY` once, in float32 and float64, on a tensor split across the
    intra-op threads (results discarded). Once per process. Never in a process that forks
    children without exec (the fork server): it starts torch's OpenMP threads, and GNU
    OpenMP hangs a forked child at its first parallel region."""
    global _DONE
    if _DONE:
        return
    import torch

    x = torch.linspace(0.3, 0.7, 16384)  # inside every function's domain (acosh: 1 + x)
    for dtype in (torch.float32, torch.float64):
        y = x.to(dtype)
        for name in UNARY:
            getattr(torch, name)(y + 1.0 if name == "acosh" else y)
    _DONE = True
