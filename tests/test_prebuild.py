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


# The same extension, with a C++ error the compiler reports: a build that fails the same on
# any machine with this toolchain.
_CPP_BAD = _CPP.replace("return x * 2;", "return x * ;").replace(
    "kbench_prebuild_probe", "kbench_prebuild_bad")
_ASKS = _CPP_BAD.replace("_ext = load_inline(",
                         "_ON_GPU = torch.cuda.is_available()\n_ext = load_inline(")
_READS_ENV = _CPP_BAD.replace("_ext = load_inline(", "import os\n"
                              "_ON_GPU = bool(os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
                              "_ext = load_inline(")


def _relu_spec():
    from pathlib import Path

    from sandbox.problem import load_file

    relu = Path(__file__).resolve().parents[1] / "problems" / "level1" / "relu.py"
    return load_file(relu, key="level1/relu", suite="level1")


needs_toolchain = pytest.mark.skipif(
    shutil.which("ninja") is None or shutil.which("c++") is None,
    reason="torch's JIT build needs ninja and a C++ compiler on PATH")


@pytest.mark.slow
@needs_toolchain
def test_a_build_the_compiler_refuses_is_handed_to_the_verification_once(cache, monkeypatch):
    """A failed prebuild (g++ refuses the source; the candidate asked nothing of the GPU) is
    noted in the cache; the GPU verification of the same source then reports the compiler's
    error without starting a child (which would build again while holding the device), and
    says where the build ran. The note is taken once: a later verification builds itself."""
    from sandbox import verify
    from sandbox.verdict import Status

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    got = prebuild(_CPP_BAD, "cuda:0", static_policy=False)
    assert got.state == "compile_error", got
    records = list((cache / "builds").glob("*.failed"))
    assert len(records) == 1
    v = verify(_relu_spec(), _CPP_BAD, device="cuda:0", static_policy=False,
               isolation=_NoChild())
    assert v.status is Status.COMPILE_ERROR, v
    assert "error" in v.reason and "x * ;" in v.log_tail, v.reason
    assert any("built ahead of the GPU verification" in n and "9.0" in n for n in v.notes)
    assert v.explain["build_ahead"]["arch"] == "9.0"
    assert not list((cache / "builds").glob("*.failed")), "the note was taken"
    with pytest.raises(AssertionError, match="started a child"):
        verify(_relu_spec(), _CPP_BAD, device="cuda:0", static_policy=False,
               isolation=_NoChild())


