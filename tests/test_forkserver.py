"""The fork-server backend hands each job a child as clean as a fresh interpreter: no secret
from the parent, no tensor or CUDA state from the server, its own session, its work directory,
its own pid; exits, signals and timeouts are reported and killed as with ``subprocess``; a dead
server is replaced; one job's pollution never reaches the next. CPU only (Triton interpreter).

Each probe is a candidate whose import writes what it sees to a JSON file (static policy off,
so it may read ``os`` and ``/proc``), then runs an honest ReLU."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest

from kbench.problems import load, load_file
from sandbox import Limits, Status, verify
from sandbox.backends import (
    ForkServerBackend,
    SubprocessBackend,
    available_backends,
    default_backend,
)
from sandbox.backends._forkserver import shutdown_servers
from sandbox.errors import ConfigError
from tests.fakes.relu import RELU

pytestmark = pytest.mark.skipif("forkserver" not in available_backends(),
                                reason="the fork server needs Linux and os.fork")

HERE = Path(__file__).parent / "candidates"
_FAST = Limits(import_s=120, check_s=60, trials=1, derived_trials=1, max_derived=1)

# Runs first thing at the candidate's import; __REPORT_PATH__ is replaced by a path under tmp_path.
_PROBE = '''
import gc as _gc, json as _json, os as _os, sys as _sys
import torch as _torch
import builtins as _builtins
import sandbox._child as _harness

def _environ(pid):
    try:
        return open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return b""

_fds = {}
for _f in _os.listdir("/proc/self/fd"):
    try:
        _fds[_f] = _os.readlink(f"/proc/self/fd/{_f}")
    except OSError:
        pass
_REPORT = {
    "file": __file__, "cwd": _os.getcwd(), "pid": _os.getpid(), "ppid": _os.getppid(),
    "pgid": _os.getpgid(0), "sid": _os.getsid(0),
    "secret_env": sorted(k for k, v in _os.environ.items() if "sk-ant-secret" in v),
    "secret_proc": [p for p in ("self", str(_os.getppid()))
                    if b"sk-ant-secret" in _environ(p)],
    "tensors": sum(1 for o in _gc.get_objects() if isinstance(o, _torch.Tensor)),
    "cuda_initialized": _torch.cuda.is_initialized(),
    "fds": _fds,
    "polluted": sorted(n for n, seen in (
        ("sys.modules", "kbench_polluted" in _sys.modules),
        ("builtins", hasattr(_builtins, "KBENCH_POLLUTED")),
        ("torch", hasattr(_torch, "KBENCH_POLLUTED")),
        ("harness", hasattr(_harness, "KBENCH_POLLUTED")),
        ("environ", "KBENCH_POLLUTED" in _os.environ),
    ) if seen),
}
open(__REPORT_PATH__, "w").write(_json.dumps(_REPORT))
'''

_POLLUTE = '''
import os as _os, sys as _sys, builtins as _builtins
import torch as _torch
import sandbox._child as _harness
_sys.modules["kbench_polluted"] = _sys
_builtins.KBENCH_POLLUTED = _torch.KBENCH_POLLUTED = _harness.KBENCH_POLLUTED = 1
_os.environ["KBENCH_POLLUTED"] = "1"
'''

# Starts a sleeping grandchild in the candidate's process group and records its pid.
_SPAWN = '''
import subprocess as _sp
_p = _sp.Popen(["sleep", "300"])
open(PIDFILE, "w").write(str(_p.pid))
'''


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


def _run(spec, source: str, backend=None, limits: Limits = _FAST):
    return verify(spec, textwrap.dedent(source), device="cpu", limits=limits,
                  isolation=backend or ForkServerBackend(), static_policy=False)


def _probe(spec, tmp_path: Path, name: str = "report", prelude: str = "",
           backend=None) -> tuple[Status, str, dict]:
    report = tmp_path / f"{name}.json"
    src = prelude + _PROBE.replace("__REPORT_PATH__", repr(str(report))) + RELU
    v = _run(spec, src, backend)
    assert report.exists(), v.reason
    return v.status, v.reason, json.loads(report.read_text())


def _gone(pid: int, wait_s: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def test_no_secret_set_before_the_server_started(relu, tmp_path, monkeypatch):
    shutdown_servers()  # the next job starts a server from an environment holding the secret
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-before")
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["secret_env"] == [] and rep["secret_proc"] == []


def test_no_secret_set_after_the_server_started(relu, tmp_path, monkeypatch):
    ForkServerBackend.server_pid()  # warm before the secret appears
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-after")
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["secret_env"] == [] and rep["secret_proc"] == []


def test_child_is_forked_by_the_server_in_its_own_session_and_work_dir(relu, tmp_path):
    server = ForkServerBackend.server_pid()
    _, reason, a = _probe(relu, tmp_path, "a")
    _, _, b = _probe(relu, tmp_path, "b")
    assert a["ppid"] == server == b["ppid"], reason  # forked, not a fresh interpreter
    assert a["pid"] != b["pid"] and server != os.getpid()
    for rep in (a, b):
        assert rep["pgid"] == rep["pid"] == rep["sid"]  # session and group leader
        assert rep["cwd"] == os.path.dirname(rep["file"])  # its job's work directory
        assert rep["cwd"] != os.getcwd() and "forkserver" not in rep["cwd"]


def test_child_holds_no_server_state(relu, tmp_path):
    """No tensor made before the candidate beyond what a fresh interpreter has, CUDA not
    initialised, and none of the server's sockets or files open."""
    _, reason, fork = _probe(relu, tmp_path, "fork")
    _, _, fresh = _probe(relu, tmp_path, "fresh", backend=SubprocessBackend())
    assert fork["tensors"] == fresh["tensors"], reason
    assert fork["cuda_initialized"] is False
    assert not [t for t in fork["fds"].values() if t.startswith("socket:")], fork["fds"]
    assert len(fork["fds"]) <= len(fresh["fds"]), (fork["fds"], fresh["fds"])


