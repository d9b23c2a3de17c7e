"""Row softmax as a CUDA kernel (load_inline): one 1024-thread block per row. Each thread
keeps an online (max, sum of exp) over its strided columns; the block merges the pairs with
warp shuffles, then every thread writes exp(x - max) / sum for its columns."""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_CUDA_SRC = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <cfloat>

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Merge two (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void merge(float& m, float& l, float m2, float l2) {
    const float m_new = fmaxf(m, m2);
    l = l * __expf(m - m_new) + l2 * __expf(m2 - m_new);
    m = m_new;
}

__global__ void __launch_bounds__(kThreads)
softmax_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n_cols) {
    const float* xr = x + (int64_t)blockIdx.x * n_cols;
    float* yr = y + (int64_t)blockIdx.x * n_cols;

    // Finite start: a thread with no columns keeps l = 0 and never makes exp(-inf + inf).
    float m = -FLT_MAX, l = 0.f;
    for (int64_t c = threadIdx.x; c < n_cols; c += kThreads) {
        const float v = xr[c];
        const float m_new = fmaxf(m, v);
        l = l * __expf(m - m_new) + __expf(v - m_new);
        m = m_new;
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffff, m, off);
        const float l2 = __shfl_xor_sync(0xffffffff, l, off);
        merge(m, l, m2, l2);
    }
    __shared__ float sm[kWarps], sl[kWarps];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
    __syncthreads();
    m = lane < kWarps ? sm[lane] : -FLT_MAX;
    l = lane < kWarps ? sl[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) {  // every warp reduces the same 32 pairs
        const float m2 = __shfl_xor_sync(0xffffffff, m, off);
        const float l2 = __shfl_xor_sync(0xffffffff, l, off);
        merge(m, l, m2, l2);
    }
    const float inv_sum = 1.f / l;
    for (int64_t c = threadIdx.x; c < n_cols; c += kThreads) {
        yr[c] = __expf(xr[c] - m) * inv_sum;
    }
}

torch::Tensor softmax(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kFloat, "x must be a float32 CUDA tensor");
    x = x.contiguous();
    auto y = torch::empty_like(x);
    const int64_t n_cols = x.size(-1);
    const int64_t n_rows = n_cols == 0 ? 0 : x.numel() / n_cols;
    if (n_rows == 0) return y;
    TORCH_CHECK(n_rows <= 2147483647LL, "too many rows for a 1-D grid");
    softmax_kernel<<<(unsigned)n_rows, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<float>(), y.data_ptr<float>(), n_cols);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
"""

_CPP_SRC = "torch::Tensor softmax(torch::Tensor x);"

_ext = load_inline(
    name="kbench_example_softmax",
    cpp_sources=_CPP_SRC,
    cuda_sources=_CUDA_SRC,
    functions=["softmax"],
    extra_cuda_cflags=["-O3"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ext.softmax(x)
