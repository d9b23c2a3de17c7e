"""A warm fork server per device kind: each job's child is forked from a process that has
already imported torch and Triton (``sandbox._forkserver``), instead of paying the imports
again in a fresh ``python -m sandbox._child``.

The server is spawned, never forked from this process, with the same allowlisted
environment as a child and, where namespaces allow, no network; so what a child inherits is
the server's, never the orchestrator's. One server per (device kind, CUDA_VISIBLE_DEVICES,
network isolation), started on first use, restarted when it died.

By default the server is *kept*: it outlives the command that started it, for
``KBENCH_KEEP_SERVER`` seconds without a job (600 by default), and the next ``kbench``
command of the same user with the same sandbox finds torch and Triton already imported (2.6
to 4 s of a ``kbench eval`` on an H100 host). A kept server lives in a private directory of
its user (``$KBENCH_SERVER_DIR``, else ``$XDG_RUNTIME_DIR/kbench``, else
``/tmp/kbench-UID``; mode 0700, checked) under a name that hashes everything its children
would differ by: the sandbox's own sources, the interpreter, torch's, Triton's and numpy's
versions and places, the device kind, the network isolation and the whole environment it is
given; so a changed sandbox never forks from an old server. It serves only processes of its
user that are not its own descendants, and no process can attach to it (see
:mod:`sandbox._forkserver`). ``KBENCH_KEEP_SERVER=0`` gives each command its own server,
stopped at its exit and by :func:`sandbox._process.kill_all`;
:func:`stop_kept_servers` (``kbench doctor --stop-servers``) stops the kept ones.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox._forkserver import RESULT_FD, pack_request, peer_creds, take_lock
from sandbox._process import (
    ChildChannel,
    Exit,
    LogDrain,
    child_env,
    job_dir,
    network_isolation,
    on_kill_all,
    signal_name,
)
from sandbox.backends._base import Backend, register_backend
from sandbox.errors import ConfigError

__all__ = ["ForkChild", "ForkServerBackend", "keep_seconds", "kept_base", "shutdown_servers",
           "stop_kept_servers"]

log = logging.getLogger("kbench.sandbox")

_START_S = 300.0  # importing torch and Triton on a cold disk can take minutes
_KEEP_S = 600.0  # how long a kept server waits for the next command, by default
_AVAILABLE = (sys.platform.startswith("linux") and hasattr(os, "fork")
              and hasattr(socket, "send_fds") and hasattr(socket, "SO_PEERCRED"))


class ServerGone(Exception):
    """The fork server is dead or refused to fork; a fresh one is needed."""


class _Lines:
    """JSON lines from one job's connection, read against a timeout (a timed-out
    ``socket.makefile`` cannot be read again)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message; None at end of stream; TimeoutError when none came in time."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.conn.settimeout(left)
            try:
                chunk = self.conn.recv(1 << 16)
            except TimeoutError:
                raise TimeoutError from None
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def keep_seconds() -> float | None:
    """``KBENCH_KEEP_SERVER``: seconds a kept server waits idle for the next command
    (default 600); None for ``0``, each command with its own server."""
    raw = os.environ.get("KBENCH_KEEP_SERVER", "").strip()
    try:
        value = float(raw) if raw else _KEEP_S
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(f"KBENCH_KEEP_SERVER={raw!r}: expected the seconds a fork server "
                          "waits for the next command, or 0 to stop it with each command")
    return value or None


def kept_base() -> Path | None:
    """The private directory of this user's kept servers, made if missing; None (and why,
    in the log) when it exists but another user could write to it."""
    env = os.environ.get("KBENCH_SERVER_DIR")
    run = os.environ.get("XDG_RUNTIME_DIR")
    if env:
        base = Path(env)
    elif run and os.path.isdir(run):
        base = Path(run) / "kbench"
    else:
        base = Path(tempfile.gettempdir()) / f"kbench-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(base)
    except OSError as e:
        log.warning("fork server not kept: cannot make %s (%s)", base, e)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("fork server not kept: %s is not a private directory of this user "
                    "(mode 0700, owned by uid %d)", base, os.getuid())
        return None
    return base


