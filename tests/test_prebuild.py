"""Building a CUDA candidate ahead of its GPU verification, on CPU (sandbox.prebuild)."""

from __future__ import annotations

import importlib.resources
import shutil
import textwrap

import pytest

from sandbox import buildcache
from sandbox.prebuild import prebuild, target_arch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KBENCH_BUILD_CACHE", raising=False)
    return tmp_path / "cache"


def _example(name: str) -> str:
    return importlib.resources.files("kbench").joinpath(f"examples/{name}.py").read_text()


def test_a_triton_candidate_is_not_prebuilt(cache):
    got = prebuild(_example("level1/relu"), "cuda:0")
    assert got.state == "skipped" and got.why == "not a CUDA candidate"


def test_the_architecture_must_be_known(cache, monkeypatch):
    """On a machine with no GPU and no TORCH_CUDA_ARCH_LIST there is nothing to build for."""
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    buildcache._device_facts.cache_clear()
    assert target_arch("cpu") is None
    got = prebuild(_example("level1/relu_cuda"), "cpu")
    assert got.state == "skipped" and "architecture is unknown" in got.why
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert target_arch("cpu") == "9.0"


def test_a_refused_candidate_is_not_built(cache, monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    src = _example("level1/relu_cuda").replace("import torch\n", "import torch\nimport os\n", 1)
    src += "\nos.system('true')\n"
    got = prebuild(src, "cuda:0")
    assert got.state == "skipped" and "static policy" in got.why


# A C++-only extension: what this CPU-only torch can build (CUDA sources need a CUDA torch).
_CPP = textwrap.dedent('''
    import torch
    import torch.nn as nn
    from torch.utils.cpp_extension import load_inline

    _ext = load_inline(
        name="kbench_prebuild_probe",
        cpp_sources="torch::Tensor twice(torch::Tensor x) { return x * 2; }",
        functions=["twice"],
        verbose=False,
    )


    class ModelNew(nn.Module):
        def forward(self, x):
            return _ext.twice(x)
''')


class _NoChild:
    """An isolation backend that fails the test if a child is started."""

    def start(self, *args, **kwargs):
        raise AssertionError("prebuild started a child for a build the cache holds")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ninja") is None or shutil.which("c++") is None,
                    reason="torch's JIT build needs ninja and a C++ compiler on PATH")
def test_a_build_is_made_once_then_found_in_the_cache(cache, monkeypatch):
    """The first prebuild compiles (in a child that sees no GPU) and saves an entry; the
    second restores it into the same stable directory and ninja has nothing to do (the
    library's mtime is unchanged, so no entry is written again)."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    first = prebuild(_CPP, "cuda:0", static_policy=False)
    assert first.state == "built", first
    entries = [p for p in (cache / "builds").iterdir() if p.is_dir() and len(p.name) == 64]
    assert len(entries) == 1
    assert any(f.suffix == ".so" for f in entries[0].rglob("*")), "the library was kept"
    # "cached": the entry restored, and no child started to import the candidate again (a
    # run asks once per candidate, a Ray task once per verification)
    second = prebuild(_CPP, "cuda:0", static_policy=False, isolation=_NoChild())
    assert second.state == "cached", second


def test_a_build_for_a_gpu_this_process_cannot_see_keys_it_by_that_gpus_capability(
        cache, monkeypatch):
    """A Ray build task sees no GPU: given the node's capability, it builds for that
    architecture and under the key the verification on that GPU looks up (whose torch
    reports the same capability); without it there is nothing to build for."""
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    facts = buildcache._device_facts
    facts.cache_clear()
    try:
        assert target_arch("cuda:0") is None  # no GPU visible here
        assert target_arch("cuda:0", capability="9.0") == "9.0+PTX"
        assert buildcache.toolchain("cpu", "9.0")["capability"] is None  # a CPU build: none
        off_gpu = buildcache.toolchain("cuda:0", "9.0")
        real = buildcache._device_facts("cuda:0")
        monkeypatch.setattr(buildcache, "_device_facts",
                            lambda device: {**real, "capability": "9.0"})
        assert buildcache.toolchain("cuda:0") == off_gpu  # the GPU's own view: same key
        assert buildcache.toolchain("cuda:0", "8.0") != off_gpu
    finally:
        facts.cache_clear()
