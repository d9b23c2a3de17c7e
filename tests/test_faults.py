"""Faults survived with run-time candidates (issue 12): candidates that pass the static
policy and then hang, flood their output, exit mid-protocol, crash, or allocate past memory
each get their own verdict status and reason; the child is replaced and the next candidate
verifies correctly in the same run (the same fork server, for the default backend).

Forking is refused by the static policy on every route a candidate has (no ``os``,
``subprocess``, ``multiprocessing``, DataLoader workers ...), which is asserted here; the
run-time defence behind it (a descendant that left the child's process group with
``setsid`` is still killed) is tested with the policy switched off, as a native extension
on a GPU could fork. CPU only: Triton's interpreter; the GPU-memory cap's CPU-observable
part (the fraction computed and applied, the parent's check, ``kbench doctor``'s row) is
tested with fakes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from kbench.problems import load
from sandbox import Limits, Status, memcap, verify
from sandbox._process import LOG_CAP, LogDrain, sweep
from sandbox.backends import ForkServerBackend, SubprocessBackend, available_backends
from sandbox.job import Candidate, Job
from sandbox.policy import check_source

_FAST = Limits(import_s=60, check_s=4, trials=1, derived_trials=1, max_derived=1,
               host_memory_bytes=5 << 29)  # 2.5 GiB: torch and the interpreter need ~1

_RELU = '''
import logging
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    # KERNEL
    tl.store(y_ptr + offs, tl.maximum(x, 0.0), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        # FORWARD
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _relu[(triton.cdiv(n, 256),)](x, y, n, BLOCK=256)
        return y
'''


def _candidate(forward: str = "", kernel: str = "") -> str:
    src = _RELU.replace("        # FORWARD\n", textwrap.indent(textwrap.dedent(forward), " " * 8))
    return src.replace("    # KERNEL\n", textwrap.indent(textwrap.dedent(kernel), " " * 4))


HONEST = _candidate()

# name -> (source, status, words the reason must hold, the fault's kind in explain)
FAULTS: dict[str, tuple[str, Status, tuple[str, ...], str]] = {
    "hang_in_forward": (_candidate("while True:\n    pass\n"), Status.TIMEOUT,
                        ("no progress for 4 s", "check"), "hang"),
    "hang_in_triton_kernel": (_candidate(kernel=(
        "i = 0\nwhile i < n + 1:  # i never moves: the loop never ends\n    i = i * 1\n")),
        Status.TIMEOUT, ("no progress for 4 s",), "hang"),
    "flood_stdout": (_candidate("while True:\n    print('x' * 65536)\n"), Status.RUNTIME_ERROR,
                     ("flooded its output", "stdout/stderr"), "flood"),
    "flood_stderr_by_logging": (_candidate(
        "log = logging.getLogger('flood')\nlog.addHandler(logging.StreamHandler())\n"
        "while True:\n    log.error('y' * 65536)\n"), Status.RUNTIME_ERROR,
        ("flooded its output",), "flood"),
    "system_exit_mid_protocol": (_candidate("raise SystemExit(3)\n"), Status.RUNTIME_ERROR,
                                 ("SystemExit: 3", "during trial"), "exit"),
    "keyboard_interrupt_mid_protocol": (_candidate("raise KeyboardInterrupt\n"),
                                        Status.RUNTIME_ERROR, ("KeyboardInterrupt", "trial"),
                                        "exit"),
    "out_of_bounds_load_segfaults": (_candidate(kernel=(
        "far = tl.load(x_ptr + offs + (1 << 40))  # 4 TiB past the input\nx = x + far * 0.0\n")),
        Status.RUNTIME_ERROR, ("killed by SIGSEGV", "during check"), "signal"),
    "huge_allocation": (_candidate("z = torch.empty(1 << 42)  # 16 TiB\n"),
                        Status.RUNTIME_ERROR, ("out of memory", "can't allocate memory"), "oom"),
    "allocation_past_the_rlimit": (_candidate(
        "keep = []\nwhile True:\n    keep.append(torch.ones(1 << 26))  # 256 MiB each\n"),
        Status.RUNTIME_ERROR, ("out of memory", "trial"), "oom"),
}

# The kernel loops forever once the module's own count of calls passes 40: the checks (8
# calls on the CPU with _FAST) pass, and on a GPU the hang comes inside the timing loop
# (tests/test_gpu_faults.py).
HANG_WHEN_TIMED = (_candidate("_CALLS[0] += 1\n",
                              kernel="i = 0\nwhile i < hang:  # i never moves\n    i = i * 1\n")
                   .replace("@triton.jit", "_CALLS = [0]\n\n\n@triton.jit", 1)
                   .replace("def _relu(x_ptr, y_ptr, n, BLOCK",
                            "def _relu(x_ptr, y_ptr, n, hang, BLOCK")
                   .replace("_relu[(triton.cdiv(n, 256),)](x, y, n, BLOCK=256)",
                            "_relu[(triton.cdiv(n, 256),)](x, y, n, 7 * int(_CALLS[0] > 40), "
                            "BLOCK=256)"))  # 7, not 1: Triton would fold an argument of 1

# The subprocess backend pays torch's import per job: its cases are marked slow (CI runs them).
BACKENDS = [pytest.param(b, marks=[pytest.mark.slow] if b == "subprocess" else [])
            for b in ("forkserver", "subprocess") if b in available_backends()]


def _backend(name: str):
    return ForkServerBackend() if name == "forkserver" else SubprocessBackend()


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_candidates_pass_the_static_policy(name):
    source = FAULTS[name][0]
    assert check_source(source).ok, check_source(source).reason()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_gets_its_verdict_and_the_next_candidate_is_verified(relu, name, backend):
    source, status, words, fault = FAULTS[name]
    iso = _backend(backend)
    server = ForkServerBackend.server_pid() if backend == "forkserver" else None
    t0 = time.monotonic()
    v = verify(relu, source, device="cpu", limits=_FAST, isolation=iso)
    took = time.monotonic() - t0
    assert v.status is status, (v.status, v.reason, v.log_tail[-1500:])
    for w in words:
        assert w in v.reason, (w, v.reason)
    assert v.explain.get("fault") == fault, v.explain.get("fault")
    # a hang costs its limits (import + check), not the 300 s defaults
    assert took < _FAST.import_s + _FAST.check_s + 30, took
    nxt = verify(relu, HONEST, device="cpu", limits=_FAST, isolation=iso)
    assert nxt.status is Status.CORRECT, nxt.reason
    assert "fault" not in nxt.explain
    if server is not None:  # the same warm server forked a fresh child for the next one
        assert ForkServerBackend.server_pid() == server


def test_the_hang_when_timed_candidate_passes_every_check_on_the_cpu(relu):
    """HANG_WHEN_TIMED is honest through its checks (CPU, no timing): its hang can only be
    met in the timing loop, which is what the GPU test measures."""
    assert check_source(HANG_WHEN_TIMED).ok, check_source(HANG_WHEN_TIMED).reason()
    v = verify(relu, HANG_WHEN_TIMED, device="cpu", limits=replace(_FAST, check_s=60))
    assert v.status is Status.CORRECT, v.reason


def test_a_flood_keeps_only_the_tail_of_the_output(relu):
    v = verify(relu, FAULTS["flood_stdout"][0], device="cpu", limits=_FAST,
               isolation=ForkServerBackend())
    assert v.status is Status.RUNTIME_ERROR, v.reason
    assert f"more than {LOG_CAP >> 20} MiB" in v.reason
    assert 0 < len(v.log_tail) <= 2000  # the end of what it printed, not the flood
    assert v.log_tail.rstrip().endswith("x" * 100)


# ---------------------------------------------------------------------------------------
# Forking: refused by the policy on every route; a descendant that escaped is still killed
# ---------------------------------------------------------------------------------------
FORK_ROUTES = {
    "os_fork": "import os\nos.fork()\n",
    "os_system": "import os\nos.system('sleep 100 &')\n",
    "os_posix_spawn": "from os import posix_spawn\nposix_spawn('/bin/sleep', ['sleep'], {})\n",
    "subprocess": "import subprocess\nsubprocess.Popen(['sleep', '100'])\n",
    "multiprocessing": "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    "torch_multiprocessing": ("import torch.multiprocessing as mp\n"
                              "mp.Process(target=print).start()\n"),
    "dataloader_workers": ("list(torch.utils.data.DataLoader(list(range(4)), num_workers=2))\n"),
    "process_pool": ("import concurrent.futures\n"
                     "concurrent.futures.ProcessPoolExecutor(2).submit(print)\n"),
    "pty": "import pty\npty.fork()\n",
    "importlib_os": "import importlib\nimportlib.import_module('os').fork()\n",
    "builtins_import": "__import__('os').fork()\n",
}


@pytest.mark.parametrize("route", sorted(FORK_ROUTES))
def test_every_fork_route_is_refused_by_the_policy(relu, route):
    source = _candidate(FORK_ROUTES[route])
    assert not check_source(source).ok, route
    v = verify(relu, source, device="cpu", limits=_FAST)
    assert v.status is Status.REJECTED, (v.status, v.reason)


_ESCAPE = '''
import os as _os, time as _time
if _os.fork() == 0:  # a grandchild in its own session: the process-group kill misses it
    _os.setsid()
    if _os.fork() == 0:
        open(PIDFILE, "w").write(str(_os.getpid()))
        _time.sleep(300)
    _os._exit(0)
_time.sleep(0.3)
'''


def _running(pid: int, wait_s: float = 10.0) -> bool:
    """True if ``pid`` still runs after ``wait_s`` (absent or a zombie counts as gone)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() > end:
            return True
        time.sleep(0.1)


