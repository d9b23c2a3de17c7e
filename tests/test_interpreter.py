"""Triton's CPU interpreter runs production-style kernel code as the GPU does (sandbox._interp).

Each gap found in real library code (float arguments, libdevice, bf16/fp16 arithmetic and
reductions, NaN rows, ``.value`` on constexprs, ``and``/``or``/``not`` masks, CUDA device
queries) is a small kernel run in one fresh interpreter process with the fixes installed,
compared with PyTorch. Two candidates go through the whole verifier: a Liger-style bf16
RMSNorm that needs most of the fixes comes back ``correct``, and one that uses inline assembly
comes back ``unsupported`` with "cannot be checked on CPU".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[1]

# Kernels must live in a file: the interpreter reads their source.
GAPS = r'''
import json, math, traceback

import torch
import triton
import triton.language as tl

from sandbox import _interp

_interp.install()
from triton.language.extra import libdevice  # noqa: E402  (patched by install)
from triton.language.extra.cuda import libdevice as cuda_libdevice  # noqa: E402

RESULTS = {}


def case(fn):
    try:
        fn()
        RESULTS[fn.__name__] = None
    except BaseException as e:  # noqa: BLE001 - every failure is a result
        RESULTS[fn.__name__] = "".join(traceback.format_exception(type(e), e, None))[-2000:]
    return fn


def same(got, want, what="", **tol):
    torch.testing.assert_close(got, want, equal_nan=True, msg=lambda m: f"{what}: {m}", **tol)


@case
def installed():
    assert set(_interp.APPLIED) >= {"autotune", "float_args", "bf16", "libdevice",
                                    "reductions", "ast", "driver", "cuda_device"}, (
        _interp.APPLIED, _interp.SKIPPED)


# --- a Python float argument is an fp32 scalar ----------------------------------------------
@triton.jit
def _float_arg(X, Y, Z, n, eps, s, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < n
    x = tl.load(X + o, mask=m)  # bf16
    tl.store(Y + o, x.to(tl.float32) + eps.to(tl.float32), mask=m)
    tl.store(Z + o, x * s, mask=m)  # bf16 * fp32 scalar computes in fp32, as on the GPU


@case
def float_scalar_argument():
    x = torch.randn(37).bfloat16()
    y, z = torch.empty(37), torch.empty(37)
    _float_arg[(1,)](x, y, z, 37, 1e-6, 1 / 3, BLOCK=64)
    same(y, x.float() + torch.tensor(1e-6), "eps.to(tl.float32)", rtol=0, atol=0)
    same(z, x.float() * torch.tensor(1 / 3), "x_bf16 * s", rtol=0, atol=0)


# --- libdevice / tl.math ----------------------------------------------------------------------
@triton.jit
def _libdevice(X, Y, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(X + o)
    tl.store(Y + 0 * BLOCK + o, libdevice.rsqrt(x))
    tl.store(Y + 1 * BLOCK + o, libdevice.sqrt(x))
    tl.store(Y + 2 * BLOCK + o, libdevice.tanh(x))
    tl.store(Y + 3 * BLOCK + o, libdevice.erf(x))
    tl.store(Y + 4 * BLOCK + o, libdevice.exp(x))
    tl.store(Y + 5 * BLOCK + o, libdevice.exp2(x))
    tl.store(Y + 6 * BLOCK + o, libdevice.log(x))
    tl.store(Y + 7 * BLOCK + o, libdevice.log2(x))
    tl.store(Y + 8 * BLOCK + o, libdevice.pow(x, 1.5))
    tl.store(Y + 9 * BLOCK + o, libdevice.fast_expf(x))
    tl.store(Y + 10 * BLOCK + o, libdevice.fast_logf(x))
    tl.store(Y + 11 * BLOCK + o, libdevice.fast_powf(x, x))
    tl.store(Y + 12 * BLOCK + o, libdevice.fast_dividef(x, x + 1.0))
    tl.store(Y + 13 * BLOCK + o, libdevice.div_rn(1.0, x))
    tl.store(Y + 14 * BLOCK + o, libdevice.fma(x, x, x))
    tl.store(Y + 15 * BLOCK + o, libdevice.float2int_rn(x * 10.0).to(tl.float32))
    tl.store(Y + 16 * BLOCK + o, libdevice.isnan(x / 0.0 * 0.0).to(tl.float32))
    tl.store(Y + 17 * BLOCK + o, cuda_libdevice.tanh(x))
    tl.store(Y + 18 * BLOCK + o, tl.math.rsqrt(x))
    tl.store(Y + 19 * BLOCK + o, tl.math.erf(x))


@case
def libdevice_functions():
    x = torch.rand(16) * 3 + 0.05
    y = torch.empty(20, 16)
    _libdevice[(1,)](x, y, BLOCK=16)
    d = x.double()
    want = [d.rsqrt(), d.sqrt(), d.tanh(), torch.erf(d), d.exp(), d.exp2(), d.log(), d.log2(),
            d.pow(1.5), d.exp(), d.log(), d.pow(d), d / (d + 1), 1 / d, d * d + d,
            torch.round(x * 10).double(), torch.ones_like(d), d.tanh(), d.rsqrt(), torch.erf(d)]
    names = ["rsqrt", "sqrt", "tanh", "erf", "exp", "exp2", "log", "log2", "pow", "fast_expf",
             "fast_logf", "fast_powf", "fast_dividef", "div_rn", "fma", "float2int_rn", "isnan",
             "cuda.libdevice.tanh", "tl.math.rsqrt", "tl.math.erf"]
    for name, got, w in zip(names, y, want):
        same(got, w.float(), name, rtol=2e-6, atol=1e-6)


@case
def libdevice_missing_on_cuda_fails_as_on_the_gpu():
    @triton.jit
    def k(X, BLOCK: tl.constexpr):
        o = tl.arange(0, BLOCK)
        tl.store(X + o, libdevice.fast_tanhf(tl.load(X + o)))  # HIP-only

    try:
        k[(1,)](torch.rand(8), BLOCK=8)
    except Exception as e:  # noqa: BLE001
        assert "does not exist on CUDA" in repr(e), repr(e)
        assert _interp.unsupported(e) is None  # a real error, as on the GPU
    else:
        raise AssertionError("fast_tanhf ran")


# --- bf16 / fp16 arithmetic and comparisons ----------------------------------------------------
@triton.jit
def _elementwise(A, B, OUT, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < n
    a = tl.load(A + o, mask=m, other=1.0)
    b = tl.load(B + o, mask=m, other=1.0)
    tl.store(OUT + 0 * BLOCK + o, a + b, mask=m)
    tl.store(OUT + 1 * BLOCK + o, a * b, mask=m)
    tl.store(OUT + 2 * BLOCK + o, a - b, mask=m)
    tl.store(OUT + 3 * BLOCK + o, a / b, mask=m)
    tl.store(OUT + 4 * BLOCK + o, tl.maximum(a, b), mask=m)
    tl.store(OUT + 5 * BLOCK + o, tl.minimum(a, b), mask=m)
    tl.store(OUT + 6 * BLOCK + o, tl.where(a > b, a, -b), mask=m)
    tl.store(OUT + 7 * BLOCK + o, (a <= b).to(a.dtype), mask=m)
    tl.store(OUT + 8 * BLOCK + o, a * 0.5 + 1.0, mask=m)
    tl.store(OUT + 9 * BLOCK + o, -tl.abs(a), mask=m)
    tl.store(OUT + 10 * BLOCK + o, tl.fma(a, b, a), mask=m)


def _elementwise_case(dtype):
    torch.manual_seed(0)
    a, b = torch.randn(50).to(dtype), torch.randn(50).to(dtype)
    out = torch.zeros(11, 64, dtype=dtype)
    _elementwise[(1,)](a, b, out, 50, BLOCK=64)
    want = [a + b, a * b, a - b, a / b, torch.maximum(a, b), torch.minimum(a, b),
            torch.where(a > b, a, -b), (a <= b).to(dtype), a * 0.5 + 1.0, -a.abs(),
            (a.float() * b.float() + a.float()).to(dtype)]
    names = ["+", "*", "-", "/", "maximum", "minimum", "where(>)", "<=", "const", "abs", "fma"]
    for name, got, w in zip(names, out[:, :50], want):
        same(got, w, f"{dtype} {name}", rtol=0, atol=0)


@case
def bf16_elementwise():
    _elementwise_case(torch.bfloat16)


@case
def fp16_elementwise():
    _elementwise_case(torch.float16)


@triton.jit
def _reduce(X, MAX, IDX, IMIN, VAL, SUM, CUM, R: tl.constexpr, C: tl.constexpr):
    r = tl.arange(0, R)
    c = tl.arange(0, C)
    x = tl.load(X + r[:, None] * C + c[None, :])
    tl.store(MAX + r, tl.max(x, axis=1))
    v, i = tl.max(x, axis=1, return_indices=True)
    tl.store(VAL + r, v)
    tl.store(IDX + r, i)
    tl.store(IMIN + r, tl.argmin(x, axis=1))
    tl.store(SUM + r, tl.sum(x, axis=1))
    tl.store(CUM + r[:, None] * C + c[None, :], tl.cumsum(x, axis=1))


def _reduce_case(dtype):
    torch.manual_seed(1)
    x = (torch.randn(4, 16) * 3 - 5).to(dtype)  # mostly negative: raw bits order wrongly
    mx, val = torch.empty(4), torch.empty(4, dtype=dtype)
    idx, imin = torch.empty(4, dtype=torch.int32), torch.empty(4, dtype=torch.int32)
    sm, cum = torch.empty(4, dtype=dtype), torch.empty(4, 16, dtype=dtype)
    _reduce[(1,)](x, mx, idx, imin, val, sm, cum, R=4, C=16)
    same(mx, x.float().amax(1), f"{dtype} max", rtol=0, atol=0)
    same(val, x.amax(1), f"{dtype} max with indices", rtol=0, atol=0)
    same(idx, x.float().argmax(1).int(), f"{dtype} argmax", rtol=0, atol=0)
    same(imin, x.float().argmin(1).int(), f"{dtype} argmin", rtol=0, atol=0)
    same(sm.float(), x.float().sum(1), f"{dtype} sum", rtol=2e-2, atol=2e-2)
    same(cum.float(), x.float().cumsum(1), f"{dtype} cumsum", rtol=2e-2, atol=5e-2)


@case
def bf16_reductions():
    _reduce_case(torch.bfloat16)


@case
def fp16_reductions():
    _reduce_case(torch.float16)


# --- NaN in reductions --------------------------------------------------------------------------
@triton.jit
def _nan_rows(X, IDX, IMIN, MAX, C: tl.constexpr):
    r = tl.program_id(0)
    x = tl.load(X + r * C + tl.arange(0, C))
    tl.store(IDX + r, tl.argmax(x, axis=0))
    tl.store(IMIN + r, tl.argmin(x, axis=0))
    tl.store(MAX + r, tl.max(x, axis=0))


@case
def nan_rows_in_reductions():
    nan = float("nan")
    x = torch.tensor([[nan] * 8,                                 # all NaN
                      [1.0, 5.0, 2.0, 0.5, -1.0, 3.0, 5.0, 0.0],  # no NaN
                      [1.0, nan, 3.0, 2.0, nan, 0.0, 1.0, 2.0]])  # some NaN
    idx, imin = torch.empty(3, dtype=torch.int32), torch.empty(3, dtype=torch.int32)
    mx = torch.empty(3)
    _nan_rows[(3,)](x, idx, imin, mx, C=8)
    # Triton's combine never lets a NaN win from the left: an all-NaN row gives its last
    # index, as on the GPU; a row without NaN its first extremum
    assert idx.tolist()[:2] == [7, 1] and imin.tolist()[:2] == [7, 4], (idx, imin)
    assert 0 <= idx[2] < 8 and 0 <= imin[2] < 8
    assert math.isnan(mx[0]) and mx[1] == 5.0 and mx[2] == 3.0, mx  # max ignores NaN (maxnum)


# --- `.value` on constexpr arguments ------------------------------------------------------------
@triton.jit
def _cast(x, dtype: tl.constexpr):
    return x.to(dtype.value)


@triton.jit
def _dtype_value(X, Y, OUT: tl.constexpr, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK.value)
    tl.store(Y + o, _cast(tl.load(X + o), OUT) + _cast(tl.load(X + o), tl.float16))


@case
def constexpr_value_in_jit_helpers():
    x, y = torch.randn(16), torch.empty(16, dtype=torch.float16)
    _dtype_value[(1,)](x, y, OUT=tl.float16, BLOCK=16)
    same(y, x.half() + x.half(), "dtype.value", rtol=0, atol=0)


# --- `and` / `or` / `not` on tensor masks -------------------------------------------------------
@triton.jit
def _masks(X, Y, BIAS, n, lo, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(X + o)
    tl.store(Y + 0 * BLOCK + o, x, mask=o < n and o >= lo)
    tl.store(Y + 1 * BLOCK + o, x, mask=o < lo or o >= n)
    tl.store(Y + 2 * BLOCK + o, x, mask=not (o >= n))
    add = HAS_BIAS and tl.load(BIAS) > 0  # compile-time False: the load never runs
    if add:
        x += 1.0
    tl.store(Y + 3 * BLOCK + o, x, mask=o < n and not o < lo)


@case
def tensor_and_or_not_masks():
    x = torch.arange(16.0) + 1
    y = torch.zeros(4, 16)
    _masks[(1,)](x, y, None, 10, 3, BLOCK=16, HAS_BIAS=False)
    o = torch.arange(16)
    for k, keep in enumerate([(o < 10) & (o >= 3), (o < 3) | (o >= 10), o < 10,
                              (o < 10) & (o >= 3)]):
        same(y[k], torch.where(keep, x, 0.0), f"mask {k}", rtol=0, atol=0)


# --- CUDA device queries on CPU --------------------------------------------------------------
@case
def cuda_device_queries_on_cpu():
    x = torch.ones(3)
    with torch.cuda.device(x.device), torch.cuda.device_of(x):
        props = torch.cuda.get_device_properties(x.device)
    assert props.multi_processor_count >= 1 and (props.major, props.minor) == (8, 0)
    assert torch.cuda.get_device_capability() == (8, 0)
    assert torch.cuda.current_device() == 0
    torch.cuda.synchronize()
    assert not torch.cuda.is_available()  # still true to the machine
    drv = triton.runtime.driver.active
    assert drv.get_active_torch_device() == torch.device("cpu")
    assert drv.utils.get_device_properties(0)["multiprocessor_count"] >= 1
    assert drv.get_current_target().backend == "cuda"


@triton.autotune(configs=[triton.Config({"BLOCK": 8}), triton.Config({"BLOCK": 32})],
                 key=["n"], cache_results=True)
@triton.jit
def _tuned(X, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(X + o, tl.load(X + o, mask=o < n) * 2, mask=o < n)


@case
def autotune_without_a_driver():
    x = torch.ones(20)
    _tuned[lambda meta: (triton.cdiv(20, meta["BLOCK"]),)](x, 20)
    same(x, torch.full((20,), 2.0), "autotuned", rtol=0, atol=0)


# --- what cannot run is recognised -------------------------------------------------------------
@triton.jit
def _asm(X, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(X + o)
    y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                  is_pure=True, pack=1)
    tl.store(X + o, y)


@triton.jit
def _bessel(X, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(X + o, libdevice.jn(2, tl.load(X + o)))


TWO = tl.constexpr(2.0)  # a module-level constexpr, as libraries write them


@triton.jit
def _abs_plus_one(z):
    return tl.abs(z) + 1.0


@triton.jit
def _constexpr_left(X, Y, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(X + o)
    # constexpr on the left of a tensor, the result handed to a tl call and a helper
    y = _abs_plus_one(-TWO * x) + tl.exp(TWO * x * 0.0) + (TWO < x).to(tl.float32) + (TWO - x)
    tl.store(Y + o, y)


@case
def constexpr_on_the_left_of_a_tensor():
    x = torch.randn(16)
    y = torch.empty(16)
    _constexpr_left[(1,)](x, y, BLOCK=16)
    want = (2 * x).abs() + 1 + 1 + (2 < x).float() + (2 - x)
    assert torch.allclose(y, want), (y - want).abs().max()


@triton.jit
def _bad(X, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(X + o, tl.load(X + o) + tl.zeros([BLOCK * 2], tl.float32))  # shape mismatch


@case
def unsupported_is_recognised():
    seen = []
    for kernel in (_asm, _bessel, _bad):
        try:
            kernel[(1,)](torch.ones(8), BLOCK=8)
        except Exception as e:  # noqa: BLE001
            seen.append(_interp.unsupported(e))
        else:
            seen.append("ran")
    assert "inline assembly" in (seen[0] or ""), seen
    assert "__nv_jnf" in (seen[1] or ""), seen
    assert seen[2] is None, seen  # a kernel's own error stays its own


# --- a module-level alias of a tl builtin (Unsloth: triton_cast = tl.cast) ------------------
triton_cast = tl.cast
tl_exp = tl.exp


@triton.jit
def _aliased(X, Y, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    x = tl.load(X + o)
    tl.store(Y + o, triton_cast(tl_exp(x), tl.float16).to(tl.float32))


@case
def builtin_aliases_in_module_globals():
    x = torch.randn(32)
    y = torch.empty(32)
    _aliased[(1,)](x, y, BLOCK=32)
    same(y, x.exp().half().float(), "triton_cast(tl_exp(x), fp16)", rtol=0, atol=0)
    assert triton_cast is tl.cast, "the alias was not put back after the launch"


# --- warmup: nothing compiled, so what a compiled kernel reports is a gap, named ----------
@case
def warmup_then_reading_the_compiled_kernel_is_a_gap():
    x = torch.randn(32)
    k = _aliased.warmup(x, torch.empty(32), BLOCK=32, grid=(1,))  # ignoring it still works
    try:
        k.n_regs
    except Exception as e:  # noqa: BLE001
        why = _interp.unsupported(e)
        assert why is not None and "n_regs" in why and "only on a GPU" in why, why
    else:
        raise AssertionError("n_regs of an interpreted warmup read as a number")


print("RESULTS=" + json.dumps(RESULTS))
'''

CASES = ["installed", "float_scalar_argument", "libdevice_functions",
         "libdevice_missing_on_cuda_fails_as_on_the_gpu", "bf16_elementwise", "fp16_elementwise",
         "bf16_reductions", "fp16_reductions", "nan_rows_in_reductions",
         "constexpr_value_in_jit_helpers", "constexpr_on_the_left_of_a_tensor",
         "tensor_and_or_not_masks",
         "cuda_device_queries_on_cpu", "autotune_without_a_driver", "unsupported_is_recognised",
         "builtin_aliases_in_module_globals", "warmup_then_reading_the_compiled_kernel_is_a_gap"]


@pytest.fixture(scope="module")
def gaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    script = tmp_path_factory.mktemp("interp") / "gaps.py"
    script.write_text(GAPS)
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS=")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULTS="):])


@pytest.mark.parametrize("name", CASES)
def test_interpreter_gap_is_fixed(name: str, gaps: dict[str, str | None]) -> None:
    assert name in gaps, sorted(gaps)
    assert gaps[name] is None, gaps[name]


def test_install_is_a_noop_outside_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator (this process) is never patched: install() needs TRITON_INTERPRET."""
    import torch

    from sandbox import _interp

    device = torch.cuda.device
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _interp.install()
    assert _interp.APPLIED == [] and torch.cuda.device is device


