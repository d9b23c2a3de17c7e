"""tanh with the device module found by name (getattr(torch, device_type)), an XPU probe, a
guarded optional import of libdevice and a version check, as portable kernel libraries do.

Problem: level1/tanh
Style: getattr(torch, device_type).is_available() probe; torch.xpu / torch.cuda
    is_available probes; hasattr(torch, ...); try/except ImportError around an optional
    import; importlib.util.find_spec and importlib.metadata.version probes; packaging.version
    with torch.__version__; tanh as a device helper; int64 offsets
Expected: correct
"""

import importlib.metadata
import importlib.util

import torch
import torch.nn as nn
import triton
import triton.language as tl
from packaging import version

try:
    from triton.language.extra import libdevice  # noqa: F401 - optional, probed only
    HAS_LIBDEVICE = True
except ImportError:
    HAS_LIBDEVICE = False


def infer_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


DEVICE_TYPE = infer_device()
HAS_DEVICE_MODULE = DEVICE_TYPE != "cpu" and getattr(torch, DEVICE_TYPE).is_available()
NEW_TORCH = version.parse(torch.__version__.split("+")[0]) >= version.parse("2.0")
HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None
try:
    TRITON_DIST_VERSION = version.parse(importlib.metadata.version("triton"))
except importlib.metadata.PackageNotFoundError:
    TRITON_DIST_VERSION = version.parse(triton.__version__)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _tanh_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, _tanh(x), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = 2048 if HAS_DEVICE_MODULE else 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        _tanh_kernel[(triton.cdiv(n, self.block),)](xc, y, n, BLOCK=self.block)
        return y