def assert_escaped_killed(pidfile) -> None:
    """The grandchild ``_ESCAPE`` forked (its pid in ``pidfile``) did not outlive its job;
    killed here if it did, so that a failing test leaves nothing running."""
    pid = int(pidfile.read_text())
    try:
        assert not _running(pid), f"the escaped grandchild {pid} outlived its job"
    finally:
        if _running(pid, 0):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_descendant_that_left_the_session_is_killed(relu, tmp_path, backend):
    pidfile = tmp_path / "escaped"
    src = _ESCAPE.replace("PIDFILE", repr(str(pidfile))) + HONEST
    v = verify(relu, src, device="cpu", limits=_FAST, isolation=_backend(backend),
               static_policy=False)
    assert v.status is Status.CORRECT, v.reason
    assert_escaped_killed(pidfile)
    nxt = verify(relu, HONEST, device="cpu", limits=_FAST, isolation=_backend(backend))
    assert nxt.status is Status.CORRECT, nxt.reason


_HOLD = '''
import os as _os, time as _time
if _os.fork() == 0:  # keeps every inherited descriptor (the result pipe too), own session
    _os.setsid()
    open(PIDFILE, "w").write(str(_os.getpid()))
    _time.sleep(300)
    _os._exit(0)
'''


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exit_is_seen_though_a_descendant_holds_the_pipes(relu, tmp_path, backend):
    """The child leaves with os._exit mid-protocol while a descendant in its own session
    holds the result pipe open: the exit is reported at once (not a timeout after the
    check limit), and the descendant is killed."""
    pidfile = tmp_path / "holder"
    src = _HOLD.replace("PIDFILE", repr(str(pidfile))) + _candidate("_os._exit(3)\n")
    lim = replace(_FAST, check_s=60)
    t0 = time.monotonic()
    v = verify(relu, src, device="cpu", limits=lim, isolation=_backend(backend),
               static_policy=False)
    assert v.status is Status.RUNTIME_ERROR and "exit code 3" in v.reason, v.reason
    assert v.explain["fault"] == "exit"
    assert time.monotonic() - t0 < lim.check_s, "waited for the check limit"
    pid = int(pidfile.read_text())
    try:
        assert not _running(pid), f"the descendant {pid} outlived its job"
    finally:
        if _running(pid, 0):
            os.kill(pid, signal.SIGKILL)