@pytest.mark.slow
@needs_toolchain
@pytest.mark.parametrize("source", [_ASKS, _READS_ENV], ids=["torch", "environ"])
def test_a_failed_build_that_asked_about_the_gpu_is_not_handed_on(cache, monkeypatch, source):
    """The build child sees no GPU: a candidate that asked torch about one before its build,
    or read ``CUDA_VISIBLE_DEVICES`` itself, could have built other sources or flags with
    one, so its failure is left to the verification, which builds on the GPU's node."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    got = prebuild(source, "cuda:0", static_policy=False)
    assert got.state != "compile_error", got
    assert not list((cache / "builds").glob("*.failed"))


@pytest.mark.parametrize(("msg", "handed"), [
    ({"build_error": True, "asked": [], "message":
      "RuntimeError: Error building extension 'x': [1/2] c++ ... \n"
      "main.cpp:3:48: error: expected primary-expression before ';' token"}, True),
    ({"build_error": True, "asked": [], "message":
      "x.cu(12): error: identifier \"foo\" is undefined\n1 error detected"}, True),
    ({"build_error": True, "asked": [], "message":
      "/usr/bin/ld: x.o: undefined reference to `bar'\ncollect2: error: ld returned 1 exit "
      "status"}, True),
    ({"build_error": True, "asked": ["get_device_capability"], "message":
      "x.cu(12): error: identifier \"foo\" is undefined"}, False),
    ({"build_error": True, "asked": [], "message":
      "nvcc error   : 'cicc' died due to signal 9 (Kill signal)"}, False),
    ({"build_error": True, "asked": [], "message":
      "c++: fatal error: Killed signal terminated program cc1plus"}, False),
    ({"build_error": True, "asked": [], "message": "No space left on device: error: x"}, False),
    ({"build_error": False, "asked": [], "message": "RuntimeError: error: CUDA unavailable"},
     False),
    ({"build_error": True, "asked": [], "message": "ninja: build stopped: subcommand failed."},
     False),
])
def test_only_a_compilers_own_refusal_is_handed_on(msg, handed):
    from sandbox.prebuild import deterministic_failure

    assert deterministic_failure(msg) is handed


def test_a_failed_build_record_is_signed_taken_once_and_expires(cache, monkeypatch):
    jc = buildcache.open_job("src", "cuda", "cuda:0", stable_dir=False)
    assert jc.take_failure() is None
    assert jc.note_failure("x.cu(1): error: nope", "9.0+PTX")
    got = jc.take_failure()
    assert got["message"] == "x.cu(1): error: nope" and got["arch"] == "9.0+PTX"
    assert jc.take_failure() is None  # taken once
    other = buildcache.open_job("other src", "cuda", "cuda:0", stable_dir=False)
    assert other.take_failure() is None  # another source's verification sees nothing
    # a record copied under another key, or edited, is refused
    assert jc.note_failure("x.cu(1): error: nope", "9.0")
    path = jc.root / f"{jc.key}.failed"
    path.rename(jc.root / f"{other.key}.failed")
    assert other.take_failure() is None
    assert jc.note_failure("x.cu(1): error: nope", "9.0")
    path.write_text(path.read_text().replace("nope", "fake"))
    assert jc.take_failure() is None
    # an hour later the verification builds for itself
    assert jc.note_failure("x.cu(1): error: nope", "9.0")
    now = buildcache.time.time()
    monkeypatch.setattr(buildcache.time, "time", lambda: now + buildcache.FAILURE_TTL_S + 1)
    assert jc.take_failure() is None
    assert not list(jc.root.glob("*.failed")) and not list(jc.root.glob(".tmp-*"))


def test_the_build_child_notes_the_device_queries_of_code_outside_torch():
    """``_child._watch_device_queries``: a query from the candidate's code is noted; the same
    query from torch's own code (its extension builder asks, for one) is not."""
    import os
    import types

    import torch

    from sandbox._child import _watch_device_queries

    cuda = types.SimpleNamespace(__file__=torch.cuda.__file__, is_available=lambda: False,
                                 get_device_capability=lambda d=None: (9, 0))
    asked = _watch_device_queries(cuda)
    inside = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "torch", "x.py")
    exec(compile("cuda.is_available(); cuda.get_device_capability()", inside, "exec"),
         {"cuda": cuda})
    assert asked == set()
    assert cuda.is_available() is False  # answers as before
    assert asked == {"is_available"}
    exec(compile("cuda.get_device_capability(0)", "candidate.py", "exec"), {"cuda": cuda})
    assert asked == {"is_available", "get_device_capability"}


def test_the_build_child_notes_reads_of_the_gpu_visibility_environment():
    """``_child._watch_visibility_reads``: a candidate that reads ``CUDA_VISIBLE_DEVICES``
    itself (it is empty in the build child, set in its verification) is noted as torch's
    device queries are; torch's own reads and other variables are not."""
    import os

    import torch

    from sandbox._child import _watch_visibility_reads

    env = os._Environ(dict(os.environ._data), os.environ.encodekey, os.environ.decodekey,
                      os.environ.encodevalue, os.environ.decodevalue)
    env["CUDA_VISIBLE_DEVICES"] = ""
    asked: set[str] = set()
    torch_dir = os.path.dirname(os.path.dirname(torch.__file__))
    _watch_visibility_reads(env, asked, torch_dir)
    inside = os.path.join(torch_dir, "torch", "x.py")
    exec(compile("env['CUDA_VISIBLE_DEVICES']; env.get('CUDA_VISIBLE_DEVICES')", inside,
                 "exec"), {"env": env})
    exec(compile("env.get('PATH'); 'HOME' in env", "candidate.py", "exec"), {"env": env})
    assert asked == set()
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # answers as before
    assert asked == {"environ[CUDA_VISIBLE_DEVICES]"}
    exec(compile("'NVIDIA_VISIBLE_DEVICES' in env", "candidate.py", "exec"), {"env": env})
    assert asked == {"environ[CUDA_VISIBLE_DEVICES]", "environ[NVIDIA_VISIBLE_DEVICES]"}
    assert isinstance(env, os._Environ) and os.environ.__class__ is os._Environ
