"""Build caches (sandbox.buildcache): keyed by source and toolchain, copied in and out by the
parent with a signed manifest, evicted by size, one stable job directory per key at a time."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kbench.problems import load
from sandbox import Limits, Status, buildcache, verify
from tests.fakes.relu import RELU

TOOLS = {"torch": "2.13.0", "cuda": "12.8", "nvcc": "V12.8.93", "arch_list": "9.0",
         "capability": "9.0", "python": "CPython 3.11.7", "triton": "3.4.0", "kind": "cuda"}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KBENCH_BUILD_CACHE", raising=False)
    return tmp_path / "cache" / "builds"


def _job_files(work: Path) -> None:
    """What a build leaves in a job directory (torch extension + Triton cache)."""
    ext = work / "torch_extensions" / "ext"
    ext.mkdir(parents=True)
    (ext / "main.cpp").write_text("int f() { return 1; }")
    (ext / "ext.so").write_bytes(b"\x7fELF" + b"\0" * 1000)
    (ext / "ext.so").chmod(0o755)
    (ext / ".ninja_log").write_text("# ninja log v5\n")
    os.utime(ext / "main.cpp", ns=(1_000_000_123, 1_000_000_123))
    tc = work / "triton_cache" / "ABCDEF"
    tc.mkdir(parents=True)
    (tc / "kernel.cubin").write_bytes(b"cubin")


def _tree(top: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.relative_to(top).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns,
                                             p.stat().st_mode & 0o777)
            for p in sorted(top.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------
def test_key_changes_with_source_backend_and_each_toolchain_part():
    base = buildcache.key("src", "cuda", TOOLS)
    assert base == buildcache.key("src", "cuda", dict(TOOLS))
    assert len(base) == 64
    others = {buildcache.key("src ", "cuda", TOOLS), buildcache.key("src", "triton", TOOLS)}
    others |= {buildcache.key("src", "cuda", {**TOOLS, k: "other"}) for k in TOOLS}
    assert base not in others and len(others) == 2 + len(TOOLS)


def test_toolchain_names_what_a_build_depends_on(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    tools = buildcache.toolchain("cpu")
    assert {"torch", "cuda", "nvcc", "cxx", "arch_list", "capability", "python", "triton",
            "kind"} <= set(tools)
    assert tools["arch_list"] == "9.0" and tools["kind"] == "cpu"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    assert buildcache.key("s", "cuda", buildcache.toolchain("cpu")) != buildcache.key(
        "s", "cuda", tools)


# ---------------------------------------------------------------------------------------
# restore / save
# ---------------------------------------------------------------------------------------
def test_restore_of_a_missing_key_is_a_no_op(root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    assert buildcache.restore(work, "0" * 64, root) is None
    assert list(work.iterdir()) == []


def test_save_then_restore_reproduces_files_with_mtimes_and_modes(root, tmp_path):
    src, dst = tmp_path / "a", tmp_path / "b"
    _job_files(src)
    (src / "candidate.py").write_text("not a build artifact")
    assert buildcache.save(src, "k" * 64, root)
    dst.mkdir()
    got = buildcache.restore(dst, "k" * 64, root)
    assert got is not None and got.files == 4
    want = _tree(src)
    del want["candidate.py"]
    assert _tree(dst) == want


def test_links_and_torch_lock_files_are_not_kept(root, tmp_path):
    src, dst = tmp_path / "a", tmp_path / "b"
    _job_files(src)
    secret = tmp_path / "secret.txt"
    secret.write_text("parent's file")
    (src / "triton_cache" / "link").symlink_to(secret)
    (src / "triton_cache" / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    (src / "torch_extensions" / "ext" / "lock").write_text("")  # a killed build's baton
    assert buildcache.save(src, "k" * 64, root)
    dst.mkdir()
    assert buildcache.restore(dst, "k" * 64, root) is not None
    assert not (dst / "triton_cache" / "link").exists()
    assert not (dst / "triton_cache" / "dirlink").exists()
    assert not (dst / "torch_extensions" / "ext" / "lock").exists()


def _tamper_content(entry: Path) -> None:
    p = entry / "files" / "triton_cache" / "ABCDEF" / "kernel.cubin"
    p.write_bytes(b"evil!")  # same size


def _tamper_manifest(entry: Path) -> None:
    """Rewrite a file and its manifest hash too, without the parent's secret."""
    import hashlib

    p = entry / "files" / "torch_extensions" / "ext" / "ext.so"
    p.write_bytes(b"evil")
    raw = json.loads((entry / "manifest.json").read_text())
    body = json.loads(raw["body"])
    body["files"]["torch_extensions/ext/ext.so"][:2] = [hashlib.sha256(b"evil").hexdigest(), 4]
    raw["body"] = json.dumps(body, sort_keys=True)
    (entry / "manifest.json").write_text(json.dumps(raw))


