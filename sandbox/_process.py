"""Spawning and talking to one verification child: reduced environment, own process group,
signed messages on a dedicated pipe, deadlines, and a kill of the whole group on timeout."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Child", "ChildChannel", "ChildError", "Exit", "child_env", "decode_message",
           "job_dir", "kill_all", "network_isolation", "on_kill_all", "signal_name"]

# Variables a child may inherit. Everything else — API keys, tokens, cloud credentials,
# proxies — is dropped. Values are copied only if present.
_ALLOWED_ENV = (
    "PATH", "LANG", "LC_ALL", "TERM", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH",
    "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CC", "CXX",
    "TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
    "NVSHMEM_DISABLE_NVLS", "OMP_NUM_THREADS", "TRITON_PTXAS_PATH", "PYTHONHASHSEED",
)


_LIVE: weakref.WeakSet[ChildChannel] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_ON_KILL_ALL: list[Callable[[], None]] = []


def kill_all() -> None:
    """Kill every running child (an interrupted run must leave no candidate running), then
    run the clean-ups registered with :func:`on_kill_all` (a backend's warm servers)."""
    with _LIVE_LOCK:
        children = list(_LIVE)
    for c in children:
        c.kill()
    for fn in list(_ON_KILL_ALL):
        fn()


def on_kill_all(fn: Callable[[], None]) -> None:
    """Have :func:`kill_all` call ``fn`` after the children are killed (once per ``fn``)."""
    if fn not in _ON_KILL_ALL:
        _ON_KILL_ALL.append(fn)


class ChildError(Exception):
    """The child broke the protocol (forged or malformed message, unexpected exit)."""


def decode_message(key: bytes, line: bytes) -> dict[str, Any]:
    """Verify one signed line from the child; anything unsigned or forged is an error."""
    try:
        env = json.loads(line)
        body, mac = env["body"], env["mac"]
        want = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ChildError("malformed message on the result channel") from e
    if not isinstance(mac, str) or not hmac.compare_digest(want, mac):
        raise ChildError("forged message on the result channel (bad signature)")
    return json.loads(body)


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[list[str], str]:
    """The command prefix that gives a child no network, and a description of it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "not available (no `unshare` on PATH)"
    for args, label in (([unshare, "--net"], "network namespace"),
                        ([unshare, "--map-root-user", "--net"], "user+network namespace")):
        try:
            r = subprocess.run([*args, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return args, label
    return [], "not available (namespaces refused by this OS/container)"


def job_dir() -> Path:
    """A fresh private directory for one child; on /dev/shm when it has room."""
    base = None
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > (8 << 30):
            base = str(shm)
    return Path(tempfile.mkdtemp(prefix="kbench-job-", dir=base))


def child_env(work: Path, device: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ALLOWED_ENV if k in os.environ}
    env.update(
        HOME=str(work), TMPDIR=str(work), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
        TRITON_CACHE_DIR=str(work / "triton_cache"),
        TORCH_EXTENSIONS_DIR=str(work / "torch_extensions"),
        TORCHINDUCTOR_CACHE_DIR=os.environ.get("KBENCH_INDUCTOR_CACHE", str(work / "inductor")),
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p and Path(p).is_dir()),
    )
    if not device.startswith("cuda"):
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@dataclass
class Exit:
    code: int | None
    signal_name: str | None
    timed_out: bool
    log_tail: str


def signal_name(code: int | None) -> str | None:
    """The signal's name for a negative exit code (``subprocess``'s convention), else None."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class ChildChannel:
    """What every running child shares, however it was started: an HMAC key sent first on
    its stdin, signed messages back on a dedicated pipe read against deadlines, a log file in
    the job directory, and membership in the set :func:`kill_all` kills. A subclass starts
    the process, passes ``stdin`` and the pipe's read end to :meth:`_open`, and supplies
    :meth:`kill` and :meth:`finish`."""

    work: Path
    key: bytes
    log: Any
    stdin: Any
    rfd: int
    buf: bytes
    sel: selectors.BaseSelector
    timed_out: bool

    def _open(self, stdin: Any, rfd: int) -> None:
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.stdin = stdin
        self.rfd = rfd
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(rfd, selectors.EVENT_READ)
        self.timed_out = False
        self.stdin.write(self.key.hex().encode() + b"\n")
        self.stdin.flush()

    def __enter__(self) -> ChildChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str) -> None:
        try:
            self.stdin.write(line.encode() + b"\n")
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def recv(self, deadline: float) -> dict[str, Any] | None:
        """Next verified message, or None when the child closed the channel or time is up."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return None
            if not self.sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return decode_message(self.key, line)

    def kill(self) -> None:
        raise NotImplementedError

    def finish(self, grace_s: float = 5.0) -> Exit:
        raise NotImplementedError

    def log_tail(self, limit: int = 3000) -> str:
        self.log.flush()
        try:
            data = (self.work / "child.log").read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace")

    def close(self) -> None:
        self.kill()
        self.sel.close()
        try:
            os.close(self.rfd)
        except OSError:
            pass
        self.log.close()


class Child(ChildChannel):
    """One running child. Use as a context manager; the group is always killed on exit."""

    def __init__(self, work: Path, device: str, isolate_network: bool = True,
                 prefix: Sequence[str] = ()) -> None:
        """``prefix``: a tool that wraps the whole command (``ncu ...``, sandbox.profile)."""
        self.work = work
        self.key = secrets.token_bytes(32)
        rfd, wfd = os.pipe()
        net = network_isolation()[0] if isolate_network else []
        self.log = open(work / "child.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [*prefix, *net, sys.executable, "-m", "sandbox._child", str(work), str(wfd)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
            cwd=work, env=child_env(work, device), pass_fds=(wfd,), start_new_session=True,
        )
        os.close(wfd)
        assert self.proc.stdin is not None
        self._open(self.proc.stdin, rfd)

    def __enter__(self) -> Child:
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def finish(self, grace_s: float = 5.0) -> Exit:
        """Wait briefly for a clean exit, then kill the group; describe how it ended."""
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        code = self.proc.returncode
        return Exit(code, signal_name(code), self.timed_out, self.log_tail())
