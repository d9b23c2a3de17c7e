"""The child's run-time trace of ATen ops: PyTorch compute inside forward is caught however
it was reached (Python, C++ extension), allocation/views/copies are not, and ops Triton's
own autotuner dispatches while benchmarking are excused."""

from __future__ import annotations

import os

import torch

from sandbox._child import _compute_ops


class _Relu(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x)


class _Glue(torch.nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        y.copy_(x.t().contiguous().t())
        return y.view(-1).reshape(x.shape).to(torch.float32)


def test_compute_op_in_forward_is_reported():
    out, ops = _compute_ops(_Relu(), [torch.randn(8)])
    assert ops == {"aten.relu"}
    assert (out >= 0).all()


def test_allocation_views_and_copies_are_allowed():
    x = torch.randn(4, 5)
    out, ops = _compute_ops(_Glue(), [x])
    assert ops == set()
    assert torch.equal(out, x)


def test_ops_dispatched_from_triton_frames_are_excused():
    # Code whose file lies in a `triton` package folder, as the autotuner's benchmark does.
    path = os.path.join(os.sep, "site", "triton", "testing.py")
    ns: dict = {}
    exec(compile("import torch\ndef bench(t):\n    return torch.quantile(t, 0.5)\n", path, "exec"), ns)

    class _Autotuned(torch.nn.Module):
        def forward(self, x):
            ns["bench"](torch.tensor([1.0, 2.0, 3.0]))
            return torch.empty_like(x)

    _, ops = _compute_ops(_Autotuned(), [torch.randn(3)])
    assert ops == set()


def test_padding_is_allocation_and_a_copy():
    """F.pad with a constant (FlashAttention pads head_dim so) moves data and computes
    nothing: allowed, like new_zeros followed by a slice copy."""

    class _Pad(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.pad(x, (0, 3, 1, 0), value=0.0)

    x = torch.randn(4, 5)
    out, ops = _compute_ops(_Pad(), [x])
    assert ops == set()
    assert out.shape == (5, 8) and torch.equal(out[1:, :5], x)


# A custom op named like an allowed ATen op, whose implementation computes: the trace names
# it with its own namespace and never lets the name pass for ATen's (the op's body runs
# below the trace, so what it does inside is not seen at all).
_LIB = torch.library.Library("kbench_trace_test", "DEF")  # noqa: TOR901 - a test-only namespace
_LIB.define("copy_(Tensor x) -> Tensor")
_LIB.impl("copy_", lambda x: torch.relu(x), "CompositeExplicitAutograd")


def test_a_custom_op_is_named_with_its_namespace_and_not_taken_for_aten():
    class _Custom(torch.nn.Module):
        def forward(self, x):
            return torch.ops.kbench_trace_test.copy_(x)

    _, ops = _compute_ops(_Custom(), [torch.randn(6)])
    assert ops == {"kbench_trace_test.copy_"}
