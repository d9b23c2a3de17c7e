"""Attack: vendor library from CUDA — cublasSgemm inside a load_inline extension.

Problem: tests/candidates/problems/matmul.py
Expected: rejected by policy: cuda-vendor
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
#include <torch/extension.h>
#include <cublas_v2.h>

torch::Tensor mm_cuda(torch::Tensor a, torch::Tensor b) {
    auto c = torch::empty({a.size(0), b.size(1)}, a.options());
    cublasHandle_t handle;
    cublasCreate(&handle);
    const float alpha = 1.f, beta = 0.f;
    // row-major C = A B as column-major C^T = B^T A^T
    cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, b.size(1), a.size(0), a.size(1), &alpha,
                b.data_ptr<float>(), b.size(1), a.data_ptr<float>(), a.size(1), &beta,
                c.data_ptr<float>(), b.size(1));
    cublasDestroy(handle);
    return c;
}
"""

_ext = load_inline(name="kbench_attack_cublas", cpp_sources="torch::Tensor mm_cuda(torch::Tensor a, torch::Tensor b);",
                   cuda_sources=CUDA_SRC, functions=["mm_cuda"], extra_ldflags=["-lcublas"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _ext.mm_cuda(a.contiguous(), b.contiguous())