# --- through the verifier ------------------------------------------------------------------------
PROBLEM = '''
"""RMSNorm over bf16 rows."""

import torch
import torch.nn as nn

rows = 6
cols = 96

KBENCH = {
    "dtype": "bfloat16",
    "cpu_shapes": {"small": {"rows": 6, "cols": 96}, "odd": {"rows": 3, "cols": 37}},
}


class Model(nn.Module):
    def __init__(self, cols: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(cols, dtype=torch.bfloat16))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def get_inputs():
    # x: [rows, cols]
    return [torch.randn(rows, cols, dtype=torch.bfloat16)]


def get_init_inputs():
    return [cols]
'''

MODEL_NEW = '''

class ModelNew(nn.Module):
    def __init__(self, cols: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(cols, dtype=torch.bfloat16))
        self.eps = 1e-6
'''

# Liger-style: a float eps argument, libdevice.rsqrt, a dtype constexpr through a jit helper,
# an `and` mask, bf16 arithmetic after fp32 accumulation, a persistent grid sized by the
# device's multiprocessor count inside `torch.cuda.device(x.device)`.
LIGER_STYLE = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra.libdevice import rsqrt


@triton.jit
def _cast(x, dtype: tl.constexpr):
    return x.to(dtype.value)


@triton.jit
def _rms_norm_fwd(Y, X, W, stride, n_rows, n_cols, eps, BLOCK: tl.constexpr,
                  ACC: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols and cols >= 0
    w = tl.load(W + cols, mask=mask, other=0.0)
    for row in range(pid, n_rows, tl.num_programs(0)):
        x = _cast(tl.load(X + row * stride + cols, mask=mask, other=0.0), ACC)
        rstd = rsqrt(tl.sum(x * x, axis=0) / n_cols + eps.to(tl.float32))
        y = (x * rstd).to(tl.bfloat16) * w  # Llama casting: the weight multiplies in bf16
        tl.store(Y + row * stride + cols, y, mask=mask)
''' + MODEL_NEW + '''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(x.device):
            x = x.contiguous()
            n_rows, n_cols = x.shape
            y = torch.empty_like(x)
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
            _rms_norm_fwd[(min(sms, n_rows),)](
                y, x, self.weight, x.stride(0), n_rows, n_cols, self.eps,
                BLOCK=triton.next_power_of_2(n_cols), ACC=tl.float32)
        return y
'''

INLINE_ASM = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _rms_norm_fwd(Y, X, W, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    ms = tl.sum(x * x, axis=0) / n_cols + eps
    rstd = tl.inline_asm_elementwise("rsqrt.approx.f32 $0, $1;", "=r,r", [ms],
                                     dtype=tl.float32, is_pure=True, pack=1)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride + cols, (x * rstd * w).to(tl.bfloat16), mask=mask)
''' + MODEL_NEW + '''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        _rms_norm_fwd[(x.shape[0],)](y, x, self.weight, x.stride(0), x.shape[1], self.eps,
                                     BLOCK=triton.next_power_of_2(x.shape[1]))
        return y
'''


@pytest.fixture(scope="module")
def rms_norm(tmp_path_factory: pytest.TempPathFactory):
    from kbench.problems import load_file

    path = tmp_path_factory.mktemp("problem") / "rms_norm_bf16.py"
    path.write_text(textwrap.dedent(PROBLEM))
    return load_file(path)


def test_liger_style_bf16_kernel_is_correct_on_cpu(rms_norm) -> None:
    from sandbox import Status
    from sandbox.verifier import verify

    v = verify(rms_norm, LIGER_STYLE, device="cpu", timing=False)
    assert v.status is Status.CORRECT, v.reason


def test_what_the_interpreter_cannot_run_is_unsupported(rms_norm) -> None:
    from sandbox import Status
    from sandbox.verifier import verify

    v = verify(rms_norm, INLINE_ASM, device="cpu", timing=False)
    assert v.status is Status.UNSUPPORTED, (v.status, v.reason)
    assert v.reason.startswith("cannot be checked on CPU: inline assembly"), v.reason