def _plant_file(entry: Path) -> None:
    (entry / "files" / "triton_cache" / "planted.so").write_bytes(b"x")


def _swap_for_link(entry: Path) -> None:
    p = entry / "files" / "triton_cache" / "ABCDEF" / "kernel.cubin"
    p.unlink()
    p.symlink_to("/etc/hostname")


@pytest.mark.parametrize("tamper", [_tamper_content, _tamper_manifest, _plant_file,
                                    _swap_for_link])
def test_a_tampered_entry_is_dropped_on_restore(root, tmp_path, tamper):
    src, dst = tmp_path / "a", tmp_path / "b"
    _job_files(src)
    assert buildcache.save(src, "k" * 64, root)
    tamper(root / ("k" * 64))
    dst.mkdir()
    assert buildcache.restore(dst, "k" * 64, root) is None
    assert not (root / ("k" * 64)).exists()
    assert list(dst.iterdir()) == [], "nothing of a tampered entry reaches the job"


def test_eviction_removes_least_recently_used_entries_above_the_cap(root, tmp_path):
    src = tmp_path / "a"
    _job_files(src)
    keys = [c * 64 for c in "abc"]
    for i, k in enumerate(keys):
        assert buildcache.save(src, k, root)
        os.utime(root / k, (1000 + i, 1000 + i))
    dst = tmp_path / "b"
    dst.mkdir()
    assert buildcache.restore(dst, keys[0], root)  # used now: the newest
    one = sum(p.stat().st_size for p in (root / keys[0] / "files").rglob("*") if p.is_file())
    assert buildcache.evict(root, max_bytes=2 * one) == [keys[1]]
    assert buildcache.evict(root, max_bytes=2 * one) == []
    assert buildcache.evict(root, max_bytes=0) == [keys[2], keys[0]]


def test_an_entry_larger_than_the_entry_cap_is_not_kept(root, tmp_path):
    src = tmp_path / "a"
    _job_files(src)
    assert not buildcache.save(src, "k" * 64, root, max_entry_bytes=10)
    assert not (root / ("k" * 64)).exists()


# ---------------------------------------------------------------------------------------
# One job's use
# ---------------------------------------------------------------------------------------
def test_disabled_by_env(root, monkeypatch):
    monkeypatch.setenv("KBENCH_BUILD_CACHE", "0")
    assert buildcache.open_job("src", "triton", "cpu") is None
    monkeypatch.setenv("KBENCH_BUILD_CACHE", "1")
    monkeypatch.setenv("KBENCH_CACHE_DIR", "off")
    assert buildcache.open_job("src", "triton", "cpu") is None


def test_concurrent_jobs_of_one_source_do_not_share_a_directory(root):
    a = buildcache.open_job("src", "cuda", "cpu")
    b = buildcache.open_job("src", "cuda", "cpu")
    other = buildcache.open_job("other src", "cuda", "cpu")
    try:
        assert a is not None and b is not None and other is not None
        wa = a.workdir()
        assert wa is not None and wa.is_dir() and (wa.stat().st_mode & 0o777) == 0o700
        assert b.workdir() is None, "the second job of the same source gets a fresh dir"
        assert other.workdir() not in (None, wa)
        _job_files(wa)
        assert not b.save(wa), "only the holder of the stable directory saves"
    finally:
        a.release()
        b.release()
        other.release()
    assert not wa.exists()
    c = buildcache.open_job("src", "cuda", "cpu")
    try:
        assert c.workdir() == wa and list(wa.iterdir()) == [], "same path, emptied"
    finally:
        c.release()


def test_an_unchanged_restore_is_not_saved_again(root):
    a = buildcache.open_job("src", "cuda", "cpu")
    _job_files(a.workdir())
    assert a.save(a.workdir())
    a.release()
    b = buildcache.open_job("src", "cuda", "cpu")
    try:
        assert b.restore(b.workdir())
        assert not b.save(b.workdir())
        (b.workdir() / "triton_cache" / "new").write_bytes(b"compiled since")
        assert b.save(b.workdir())
    finally:
        b.release()