@functools.cache
def _sources_digest() -> str:
    """The sandbox package's sources: what a kept server has imported for its children."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _installed(name: str) -> list[str | None]:
    try:
        version: str | None = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    spec = importlib.util.find_spec(name)
    return [version, spec.origin if spec else None]


def _kept_key(kind: str, prefix: list[str], env: dict[str, str]) -> str:
    meta = [sys.executable, sys.version, kind, prefix, sorted(env.items()), _sources_digest(),
            *(_installed(n) for n in ("torch", "triton", "numpy"))]
    return hashlib.sha256(json.dumps(meta).encode()).hexdigest()[:24]


def _server_env(work: Path, kind: str, kept: bool) -> dict[str, str]:
    """A child's environment for the server itself. A kept server's import path leaves out
    the working directory of the command that started it (``python -m`` puts it first), so
    commands run from anywhere share it and none forks from modules found in another's
    directory; this checkout's root stays, where the sandbox comes from. Each job's child
    gets its own command's path with its request."""
    env = child_env(work, "cuda" if kind == "cuda" else "cpu")
    if kept:
        cwd = os.getcwd()
        root = str(Path(__file__).resolve().parents[2])
        path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != cwd]
        env["PYTHONPATH"] = os.pathsep.join(path if root in path else [*path, root])
    return env


def _ping(sock: str, timeout: float = 10.0) -> int | None:
    """The pid of the kept server listening at ``sock`` if one of this user answers."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(sock)
        if peer_creds(conn)[1] != os.getuid():
            return None
        conn.sendall(pack_request({"ping": True}))
        reply = _Lines(conn).next(timeout) or {}
        return int(reply["pong"]) if "pong" in reply else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        conn.close()


def _lock_free(path: str) -> bool:
    """Whether no kept server holds (or is starting with) the lock at ``path``: taken and
    let go at once, as the server takes it (:func:`sandbox._forkserver.take_lock`)."""
    try:
        fd = take_lock(path)
    except OSError:
        return False
    if fd is None:
        return False
    os.close(fd)
    return True


class _Server:
    """One fork server: ``python -m sandbox._forkserver`` spawned here (:attr:`proc`), or a
    kept one that an earlier command started (``proc`` None once attached)."""

    def __init__(self, kind: str, isolate_network: bool) -> None:
        """Find the kept server or spawn one; :meth:`wait_ready` waits for its imports."""
        self.prefix = network_isolation()[0] if isolate_network else []
        self.kind = kind
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = None
        self._ready_lock = threading.Lock()
        self._ready = False
        self._failed: str | None = None
        keep = keep_seconds()
        base = kept_base() if keep is not None else None
        self.keep_s = keep if base is not None else None
        if base is None:
            self.dir = Path(tempfile.mkdtemp(prefix="kbench-forkserver-"))  # mode 0700
            os.chmod(self.dir, 0o700)
        else:
            key = _kept_key(kind, self.prefix, _server_env(Path("/kbench-kept"), kind, True))
            self.dir = base / f"fs-{key}"
            self.dir.mkdir(mode=0o700, exist_ok=True)
        self.sock = str(self.dir / "sock")
        if len(self.sock.encode()) > 107:  # AF_UNIX's limit
            raise ConfigError(f"the fork server's socket path is too long ({self.sock}): "
                              "set KBENCH_SERVER_DIR to a short private directory")
        self.env = _server_env(self.dir, kind, self.kept)
        self.pid = _ping(self.sock) if self.keep_s is not None else None
        if self.pid is not None:
            self._ready = True
        else:
            self._spawn()

    @property
    def kept(self) -> bool:
        return self.keep_s is not None

    def _spawn(self) -> None:
        if self.log is None:
            self.log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        keep = [] if self.keep_s is None else ["--keep", repr(self.keep_s),
                                               str(self.dir / "lock")]
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "sandbox._forkserver", self.sock,
             str(os.getpid()), *keep],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, cwd=self.dir,
            env=self.env, start_new_session=True,
        )
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        """Return once the server said ``ready`` (at once after the first time); ServerGone,
        and the server stopped, when it did not start."""
        with self._ready_lock:
            if self._ready:
                return
            if self._failed is not None:
                raise ServerGone(self._failed)
            try:
                self._wait_ready(time.monotonic() + _START_S)
            except ServerGone as e:
                self._failed = str(e)
                self.stop()
                raise
            self._ready = True

    def _line(self, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if sel.select(timeout=max(deadline - time.monotonic(), 0.0)):
                return self.proc.stdout.readline().strip()
        return b""

    def _wait_ready(self, deadline: float) -> None:
        while True:
            line = self._line(deadline)
            if line == b"ready":
                assert self.proc is not None and self.proc.stdout is not None
                self.proc.stdout.close()
                return
            if line != b"busy":
                raise ServerGone(f"the fork server did not start: {self.log_tail()}")
            # Another kept server holds the lock: serving (answers a ping), starting (will
            # answer), or leaving (the lock comes free: start ours after all).
            assert self.proc is not None
            self.proc.wait()
            self.proc = None
            while True:
                pid = _ping(self.sock)
                if pid is not None:
                    self.pid = pid
                    return
                if _lock_free(str(self.dir / "lock")):
                    break
                if time.monotonic() > deadline:
                    raise ServerGone("another fork server held the lock but never answered")
                time.sleep(0.05)
            self._spawn()

    def log_tail(self, limit: int = 2000) -> str:
        if self.log is not None:
            self.log.flush()
        try:
            return (self.dir / "server.log").read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            os.kill(self.pid or 0, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return bool(self.pid)

    def fork(self, work: Path, env: dict[str, str], argv: list[str],
             fds: list[int]) -> tuple[_Lines, int]:
        """Ask for one child; its connection (which will carry the exit status) and pid."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lines = _Lines(conn)
        try:
            conn.settimeout(60)
            conn.connect(self.sock)
            data = pack_request({"work": str(work), "env": env, "argv": argv})
            socket.send_fds(conn, [data[:1 << 16]], fds)
            if len(data) > 1 << 16:
                conn.sendall(data[1 << 16:])
            reply = lines.next(60) or {}
        except (OSError, ValueError) as e:  # TimeoutError is an OSError
            conn.close()
            raise ServerGone(f"the fork server did not answer: {e!r}") from e
        if "pid" not in reply:
            conn.close()
            raise ServerGone(reply.get("error") or "the fork server closed the connection")
        return lines, int(reply["pid"])

    def stop(self) -> None:
        """Stop a server of this command's own (its running children die with it); leave a
        kept one, unless it failed to start, for the next command."""
        if self.proc is not None:
            if self.proc.poll() is None and not (self.kept and self._failed is None):
                self.proc.terminate()  # the server kills its children's groups and exits
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self.log is not None:
            self.log.close()
        if not self.kept:
            shutil.rmtree(self.dir, ignore_errors=True)


