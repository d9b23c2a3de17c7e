"""Kernel provenance: every kernel a candidate's forward runs must be its own.

On CPU the Triton launches are checked (a library's Triton kernel reached through an import is
refused, by name); on a GPU the profiler's device-kernel records are checked as well (cuBLAS
through ctypes, torch.mm from a C++ extension). The static policy would refuse most of these
candidates first, so they are verified with ``static_policy=False``: this file tests the
run-time defence on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from kbench.problems import load_file
from sandbox import Status, verify
from sandbox._provenance import base_name, own_cuda_kernels, own_triton_kernels

LIB = '''
import triton
import triton.language as tl


@triton.jit
def lib_relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=m), 0.0), mask=m)
'''

PROBLEM = '''
import torch
import torch.nn as nn
n = 4096
class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x)
def get_inputs():
    return [torch.randn(n)]
def get_init_inputs():
    return []
'''

USES_LIB = '''
import torch
import torch.nn as nn
import triton
from kbench_fakelib.ops import lib_relu_kernel


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        n = x.numel()
        lib_relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
        return y
'''


@pytest.fixture
def fakelib(tmp_path, monkeypatch):
    """An installed library with a Triton kernel of its own (on the child's path too)."""
    pkg = tmp_path / "site" / "kbench_fakelib"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(LIB)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    (tmp_path / "relu_problem.py").write_text(PROBLEM)
    return load_file(tmp_path / "relu_problem.py")


def test_own_kernel_names():
    src = ('template <int B> __global__ void __launch_bounds__(256) relu_k(float* x) {}\n'
           '__global__\nvoid other(int a) {}\n')
    assert own_cuda_kernels(src) == {"relu_k", "other"}
    assert base_name("void ns::relu_k<128>(float const*, float*, long)") == "relu_k"
    assert base_name("_relu_kernel") == "_relu_kernel"


def test_own_triton_kernels_are_those_defined_in_the_candidate(tmp_path):
    import importlib.util

    path = tmp_path / "cand_mod.py"
    path.write_text(LIB + "\n\nclass K:\n    inner = lib_relu_kernel\n")
    spec = importlib.util.spec_from_file_location("cand_mod", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert own_triton_kernels(mod, "cand_mod") == {"lib_relu_kernel"}
    assert own_triton_kernels(mod, "other_module") == set()


def test_a_library_triton_kernel_is_refused_by_name(fakelib):
    v = verify(fakelib, USES_LIB, device="cpu", timing=False, static_policy=False)
    assert v.status is Status.REJECTED, v.reason
    assert "Triton kernel lib_relu_kernel from kbench_fakelib.ops" in v.reason


def test_an_allowed_library_is_excused_and_the_verdict_says_so(fakelib):
    v = verify(fakelib, USES_LIB, device="cpu", timing=False, static_policy=False,
               allow_libraries=("kbench_fakelib",))
    assert v.status is Status.CORRECT, v.reason
    assert any("allowed library kbench_fakelib" in n for n in v.notes)


def test_the_candidates_own_kernel_is_not_foreign(fakelib):
    own = LIB + USES_LIB.replace("from kbench_fakelib.ops import lib_relu_kernel\n", "")
    v = verify(fakelib, own, device="cpu", timing=False, static_policy=False)
    assert v.status is Status.CORRECT, v.reason


# --- on a GPU: device kernels from the profiler's activity records ------------------------
MATMUL = '''
import torch
import torch.nn as nn
n = 256
class Model(nn.Module):
    def forward(self, a, b):
        return a @ b
def get_inputs():
    return [torch.randn(n, n), torch.randn(n, n)]
def get_init_inputs():
    return []
'''

CTYPES_CUBLAS = '''
import ctypes
import glob
import os

import torch
import torch.nn as nn

_here = os.path.dirname(torch.__file__)
_names = sorted(glob.glob(os.path.join(_here, "..", "nvidia", "cu*", "lib", "libcublas.so*")))
_lib = None
for _n in _names + ["libcublas.so", "libcublas.so.12", "libcublas.so.13"]:
    try:
        _lib = ctypes.CDLL(_n)
        break
    except OSError:
        pass
_handle = ctypes.c_void_p()
_lib.cublasCreate_v2(ctypes.byref(_handle))


class ModelNew(nn.Module):
    def forward(self, a, b):
        m, k = a.shape
        n = b.shape[1]
        c = torch.empty((m, n), device=a.device, dtype=a.dtype)
        one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
        # row-major C = A B is column-major C^T = B^T A^T
        _lib.cublasSgemm_v2(_handle, 0, 0, n, m, k, ctypes.byref(one),
                            ctypes.c_void_p(b.data_ptr()), n, ctypes.c_void_p(a.data_ptr()), k,
                            ctypes.byref(zero), ctypes.c_void_p(c.data_ptr()), n)
        return c
'''

EXT_MM = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_CPP = "torch::Tensor mm(torch::Tensor a, torch::Tensor b) { return torch::mm(a, b); }"
_ext = load_inline(name="prov_ext_mm", cpp_sources=_CPP, functions=["mm"])


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.mm(a, b)
'''


@pytest.fixture
def matmul(tmp_path):
    (tmp_path / "mm_problem.py").write_text(MATMUL)
    return load_file(tmp_path / "mm_problem.py")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_cublas_through_ctypes_is_named(matmul):
    v = verify(matmul, CTYPES_CUBLAS, device="cuda", timing=False, static_policy=False)
    assert v.status is Status.REJECTED, v.reason
    assert "not the candidate's own" in v.reason and "device kernel" in v.reason, v.reason
    # and the static policy refuses it before it runs
    assert verify(matmul, CTYPES_CUBLAS, device="cuda", timing=False).status is Status.REJECTED


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_library_triton_kernel_is_named(fakelib):
    v = verify(fakelib, USES_LIB, device="cuda", timing=False, static_policy=False)
    assert v.status is Status.REJECTED, v.reason
    assert "lib_relu_kernel" in v.reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_torch_mm_from_an_extension_is_named(matmul):
    v = verify(matmul, EXT_MM, device="cuda", timing=False, static_policy=False)
    assert v.status is Status.REJECTED, v.reason
    # Named as the op the extension dispatched (every watched call sees it), or as the
    # kernel it launched (the profiled call): whichever check meets it first
    assert "aten.mm" in v.reason and ("PyTorch compute ops" in v.reason
                                      or "device kernel" in v.reason), v.reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_honest_kernels_with_allocation_and_copies_pass(fakelib):
    own = LIB + USES_LIB.replace("from kbench_fakelib.ops import lib_relu_kernel\n", "")
    own = own.replace("y = torch.empty_like(x)", "y = torch.zeros_like(x.contiguous())")
    v = verify(fakelib, own, device="cuda", timing=False, static_policy=False)
    assert v.status is Status.CORRECT, v.reason


# --- streams: work put anywhere but the call's own stream escapes timing ------------------
class _FakeStream:
    def __init__(self, sid: int, dev: int = 0) -> None:
        self.stream_id, self.device_index = sid, dev


@pytest.fixture
def fake_streams(monkeypatch):
    """torch's current stream and its one setter, faked (this machine may have no CUDA):
    the setter switches what ``torch.cuda.current_stream()`` returns, as the real one does."""
    state = {"cur": _FakeStream(7)}
    calls: list[int] = []

    def set_stream(stream_id, device_index, device_type=1):
        calls.append(stream_id)
        state["cur"] = _FakeStream(stream_id, device_index)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: state["cur"])
    monkeypatch.setattr(torch._C, "_cuda_setStream", set_stream, raising=False)
    return state, calls, set_stream


def _watch():
    from sandbox._provenance import Watch

    return Watch("candidate", set(), frozenset(), cuda=True)


def test_a_switch_to_a_side_stream_is_recorded_and_the_setter_restored(fake_streams):
    state, calls, setter = fake_streams
    with _watch() as w:
        torch._C._cuda_setStream(stream_id=9, device_index=0, device_type=1)  # `with side:`
        w._launch_stream("relu_kernel")  # a Triton launch now goes to stream 9
        torch._C._cuda_setStream(stream_id=7, device_index=0, device_type=1)  # back again
    assert calls == [9, 7]
    assert w.side_streams == ["switched the current stream to stream 9",
                              "launched Triton kernel relu_kernel on a side stream"]
    assert torch._C._cuda_setStream is setter


def test_staying_on_the_call_stream_records_nothing(fake_streams):
    with _watch() as w:
        torch._C._cuda_setStream(stream_id=7, device_index=0, device_type=1)  # the same stream
        w._launch_stream("relu_kernel")
    assert w.side_streams == []


def test_a_side_stream_left_current_is_recorded(fake_streams):
    state, _, _ = fake_streams
    with _watch() as w:
        state["cur"] = _FakeStream(11)  # switched by a setter captured before the watch
    assert w.side_streams == ["the call returned with another stream current"]


def test_triton_benchmarking_on_its_own_stream_is_excused(fake_streams):
    """An autotuner with use_cuda_graph benchmarks through triton.testing on a side stream."""
    code = compile("torch._C._cuda_setStream(stream_id=5, device_index=0, device_type=1)\n"
                   "w._launch_stream('bench_kernel')\n"
                   "torch._C._cuda_setStream(stream_id=7, device_index=0, device_type=1)\n",
                   "/site-packages/triton/testing.py", "exec")
    with _watch() as w:
        exec(code, {"torch": torch, "w": w})
    assert w.side_streams == []


def test_streams_are_not_watched_on_cpu_runs(fake_streams):
    from sandbox._provenance import Watch

    with Watch("candidate", set(), frozenset()) as w:  # cuda=False
        torch._C._cuda_setStream(stream_id=9, device_index=0, device_type=1)
    assert w.side_streams == []


# an attack of the corpus: a stream made from the type of the current one
SIDE_STREAM = (Path(__file__).parent / "candidates" / "attacks"
               / "rt_side_stream_obfuscated.py").read_text()


def test_an_obfuscated_side_stream_passes_the_static_policy():
    """Why the run-time watch exists: the static policy cannot see this stream."""
    from sandbox.policy import check_source

    assert check_source(SIDE_STREAM).violations == ()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_side_stream_work_is_refused_at_run_time(fakelib):
    v = verify(fakelib, SIDE_STREAM, device="cuda")
    assert v.status is Status.REJECTED, v.reason
    assert "side stream" in v.reason


def test_with_on_a_stream_object_is_recorded_and_the_class_restored(fake_streams, monkeypatch):
    """``with s:`` on a torch.cuda.Stream enters through C++ (not the setter): the watch
    wraps the class's inherited ``__enter__`` for the call and removes the wrapper after."""
    state, calls, _ = fake_streams

    class _Base:
        def __enter__(self):
            self.prev = state["cur"]
            state["cur"] = self
            return self

        def __exit__(self, *exc):
            state["cur"] = self.prev

    class _Stream(_Base):
        def __init__(self, sid):
            self.stream_id, self.device_index = sid, 0

    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    with _watch() as w:
        with _Stream(13):
            w._launch_stream("relu_kernel")
        with _Stream(7):  # the call's own stream: nothing to record
            pass
    assert w.side_streams == ["switched the current stream to stream 13",
                              "launched Triton kernel relu_kernel on a side stream"]
    assert "__enter__" not in _Stream.__dict__ and calls == []


# --- a CUDA extension's functions report the current stream when called ---------------------
def _fake_cpp_extension(fn):
    """A stand-in for torch.utils.cpp_extension: load_inline returns a module holding ``fn``
    (a builtin, as a pybind11 function is); ``is_python_module=False`` returns None."""
    import types

    def load_inline(name, is_python_module=True, **_):
        if not is_python_module:
            return None
        mod = types.ModuleType(name)
        mod.relu_cuda = fn
        mod._private = fn
        return mod

    return types.SimpleNamespace(load_inline=load_inline, load=load_inline)


def test_an_extension_call_under_a_stream_switched_in_cpp_is_recorded(fake_streams):
    """``with torch.Stream(...)`` switches the current stream in C++ (no Python setter runs):
    the extension function, called then, reports the side stream it would launch on."""
    import math

    from sandbox._provenance import watch_extensions

    state, _, _ = fake_streams
    ce = _fake_cpp_extension(math.sqrt)
    watch_extensions(ce)
    ext = ce.load_inline(name="ext")
    assert ext.relu_cuda(4.0) == 2.0  # outside a watch: runs, nothing to record
    with _watch() as w:
        ext.relu_cuda(9.0)  # the call's own stream
        state["cur"] = _FakeStream(11)  # what torch.Stream.__enter__ does, in C++
        assert ext.relu_cuda(16.0) == 4.0
        state["cur"] = _FakeStream(7)
    assert w.side_streams == ["called CUDA extension function relu_cuda on a side stream"]
    assert ext._private is math.sqrt  # only public functions are wrapped
    from sandbox import _provenance

    assert _provenance._ACTIVE == []  # the watch is gone after the call
    with _watch() as w2:  # a later watch sees nothing of the earlier one
        ext.relu_cuda(1.0)
    assert w2.side_streams == []


def test_extension_loaders_are_wrapped_once_and_non_modules_pass_through(fake_streams):
    import math

    from sandbox._provenance import watch_extensions

    ce = _fake_cpp_extension(math.sqrt)
    watch_extensions(ce)
    first = ce.load_inline
    watch_extensions(ce)  # a second child setup does not wrap the wrapper
    assert ce.load_inline is first
    assert ce.load_inline(name="ops", is_python_module=False) is None


def test_extension_calls_are_not_watched_on_cpu_runs(fake_streams):
    import math

    from sandbox._provenance import Watch, watch_extensions

    state, _, _ = fake_streams
    ce = _fake_cpp_extension(math.sqrt)
    watch_extensions(ce)
    ext = ce.load_inline(name="ext")
    with Watch("candidate", set(), frozenset(), cuda=False) as w:
        state["cur"] = _FakeStream(11)
        ext.relu_cuda(4.0)
    assert w.side_streams == []


CUDA_EXT_ON_TORCH_STREAM = (Path(__file__).parent / "candidates" / "honest"
                            / "relu_cuda_inline.py").read_text().replace(
    "        return _ext.relu_cuda(x)",
    "        with torch.Stream(device=x.device):  # switched in C++, not through the setter\n"
    "            return _ext.relu_cuda(x)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_extension_work_under_a_torch_stream_is_refused(fakelib):
    assert "with torch.Stream" in CUDA_EXT_ON_TORCH_STREAM
    v = verify(fakelib, CUDA_EXT_ON_TORCH_STREAM, device="cuda", static_policy=False)
    assert v.status is Status.REJECTED, v.reason
    assert "called CUDA extension function relu_cuda on a side stream" in v.reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_honest_extension_on_the_current_stream_passes(fakelib):
    src = (Path(__file__).parent / "candidates" / "honest" / "relu_cuda_inline.py").read_text()
    v = verify(fakelib, src, device="cuda")
    assert v.status is Status.CORRECT, v.reason


def test_a_failed_call_keeps_its_own_error_when_the_profiler_cannot_finish(monkeypatch):
    """A candidate's call that fails under the profiled watch (out of memory, an illegal
    address) is reported with its own error: the profiler's teardown failing after it must
    not replace it. A call that succeeded still sees the teardown's error."""
    import pytest

    from sandbox import _provenance
    from sandbox._provenance import Watch

    def broken(*a, **k):
        raise RuntimeError("the profiler could not finish")

    monkeypatch.setattr(_provenance, "_unaccounted", broken)
    with pytest.raises(MemoryError, match="the candidate's own"):
        with Watch("candidate", set(), frozenset(), profile=True):
            raise MemoryError("the candidate's own")
    with pytest.raises(RuntimeError, match="could not finish"):
        with Watch("candidate", set(), frozenset(), profile=True):
            torch.ones(4).sum()
