"""A CUDA candidate that nvcc refuses, built ahead of its verification on a GPU machine
(``sandbox.prebuild``): the verification reports nvcc's error without building again while it
holds the device, unless the candidate asked torch about the GPU before its build. Needs CUDA
and nvcc (``-m gpu``; ``bench/gpu_session.sh``'s ``tests`` step with ``GPU_TESTS``)."""

from __future__ import annotations

import importlib.resources
import shutil

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("ninja") is None,
                       reason="needs nvcc and ninja on PATH"),
]

from kbench.problems import load  # noqa: E402
from sandbox import Status, verify  # noqa: E402
from sandbox.prebuild import prebuild  # noqa: E402

_RELU = importlib.resources.files("kbench").joinpath("examples/level1/relu_cuda.py").read_text()
# An undeclared identifier in the kernel: nvcc's "error: identifier ... is undefined".
_BAD = _RELU.replace("y[i] = v < scalar_t(0)", "y[i] = w < scalar_t(0)").replace(
    "kbench_example_relu", "kbench_gpu_prebuild_bad")
_ASKS = _BAD.replace("_ext = load_inline(",
                     "_CAP = torch.cuda.get_device_capability() "
                     "if torch.cuda.is_available() else None\n_ext = load_inline(")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KBENCH_BUILD_CACHE", raising=False)
    return tmp_path / "cache"


def test_a_kernel_nvcc_refuses_is_reported_from_its_build_ahead(cache):
    assert _BAD != _RELU
    spec = load("level1/relu")[0]
    got = prebuild(_BAD, "cuda")
    assert got.state == "compile_error", got
    v = verify(spec, _BAD, device="cuda")
    assert v.status is Status.COMPILE_ERROR, (v.status, v.reason)
    assert "identifier" in v.reason and "undefined" in v.reason, v.reason
    assert any("built ahead of the GPU verification" in n for n in v.notes), v.notes
    assert v.wall_s < 5.0, v.wall_s  # no child, no nvcc: the record was read
    # taken once: the next verification of the same source builds (and fails) itself
    again = verify(spec, _BAD, device="cuda")
    assert again.status is Status.COMPILE_ERROR and "identifier" in again.reason
    assert not any("built ahead" in n for n in again.notes)


def test_a_candidate_that_asked_about_the_gpu_is_built_by_its_verification(cache):
    spec = load("level1/relu")[0]
    got = prebuild(_ASKS, "cuda")
    assert got.state != "compile_error", got
    v = verify(spec, _ASKS, device="cuda")
    assert v.status is Status.COMPILE_ERROR and "identifier" in v.reason, v.reason
    assert not any("built ahead" in n for n in v.notes), v.notes