# ---------------------------------------------------------------------------------------
# Through verify()
# ---------------------------------------------------------------------------------------
# An honest Triton kernel that also leaves a file in its Triton cache, as a compile on the GPU
# does (the CPU interpreter compiles nothing). `os` needs static_policy=False.
TRITON_WITH_ARTIFACT = RELU.replace("\nimport torch\n", "\nimport os\nimport torch\n", 1).replace(
    "\n\n@triton.jit", '''

_cache = os.environ["TRITON_CACHE_DIR"]
os.makedirs(_cache, exist_ok=True)
_seen = os.path.exists(os.path.join(_cache, "artifact.bin"))
with open(os.path.join(_cache, "artifact.bin"), "ab") as _f:
    _f.write(b"" if _seen else b"compiled once")


@triton.jit''', 1)


def test_a_triton_candidate_verified_twice_restores_its_triton_cache(root, caplog):
    spec = load("level1/relu")[0]
    src = textwrap.dedent(TRITON_WITH_ARTIFACT)
    limits = Limits(import_s=120, check_s=60, trials=2, derived_trials=2)
    caplog.set_level(logging.INFO, logger="sandbox.buildcache")

    v1 = verify(spec, src, device="cpu", limits=limits, static_policy=False)
    assert v1.status is Status.CORRECT, v1.reason
    assert not any("restored" in r.message for r in caplog.records)
    assert any("saved" in r.message for r in caplog.records)
    k = buildcache.key(src, "triton", buildcache.toolchain("cpu"))
    assert (root / k / "files" / "triton_cache" / "artifact.bin").read_bytes() == b"compiled once"

    caplog.clear()
    v2 = verify(spec, src, device="cpu", limits=limits, static_policy=False)
    assert v2.status is Status.CORRECT, v2.reason
    restored = [r.message for r in caplog.records if "restored" in r.message]
    assert restored == [f"build cache: restored 1 files (13 bytes) of entry {k[:16]}"]
    assert not any("saved" in r.message for r in caplog.records), "nothing new to keep"


def test_a_rejected_candidate_is_not_saved(root):
    spec = load("level1/relu")[0]
    # Returns its input: a runtime rejection or an incorrect verdict, never cached as rejected.
    src = textwrap.dedent(TRITON_WITH_ARTIFACT).replace(
        "        x = x.contiguous()\n", "        return x\n")
    limits = Limits(import_s=120, check_s=60, trials=2, derived_trials=2)
    v = verify(spec, src, device="cpu", limits=limits, static_policy=False)
    k = buildcache.key(src, "triton", buildcache.toolchain("cpu"))
    assert v.status is not Status.CORRECT
    assert (root / k).exists() == (v.status is not Status.REJECTED)


# ---------------------------------------------------------------------------------------
# A real torch JIT build (C++ only: this CI torch has no CUDA; the path logic is the same)
# ---------------------------------------------------------------------------------------
BUILD = textwrap.dedent('''
    import sys
    from torch.utils.cpp_extension import load_inline
    m = load_inline("kbench_cache_probe", cpp_sources=[
        "torch::Tensor twice(torch::Tensor x) { return x * 2; }"], functions=["twice"],
        verbose=True)
    print("built", m.__file__)
''')


def _build(work: Path) -> str:
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(work / "torch_extensions"),
           "HOME": str(work), "TMPDIR": str(work)}
    r = subprocess.run([sys.executable, "-c", BUILD], env=env, cwd=work, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ninja") is None or shutil.which("c++") is None,
                    reason="needs ninja and a C++ compiler")
def test_a_restored_torch_extension_is_not_rebuilt(root):
    src = "load_inline probe"
    first = buildcache.open_job(src, "cuda", "cpu")
    work = first.workdir()
    assert first.restore(work) is None
    out = _build(work)
    assert "c++ " in out or "g++ " in out, out  # compiled
    ext = work / "torch_extensions" / "kbench_cache_probe"
    so, obj = ext / "kbench_cache_probe.so", ext / "main.o"
    stamps = (so.stat().st_mtime_ns, obj.stat().st_mtime_ns)
    assert first.save(work)
    shutil.rmtree(work)
    first.release()

    again = buildcache.open_job(src, "cuda", "cpu")
    try:
        assert again.workdir() == work
        assert again.restore(work) is not None
        t0 = time.monotonic()
        out = _build(work)
        assert "no work to do" in out, out
        assert (so.stat().st_mtime_ns, obj.stat().st_mtime_ns) == stamps, "not rebuilt"
        print(f"restored build loaded in {time.monotonic() - t0:.1f} s")
    finally:
        again.release()
