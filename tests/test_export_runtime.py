"""The exported runtime's ``call`` (``kbench/export/_pkg_runtime.py``) decides once per input
key and serves later calls from that decision, with the same results: the verified shape's
model and tuned knobs, the reference (warned once, counted every call) on other shapes, and a
fresh decision for another spec or another environment. No Triton: the kernel module here is
plain PyTorch."""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from pathlib import Path

import pytest
import torch

from kbench.export import _pkg_runtime as rt

_REFERENCE = '''import torch
import torch.nn as nn

ROWS = 8
COLS = 16


class Model(nn.Module):
    def forward(self, x):
        return x * 2


def get_inputs():
    return [torch.randn(ROWS, COLS)]


def get_init_inputs():
    return []
'''

_KERNEL = '''import torch
import torch.nn as nn

BLOCK = 64
SEEN = []  # the BLOCK each forward ran with


class ModelNew(nn.Module):
    def forward(self, x):
        SEEN.append(BLOCK)
        return x * 2
'''


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> rt.OpSpec:
    name = "rtcache_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)
    pkg = tmp_path / name  # a fresh kernel module per test: its globals are the knobs
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ref.py").write_text(_REFERENCE)
    (pkg / "kern.py").write_text(_KERNEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # a Triton op may run on CPU tensors
    ref = importlib.import_module(f"{name}.ref")
    shapes = {"a": {"ROWS": 8, "COLS": 16}, "b": {"ROWS": 4, "COLS": 16}}
    verified = {n: {"params": p, "signature": f"(float32[{p['ROWS']}, {p['COLS']}])"}
                for n, p in shapes.items()}
    return rt.OpSpec(name="op", qualname=f"{name}::op", problem="t/op",
                     backend="triton", kernel_module=f"{name}.kern", reference=ref,
                     verified=verified, verified_device="cpu", cpu_shapes={},
                     tuned={"a": {"BLOCK": 128}})


def test_call_decides_once_per_key_with_the_same_results(
        spec: rt.OpSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    kern = importlib.import_module(spec.kernel_module)
    decisions = []
    plan = rt._plan
    monkeypatch.setattr(rt, "_plan", lambda *a: decisions.append(a[1]) or plan(*a))
    xa, xb = torch.randn(8, 16), torch.randn(4, 16)
    for _ in range(3):
        torch.testing.assert_close(rt.call(spec, (xa,)), xa * 2)
        torch.testing.assert_close(rt.call(spec, (xb,)), xb * 2)
    assert len(decisions) == 2  # one per input signature, then served from the cache
    # each call runs with its own shape's knobs: a's tuned value, b's the module's default
    assert kern.SEEN == [128, 64] * 3
    # a new tensor of a seen shape is a hit too; its output is its own
    x2 = torch.randn(8, 16)
    assert torch.equal(rt.call(spec, (x2,)), x2 * 2) and len(decisions) == 2
    # another spec under the same qualname (tests replace fields) decides afresh
    other = dataclasses.replace(spec, tuned={"a": {"BLOCK": 256}})
    rt.call(other, (xa,))
    assert len(decisions) == 3 and kern.SEEN[-1] == 256


def test_unverified_inputs_fall_back_every_call_warned_once(spec: rt.OpSpec) -> None:
    x = torch.randn(3, 5)  # no verified shape has this signature
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(rt.call(spec, (x,)), x * 2)
    assert rt.FALLBACKS[spec.qualname] == 3
    assert len([w for w in caught if "match no verified shape" in str(w.message)]) == 1
    kern = importlib.import_module(spec.kernel_module)
    before = list(kern.SEEN)
    with rt.unverified_shapes_allowed():  # then the kernel serves it (the file's defaults)
        rt.call(spec, (x,))
    assert kern.SEEN == before + [64] and rt.FALLBACKS[spec.qualname] == 3


def test_a_changed_environment_is_a_new_decision(spec: rt.OpSpec,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(8, 16)
    rt.call(spec, (x,))
    monkeypatch.delenv("TRITON_INTERPRET")  # a Triton kernel cannot run on CPU tensors now
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.testing.assert_close(rt.call(spec, (x,)), x * 2)
    assert rt.FALLBACKS[spec.qualname] == 1
    assert any("TRITON_INTERPRET=1" in str(w.message) for w in caught)