def _wait_for_exec(pid: int, name: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0].endswith(name):
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not exec {name!r} within {timeout} s")


def test_sweep_kills_only_processes_of_that_job(tmp_path):
    mine, other = tmp_path / "job", tmp_path / "job2"
    mine.mkdir()
    other.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    a = subprocess.Popen(["sleep", "60"], env={**env, "HOME": str(mine)}, start_new_session=True)
    b = subprocess.Popen(["sleep", "60"], env={**env, "HOME": str(other)}, start_new_session=True)
    try:
        # Popen returns after fork, perhaps before exec: until then /proc shows this
        # process's environment, not the job's (CI once swept too early and found none).
        for p in (a, b):
            _wait_for_exec(p.pid, b"sleep")
        assert sweep(mine) == [a.pid]
        assert a.wait(5) == -signal.SIGKILL
        assert b.poll() is None
    finally:
        b.kill()
        b.wait()


# ---------------------------------------------------------------------------------------
# The output drain
# ---------------------------------------------------------------------------------------
def test_log_drain_keeps_the_cap_and_the_tail_and_flags_a_flood(tmp_path):
    d = LogDrain(tmp_path / "child.log", cap=1 << 16)
    try:
        w = os.fdopen(d.w, "wb")
        w.write(b"a" * (1 << 16) + b"b" * 1000 + b"THE END")
        w.close()
        d.settle(5)
        assert d.flooded.is_set()
        assert (tmp_path / "child.log").stat().st_size == 1 << 16
        text = d.text(20)
        assert text.endswith("THE END") and "1007 bytes of output past" in text
    finally:
        d.close()