_LOCK = threading.Lock()
_SERVERS: dict[tuple[str, str, bool], _Server] = {}
_ALL: list[_Server] = []  # every server started, retired ones too, for shutdown
_OWNER = os.getpid()  # a forked copy of this process must not use its parent's servers


def _server(device: str, isolate_network: bool, stale: _Server | None = None,
            wait: bool = True) -> _Server:
    """The server for ``device`` jobs, started if none is running; with ``wait`` (the
    default) once it is ready to fork."""
    global _OWNER
    kind = "cuda" if device.startswith("cuda") else "cpu"
    key = (kind, os.environ.get("CUDA_VISIBLE_DEVICES", "") if kind == "cuda" else "",
           isolate_network)
    with _LOCK:
        if _OWNER != os.getpid():
            _SERVERS.clear()
            _ALL.clear()
            _OWNER = os.getpid()
        s = _SERVERS.get(key)
        if s is not None and (s is stale or not s.alive()):
            del _SERVERS[key]  # a retired server exits by itself once its jobs end
            s = None
        if s is None:
            s = _Server(kind, isolate_network)
            _SERVERS[key] = s
            _ALL.append(s)
    if wait:
        try:
            s.wait_ready()
        except ServerGone:
            with _LOCK:
                if _SERVERS.get(key) is s:
                    del _SERVERS[key]
            raise
    return s


def shutdown_servers() -> None:
    """Stop every fork server this process started (their running children die with them),
    but leave a kept one that started well for the next command."""
    with _LOCK:
        servers = list(_ALL) if _OWNER == os.getpid() else []
        _SERVERS.clear()
        _ALL.clear()
    for s in servers:
        s.stop()


def stop_kept_servers() -> list[int]:
    """Stop every kept server of this user (``kbench doctor --stop-servers``): each is asked
    to leave with SIGTERM, which kills any job it still runs. Returns their pids."""
    base = kept_base()
    if base is None:
        return []
    stopped = []
    for d in sorted(base.glob("fs-*")):
        pid = _ping(str(d / "sock"))
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except OSError:
            pass
    return stopped