def test_a_polluting_job_leaves_nothing_for_the_next(relu, tmp_path):
    _, reason, first = _probe(relu, tmp_path, "first", prelude=_POLLUTE)
    assert first["polluted"] == ["builtins", "environ", "harness", "sys.modules", "torch"], \
        reason  # the probe does see pollution in its own process
    _, _, second = _probe(relu, tmp_path, "second")
    assert second["polluted"] == []


@pytest.mark.parametrize(("line", "want"), [
    ("import os; os._exit(3)", "exit code 3"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
])
def test_exit_code_and_signal_are_reported(relu, line, want):
    v = _run(relu, line + "\n" + RELU)
    assert v.status is Status.RUNTIME_ERROR, v.reason
    assert want in v.reason, v.reason


def test_timeout_kills_the_whole_group(relu, tmp_path):
    pidfile = tmp_path / "grandchild"
    src = (_SPAWN.replace("PIDFILE", repr(str(pidfile))) + RELU).replace(
        "        x = x.contiguous()\n", "        while True:\n            pass\n")
    v = _run(relu, src, limits=Limits(import_s=120, check_s=3, trials=1, derived_trials=1,
                                      max_derived=1))
    assert v.status is Status.TIMEOUT, v.reason
    assert _gone(int(pidfile.read_text())), "the candidate's grandchild survived the timeout"


def test_leftover_group_is_killed_after_a_clean_exit(relu, tmp_path):
    pidfile = tmp_path / "grandchild"
    v = _run(relu, _SPAWN.replace("PIDFILE", repr(str(pidfile))) + RELU)
    assert v.status is Status.CORRECT, v.reason
    assert _gone(int(pidfile.read_text())), "a process the candidate left behind survived"


def test_a_killed_server_is_replaced(relu, tmp_path):
    old = ForkServerBackend.server_pid()
    os.kill(old, signal.SIGKILL)  # no wait: the next job may still find it "alive"
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["ppid"] != old and rep["ppid"] == ForkServerBackend.server_pid()
    assert _gone(old)


def test_a_crashed_server_is_replaced(relu, tmp_path):
    old = ForkServerBackend.server_pid()
    os.kill(old, signal.SIGSEGV)
    assert _gone(old)
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["ppid"] != old


def test_prepare_starts_the_server_without_waiting_and_the_first_job_uses_it(relu, tmp_path):
    from sandbox.backends import _forkserver as fs

    shutdown_servers()
    ForkServerBackend().prepare("cpu")
    ForkServerBackend().prepare("cpu")  # idempotent: still one server
    servers = list(fs._SERVERS.values())
    assert len(servers) == 1 and not servers[0]._ready, "prepare returned before the imports"
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["ppid"] == servers[0].proc.pid == ForkServerBackend.server_pid()


def test_a_prepared_server_that_dies_before_it_is_ready_is_replaced(relu, tmp_path):
    from sandbox.backends import _forkserver as fs

    shutdown_servers()
    ForkServerBackend().prepare("cpu")
    (server,) = fs._SERVERS.values()
    server.proc.kill()
    status, reason, rep = _probe(relu, tmp_path)
    assert status is Status.CORRECT, reason
    assert rep["ppid"] != server.proc.pid
    assert _gone(server.proc.pid)


def test_default_backend_is_forkserver_and_env_var_chooses(monkeypatch):
    monkeypatch.delenv("KBENCH_SANDBOX_BACKEND", raising=False)
    assert isinstance(default_backend(), ForkServerBackend)
    monkeypatch.setenv("KBENCH_SANDBOX_BACKEND", "subprocess")
    assert isinstance(default_backend(), SubprocessBackend)
    monkeypatch.setenv("KBENCH_SANDBOX_BACKEND", "no-such-backend")
    with pytest.raises(ConfigError, match="no-such-backend"):
        default_backend()


def _case(path: Path):
    text = path.read_text()
    problem = re.search(r"^Problem: (\S+)", text, re.M).group(1)
    spec = (load_file(HERE.parent.parent / problem) if problem.endswith(".py")
            else load(problem)[0])
    return spec, text


@pytest.mark.parametrize("path", [
    HERE / "honest_styles" / "relu_kernel_interface_launcher.py",
    HERE / "honest_styles" / "leaky_relu_float_arg.py",
    HERE / "attacks" / "rt_return_input.py",
    HERE / "attacks" / "ref_torch_relu.py",
], ids=lambda p: p.stem)
def test_same_verdict_as_subprocess(path):
    spec, source = _case(path)
    lim = Limits(trials=2, derived_trials=2)
    fork = verify(spec, source, device="cpu", limits=lim, isolation=ForkServerBackend())
    fresh = verify(spec, source, device="cpu", limits=lim, isolation=SubprocessBackend())
    assert fork.status is fresh.status, (fork.reason, fresh.reason)
    assert fork.status is not Status.RUNTIME_ERROR, fork.reason
    assert fork.reason == fresh.reason


def test_what_a_child_does_before_the_candidate_imports_nothing_new() -> None:
    """The server pays for every import a child makes before the candidate's code: applying
    the precision settings once imported torch._dynamo and torch._inductor in every child
    (0.8 s here, 5 s of each warm verification on an H100)."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys
        from sandbox._forkserver import _preimport
        _preimport()
        before = set(sys.modules)
        from sandbox import precision
        precision.apply({"float32_matmul_precision": "high", "deterministic_algorithms": True})
        precision.read()
        print(sorted(set(sys.modules) - before))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert out == "[]", f"imported in every child: {out}"


@pytest.mark.parametrize("bad", [False, True])
def test_a_server_whose_forks_cannot_use_cuda_says_so(monkeypatch, bad: bool) -> None:
    """torch marks fork unsafe for CUDA once anything asked the CUDA runtime for devices (no
    CUDA context needed): every child would then fail at its first CUDA call. The server
    probes one fork at start and refuses to serve, rather than fail every candidate."""
    import torch

    from sandbox._forkserver import _fork_poisoned

    monkeypatch.setattr(torch._C, "_cuda_isInBadFork", lambda: bad, raising=False)
    assert _fork_poisoned() is bad


def test_the_server_hashes_triton_once_for_every_child() -> None:
    """Triton hashes its own sources and libraries at a kernel's first compile or cache
    lookup (0.35 s of a warm child's first call on an H100): the server does it once."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        from sandbox._forkserver import _preimport
        _preimport()
        from triton.runtime.cache import triton_key
        print(triton_key.cache_info().hits + triton_key.cache_info().currsize)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert int(out) >= 1


def test_a_child_can_run_torchs_parallel_cpu_ops(relu, tmp_path):
    """A child forked from the server runs torch's parallel CPU ops: the server must not have
    started torch's OpenMP threads before forking (GNU OpenMP then hangs the child at its
    first parallel region; warming the CPU math in the server once did exactly that)."""
    prelude = "import torch as _t\n_t.randn(1 << 21).exp_().sum()\n"
    v = _run(relu, prelude + RELU, limits=Limits(import_s=60, check_s=60, trials=1,
                                                 derived_trials=1, max_derived=1))
    assert v.status is Status.CORRECT, v.reason
