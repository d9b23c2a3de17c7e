"""GELU(tanh) in Unsloth's style (unsloth/kernels/geglu.py + utils.py): module-level aliases
(triton_tanh = libdevice.tanh chosen by Triton version, torch_gpu_device = torch.cuda.device,
next_power_of_2 = triton.next_power_of_2), MAX_FUSED_SIZE annotated int, the launch inside
`with torch_gpu_device(x.device):` only for CUDA tensors (contextlib.nullcontext otherwise),
an autograd Function with ctx.mark_non_differentiable / ctx.set_materialize_grads and
ctx.needs_input_grad read in backward, tl.device_assert behind a DEBUG constexpr.

Problem: level1/gelu_tanh
Style: module-level aliases of tl builtins (triton_cast = tl.cast) called in the kernel
Expected: correct
"""
import contextlib

import torch
import torch.nn as nn
import triton
import triton.language as tl
from packaging.version import Version

if Version(triton.__version__) >= Version("3.0.0"):
    from triton.language.extra import libdevice

    triton_tanh = libdevice.tanh
    triton_cast = tl.cast
else:
    triton_tanh = tl.math.tanh

    @triton.jit
    def triton_cast(x, dtype):
        return x.to(dtype)

torch_gpu_device = torch.cuda.device
next_power_of_2 = triton.next_power_of_2
MAX_FUSED_SIZE: int = 65536
DEBUG: tl.constexpr = False


def calculate_settings(n: int) -> tuple[int, int]:
    BLOCK_SIZE: int = next_power_of_2(n)
    if BLOCK_SIZE > MAX_FUSED_SIZE:
        BLOCK_SIZE = MAX_FUSED_SIZE
    num_warps: int = 4
    if BLOCK_SIZE >= 32768:
        num_warps = 32
    elif BLOCK_SIZE >= 8192:
        num_warps = 16
    elif BLOCK_SIZE >= 2048:
        num_warps = 8
    return BLOCK_SIZE, num_warps


@triton.jit
def _gelu_tanh_kernel(x, y, n_elements, BLOCK_SIZE: tl.constexpr, DEBUG: tl.constexpr):
    block_idx = tl.program_id(0)
    offsets = block_idx.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if DEBUG:
        tl.device_assert(n_elements > 0, "empty input")
    e_row = tl.load(x + offsets, mask=mask, other=0).to(tl.float32)
    s = 0.7978845608028654  # sqrt(2 / pi)
    f_row = 0.5 * e_row * (triton_tanh(s * e_row * (1.0 + 0.044715 * e_row * e_row)) + 1.0)
    f_row = triton_cast(f_row, y.dtype.element_ty)
    tl.store(y + offsets, f_row, mask=mask)


def gelu_tanh_forward(x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    x = x.reshape(-1)
    n_elements = x.numel()
    out = torch.empty(n_elements, dtype=x.dtype, device=x.device)
    BLOCK_SIZE = 1024
    grid = lambda meta: (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)  # noqa: E731 - the grid lambda, as Triton code writes it
    ctx_mgr = torch_gpu_device(x.device) if x.is_cuda else contextlib.nullcontext()
    with ctx_mgr:
        _gelu_tanh_kernel[grid](x, out, n_elements, BLOCK_SIZE=BLOCK_SIZE, DEBUG=DEBUG)
    return out.view(shape)


class GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        y = gelu_tanh_forward(x)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy):
        if dy is None or not ctx.needs_input_grad[0]:
            return None
        raise NotImplementedError("inference only")


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GeluTanh.apply(x)