if _AVAILABLE:
    atexit.register(shutdown_servers)
    on_kill_all(shutdown_servers)


class ForkChild(ChildChannel):
    """One child forked by the server; driven exactly as :class:`sandbox._process.Child`.
    Its exit status comes on its own connection to the server; until then ``kill`` kills
    its process group (after it, the group id may belong to someone else)."""

    def __init__(self, server: _Server, work: Path, device: str) -> None:
        self.work = work
        self.key = secrets.token_bytes(32)
        self.server = server
        self.code: int | None = None
        self.reaped = False  # the server reported the exit: the pid may be reused from now
        self.orphaned = False  # the server died first: nobody will report; killed once
        self._orphan_killed = False
        self._status_lock = threading.Lock()
        self.drain = LogDrain(work / "child.log")
        self.log = self.drain.file
        in_r, in_w = os.pipe()
        rfd, wfd = os.pipe()
        try:
            self.lines, self.pid = server.fork(
                work, child_env(work, device), [str(work), RESULT_FD],
                [in_r, self.drain.w, wfd])
        except BaseException:
            for fd in (in_w, rfd):
                os.close(fd)
            self.drain.close_writer()
            self.drain.close()
            raise
        finally:
            os.close(in_r)
            os.close(wfd)
        self.drain.close_writer()
        self._open(os.fdopen(in_w, "wb"), rfd)

    def __enter__(self) -> ForkChild:
        return self

    def _await_exit(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the server's report of the child's exit."""
        if not self._status_lock.acquire(timeout=max(timeout, 0.0)):
            return
        try:
            end = time.monotonic() + timeout
            while not (self.reaped or self.orphaned):
                try:
                    msg = self.lines.next(max(end - time.monotonic(), 0.0))
                except TimeoutError:
                    return
                except ValueError:
                    msg = None
                if msg is None:
                    self.orphaned = True
                elif "exit" in msg:
                    self.code = int(msg["exit"])
                    self.reaped = True
        finally:
            self._status_lock.release()

    def _exited(self) -> bool:
        self._await_exit(0.01)  # the server's report, if it came
        return self.reaped

    def kill(self) -> None:
        if not self.reaped and not self._orphan_killed:
            self._orphan_killed = self.orphaned
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._await_exit(10)

    def finish(self, grace_s: float = 5.0) -> Exit:
        """Wait briefly for a clean exit (:meth:`_grace`), then kill the group; describe how
        it ended."""
        self._await_exit(self._grace(grace_s))
        self.kill()
        return Exit(self.code, signal_name(self.code), self.timed_out, self.log_tail(),
                    flooded=self.flooded)

    def close(self) -> None:
        super().close()
        for f in (self.stdin, self.lines.conn):
            try:
                f.close()
            except OSError:
                pass


@register_backend(enabled=_AVAILABLE,
                  why="needs Linux, os.fork and socket.send_fds with SO_PEERCRED")
class ForkServerBackend(Backend):
    """Like ``subprocess`` (allowlisted environment, own session and process group, no
    network where namespaces allow, the group killed on timeout) but each child is forked
    from a warm server that has imported torch and Triton once."""

    name = "forkserver"

    def __init__(self, isolate_network: bool = True) -> None:
        self.isolate_network = isolate_network

    def workdir(self) -> Path:
        return job_dir()

    def env(self, work: Path, device: str) -> dict[str, str]:
        return child_env(work, device)

    def prepare(self, device: str) -> None:
        """Spawn the server for ``device`` jobs now and return at once: its imports of torch
        and Triton (seconds) overlap the caller's own start-up until the first job."""
        _server(device, self.isolate_network, wait=False)

    def start(self, work: Path, device: str) -> ForkChild:
        server = None
        try:
            server = _server(device, self.isolate_network)
            return ForkChild(server, work, device)
        except ServerGone:  # did not start, died since, or refused (CUDA initialised): retry
            return ForkChild(_server(device, self.isolate_network, stale=server), work, device)

    @staticmethod
    def server_pid(device: str = "cpu", isolate_network: bool = True) -> int:
        """The pid of the server that forks this kind of job (starting it if needed)."""
        return _server(device, isolate_network).pid or 0
