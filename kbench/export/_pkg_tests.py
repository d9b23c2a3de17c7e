"""Every exported op against its embedded reference (copied into the package as
``tests/test_ops.py``). On CUDA: the shapes verified on CUDA; on CPU (Triton kernels under
TRITON_INTERPRET=1): the problem's small CPU shapes. The kernel itself must run: a call the
reference served instead fails the test."""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest
import torch

PKG = __name__.split(".")[0]
pkg = importlib.import_module(PKG)
_rt = importlib.import_module(f"{PKG}._runtime")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _shapes(spec):
    if DEVICE == "cuda" and spec.verified_device.startswith("cuda"):
        return {n: v["params"] for n, v in spec.verified.items()}
    return spec.cpu_shapes


CASES = [pytest.param(spec, name, params, id=f"{spec.name}-{name}")
         for spec in pkg.SPECS.values() for name, params in _shapes(spec).items()]


def _op(spec):
    return getattr(getattr(torch.ops, PKG), spec.name)


def _skip_if_unavailable(spec):
    why = _rt.kernel_unavailable(spec, torch.device(DEVICE))
    if why is not None:
        pytest.skip(why)


def _check(spec, fn, params, seed=0):
    inputs = _rt.inputs_at(spec, params, seed, DEVICE)
    init = next((v["init"] for v in spec.verified.values() if v["params"] == params), None)
    expected = _rt.reference_model(spec, DEVICE, init)(*inputs)
    before = _rt.FALLBACKS.get(spec.qualname, 0)
    with _rt.unverified_shapes_allowed():
        got = fn(*inputs)
    assert _rt.FALLBACKS.get(spec.qualname, 0) == before, "the reference ran, not the kernel"
    torch.testing.assert_close(got, expected, atol=spec.atol, rtol=spec.rtol)


@pytest.mark.parametrize(("spec", "name", "params"), CASES)
@torch.no_grad()
def test_op_matches_reference(spec, name, params):
    _skip_if_unavailable(spec)
    _check(spec, _op(spec), params)


@torch.no_grad()
def test_torch_compile_fullgraph():
    """One op inside torch.compile(fullgraph=True): its fake implementation traces, no break."""
    specs = [s for s in pkg.SPECS.values()
             if _rt.kernel_unavailable(s, torch.device(DEVICE)) is None]
    if not specs:
        pytest.skip("no exported kernel can run on this machine")
    spec = specs[0]
    op = _op(spec)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: op(*a), fullgraph=True)
    _check(spec, compiled, next(iter(_shapes(spec).values())), seed=1)


@torch.no_grad()
def test_unverified_shape_falls_back_to_reference_with_one_warning():
    spec = next(iter(pkg.SPECS.values()))
    probe = dataclasses.replace(spec, verified={}, qualname=spec.qualname + "_probe")
    inputs = _rt.inputs_at(probe, next(iter(probe.cpu_shapes.values())), 0, DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _rt.call(probe, inputs)
        _rt.call(probe, inputs)
    assert len([w for w in caught if "match no verified shape" in str(w.message)]) == 1
    torch.testing.assert_close(got, _rt.reference_model(probe, DEVICE)(*inputs),
                               atol=spec.atol, rtol=spec.rtol)
