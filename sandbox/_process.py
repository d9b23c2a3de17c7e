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

__all__ = ["LOG_CAP", "Child", "ChildChannel", "ChildError", "Exit", "LogDrain", "child_env",
           "decode_message", "job_dir", "kill_all", "network_isolation", "on_kill_all",
           "signal_name", "sweep"]

# Bytes of stdout and stderr a child may write; past this it is flooding them, and is killed
# (the log stays in the job directory, which may be RAM on /dev/shm).
LOG_CAP = 64 << 20
_TAIL = 64 << 10  # the end of the output, kept in memory for the verdict's log tail

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


def sweep(work: Path) -> list[int]:
    """Kill every process still running with this job's environment (``HOME`` is the job's
    private directory): descendants that left the child's process group with ``setsid``
    and so escaped the group kill. Returns the pids killed. Only this user's processes
    can be read, and only a job's own descendants carry its directory."""
    marker = f"HOME={work}".encode() + b"\0"
    me = os.getpid()
    killed = []
    for _ in range(5):  # a killed process's children may have been forked meanwhile
        found = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return killed
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = b"\0" + f.read()
            except OSError:
                continue
            if b"\0" + marker in env:
                found.append(int(name))
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return killed


@dataclass
class Exit:
    code: int | None
    signal_name: str | None
    timed_out: bool
    log_tail: str
    flooded: bool = False  # killed for writing more than LOG_CAP bytes of output


class LogDrain:
    """A child's stdout and stderr as a pipe that a thread here drains: the first
    ``cap`` bytes go to ``path`` (``child.log``), the last 64 KiB stay in memory, and more
    than ``cap`` bytes in all sets :attr:`flooded`. Nothing the child prints can fill a disk
    (or /dev/shm's RAM): past the cap it is read and dropped until the child is killed.

    ``w`` is the write end the child gets; the starter closes it here once the child has it.
    """

    def __init__(self, path: Path, cap: int = LOG_CAP) -> None:
        self.r, self.w = os.pipe()
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.cap = cap
        self.total = 0
        self.tail = bytearray()
        self.flooded = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="kbench-log-drain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.r, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=0.2):
                    continue
                try:
                    chunk = os.read(self.r, 1 << 16)
                except OSError:
                    return
                if not chunk:
                    return  # every writer closed it: the child and all it started are gone
                with self._lock:
                    kept = max(0, min(len(chunk), self.cap - self.total))
                    if kept:
                        self.file.write(chunk[:kept])
                        self.file.flush()
                    self.total += len(chunk)
                    self.tail += chunk
                    del self.tail[:-_TAIL]
                if self.total > self.cap:
                    self.flooded.set()

    def close_writer(self) -> None:
        """The starter's copy of the write end, once the child holds its own."""
        try:
            os.close(self.w)
        except OSError:
            pass

    def settle(self, timeout: float = 1.0) -> None:
        """Wait (briefly) until the output written so far has been read."""
        self._thread.join(timeout)

    def text(self, limit: int) -> str:
        with self._lock:
            data = bytes(self.tail[-limit:])
            dropped = self.total - self.cap
        text = data.decode(errors="replace")
        if dropped > 0:
            text = (f"[{dropped} bytes of output past the {self.cap >> 20} MiB cap were "
                    "dropped]\n" + text)
        return text

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        try:
            os.close(self.r)
        except OSError:
            pass
        with self._lock:
            self.file.close()


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
    drain: LogDrain | None = None  # stdout/stderr through a capped pipe (LogDrain)
    flooded: bool = False

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
            if self.drain is not None and self.drain.flooded.is_set():
                self.flooded = True
                self.kill()
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return None
            if not self.sel.select(timeout=min(left, 0.25)):
                if self._exited():  # nothing left to read, but a descendant holds the pipe
                    return None
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return decode_message(self.key, line)

    def _exited(self) -> bool:
        """True once the child itself has exited (the channel may stay open: a descendant
        that left its process group can hold the pipe's write end until it is swept)."""
        return False

    def kill(self) -> None:
        raise NotImplementedError

    def finish(self, grace_s: float = 5.0) -> Exit:
        raise NotImplementedError

    def _grace(self, grace_s: float) -> float:
        """How long ``finish`` waits for a clean exit: ``grace_s``, or nothing for a child
        whose ``recv`` timed out (a hung child is killed at once)."""
        return 0.0 if self.timed_out else grace_s

    def log_tail(self, limit: int = 3000) -> str:
        if self.drain is not None:
            self.drain.settle(0.5)
            return self.drain.text(limit)
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
        if self.drain is not None:
            self.drain.close()
        else:
            self.log.close()


class Child(ChildChannel):
    """One running child. Use as a context manager; the group is always killed on exit."""

    def __init__(self, work: Path, device: str, isolate_network: bool = True,
                 prefix: Sequence[str] = ()) -> None:
        """``prefix``: a tool that wraps the child (``ncu ...``, sandbox.profile). With network
        isolation the tool runs inside the child's namespace, loopback up (it talks to its
        target over localhost TCP), still without a route out."""
        self.work = work
        self.key = secrets.token_bytes(32)
        rfd, wfd = os.pipe()
        net = network_isolation()[0] if isolate_network else []
        cmd = [sys.executable, "-m", "sandbox._child", str(work), str(wfd)]
        if prefix and net:  # the tool and its target in one namespace (sandbox._loopback)
            cmd = [*net, sys.executable, "-m", "sandbox._loopback", *prefix, *cmd]
        else:
            cmd = [*prefix, *net, *cmd]
        self.drain = LogDrain(work / "child.log")
        self.log = self.drain.file
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE, stdout=self.drain.w, stderr=subprocess.STDOUT,
                cwd=work, env=child_env(work, device), pass_fds=(wfd,), start_new_session=True,
            )
        except BaseException:
            os.close(rfd)
            self.drain.close_writer()
            self.drain.close()
            raise
        finally:
            os.close(wfd)
        self.drain.close_writer()
        assert self.proc.stdin is not None
        self._open(self.proc.stdin, rfd)

    def __enter__(self) -> Child:
        return self

    def _exited(self) -> bool:
        return self.proc.poll() is not None

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
        sweep(self.work)

    def finish(self, grace_s: float = 5.0) -> Exit:
        """Wait briefly for a clean exit (:meth:`_grace`), then kill the group; describe how
        it ended."""
        try:
            self.proc.wait(timeout=self._grace(grace_s))
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        code = self.proc.returncode
        return Exit(code, signal_name(code), self.timed_out, self.log_tail(),
                    flooded=self.flooded)