def test_log_drain_under_the_cap_is_not_a_flood(tmp_path):
    d = LogDrain(tmp_path / "child.log", cap=1 << 16)
    try:
        w = os.fdopen(d.w, "wb")
        w.write(b"hello\n")
        w.close()
        d.settle(5)
        assert not d.flooded.is_set()
        assert d.text(100) == "hello\n"
        assert (tmp_path / "child.log").read_bytes() == b"hello\n"
    finally:
        d.close()


# ---------------------------------------------------------------------------------------
# Memory caps: host address space on CPU runs; the GPU allocator's fraction (fakes)
# ---------------------------------------------------------------------------------------
def test_limits_round_trip_the_memory_caps():
    lim = Limits(gpu_memory_fraction=0.5, host_memory_bytes=8 << 30)
    assert Limits.from_dict(json.loads(json.dumps(lim.to_dict()))) == lim
    job = Job("p.py", "h", Candidate("s"), limits=lim)
    assert Job.from_dict(job.to_dict()).limits.gpu_memory_fraction == 0.5
    assert Limits().gpu_memory_fraction == 0.9  # on by default


def test_job_json_carries_the_cap_for_its_device(relu, tmp_path):
    from sandbox.verifier import _job

    _job(tmp_path, "candidate", "cpu", [], Limits(host_memory_bytes=5 << 30), relu)
    cpu = json.loads((tmp_path / "job.json").read_text())
    assert cpu["memory_bytes"] == 5 << 30 and "gpu_memory_fraction" not in cpu
    _job(tmp_path, "candidate", "cuda", [], Limits(gpu_memory_fraction=0.25), relu)
    gpu = json.loads((tmp_path / "job.json").read_text())
    assert gpu["gpu_memory_fraction"] == 0.25 and "memory_bytes" not in gpu


def test_host_cap_defaults_to_half_the_ram_and_at_least_4_gib():
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memcap.host_bytes(0) == max(4 << 30, ram // 2)
    assert memcap.host_bytes(123 << 20) == 123 << 20


class _FakeCuda:
    def __init__(self, total: int, reserved: int = 0) -> None:
        self.total, self.reserved = total, reserved
        self.applied: list[tuple[float, int]] = []

    def get_device_properties(self, i: int) -> SimpleNamespace:
        return SimpleNamespace(total_memory=self.total)

    def memory_reserved(self, i: int) -> int:
        return self.reserved

    def set_per_process_memory_fraction(self, fraction: float, i: int) -> None:
        self.applied.append((fraction, i))


def test_gpu_cap_is_applied_on_the_device_with_the_fraction():
    cuda = _FakeCuda(80 << 30)
    rec = memcap.apply_gpu_cap(cuda, 3, 0.5)
    assert cuda.applied == [(0.5, 3)]
    assert rec == {"fraction": 0.5, "cap_bytes": 40 << 30, "total_bytes": 80 << 30}


def test_gpu_cap_leaves_room_for_what_is_reserved_and_none_applies_nothing():
    cuda = _FakeCuda(80 << 30, reserved=76 << 30)
    memcap.apply_gpu_cap(cuda, 0, 0.9)
    assert cuda.applied[0][0] == pytest.approx(0.05)
    none = _FakeCuda(80 << 30)
    assert memcap.apply_gpu_cap(none, 0, None) == {"fraction": None}
    assert none.applied == []
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        memcap.fraction_for(1.5, 80 << 30)


def test_over_cap_counts_memory_outside_the_allocator():
    assert memcap.over_cap(40 << 30, 80 << 30, 0.5) is None
    assert memcap.over_cap((40 << 30) + memcap.CONTEXT_SLACK, 80 << 30, 0.5) is None
    bad = memcap.over_cap(60 << 30, 80 << 30, 0.5)
    assert bad and "60.0 GiB" in bad and "40.0 GiB" in bad
    assert memcap.over_cap(79 << 30, 80 << 30, None) is None


class _FakeNvml:
    def __init__(self, procs: list[tuple[int, int | None]], fail: bool = False) -> None:
        self.procs, self.fail = procs, fail
        self.index: int | None = None
        self.shut = False

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        self.index = i
        return "h"

    def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.procs]


def test_process_device_bytes_reads_that_process_only():
    nvml = _FakeNvml([(10, 5 << 30), (11, 7 << 30), (10, 1 << 30)])
    assert memcap.process_device_bytes(2, pid=10, nvml=nvml) == 6 << 30
    assert nvml.index == 2 and nvml.shut
    assert memcap.process_device_bytes(0, pid=12, nvml=_FakeNvml([(10, 1)])) is None
    assert memcap.process_device_bytes(0, pid=10, nvml=_FakeNvml([], fail=True)) is None


def test_the_parent_refuses_a_child_past_its_cap(monkeypatch):
    """The parent's check after a phase, with NVML and the device faked: past the cap the
    verdict is out of memory; within it, nothing is decided."""
    import torch

    from sandbox import verifier
    from sandbox.judge import _Outcome

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda i: 5, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(total_memory=80 << 30))
    seen = {}

    def used(idx: int, pid: int) -> int:
        seen["at"] = (idx, pid)
        return seen["bytes"]

    monkeypatch.setattr(verifier.memcap, "process_device_bytes", used)
    child = SimpleNamespace(pid=4242)
    seen["bytes"] = 30 << 30
    res = _Outcome()
    assert not verifier._memory_over(child, "cuda", Limits(gpu_memory_fraction=0.5), res, "check")
    assert res.status is None and res.memcap["checks"]["check"] == 30 << 30
    assert seen["at"] == (5, 4242)  # NVML's index of the device, the child's own pid
    seen["bytes"] = 70 << 30
    assert verifier._memory_over(child, "cuda", Limits(gpu_memory_fraction=0.5), res, "timing")
    assert res.status is Status.RUNTIME_ERROR and "out of memory during timing" in res.reason
    res = _Outcome()  # no cap asked for, or a CPU device: no check at all
    assert not verifier._memory_over(child, "cuda", Limits(gpu_memory_fraction=None), res, "x")
    assert not verifier._memory_over(child, "cpu", Limits(), res, "x")
    assert res.memcap == {}


@pytest.mark.parametrize(("gpu", "fraction", "nvml", "status"), [
    (True, 0.9, True, "enforced"),
    (True, 0.9, False, "partly enforced"),
    (True, None, True, "not enforced"),
    (False, 0.9, True, "unavailable"),
])
def test_doctor_reports_the_gpu_cap_enforced_only_when_it_is(gpu, fraction, nvml, status):
    got, detail = memcap.describe(gpu, fraction, nvml)
    assert got == status, detail
    if status != "enforced":
        assert "NVML" in detail or "None" in detail or "no GPU" in detail


def test_doctor_json_has_the_gpu_cap_row():
    import torch
    from typer.testing import CliRunner

    from kbench import cli

    r = CliRunner().invoke(cli.app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["layer"]: row for row in json.loads(r.output)["isolation"]}
    want = memcap.describe(torch.cuda.is_available(), Limits().gpu_memory_fraction,
                           memcap.nvml_available())
    assert (rows["GPU-memory cap"]["status"], rows["GPU-memory cap"]["detail"]) == want


def test_an_oom_whose_allocator_report_failed_on_nvml_is_out_of_memory():
    """Seen on an H100 (torch 2.11): out of memory, PyTorch's allocator asks NVML for its
    report, NVML cannot start in the candidate's process, and an internal assert replaces
    the OutOfMemoryError. Only that assert counts; other internal asserts stay runtime errors."""
    from sandbox._child import _allocator_lost_its_report

    seen = RuntimeError('NVML_SUCCESS == DriverAPI::get()->nvmlInit_v2_() INTERNAL ASSERT '
                        'FAILED at "/pytorch/c10/cuda/CUDACachingAllocator.cpp":1135, please '
                        'report a bug to PyTorch.')
    assert _allocator_lost_its_report(seen)
    assert not _allocator_lost_its_report(RuntimeError(
        'INTERNAL ASSERT FAILED at "/pytorch/aten/src/ATen/native/cuda/Reduce.cuh":1200'))
    assert not _allocator_lost_its_report(RuntimeError("CUDA error: an illegal memory access"))
