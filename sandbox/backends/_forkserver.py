"""A warm fork server per device kind: each job's child is forked from a process that has
already imported torch and Triton (``sandbox._forkserver``), instead of paying the imports
again in a fresh ``python -m sandbox._child``.

The server is spawned, never forked from this process, with the same allowlisted
environment as a child and, where namespaces allow, no network; so what a child inherits is
the server's, never the orchestrator's. One server per (device kind, CUDA_VISIBLE_DEVICES,
network isolation), started on first use, restarted when it died, stopped at exit and by
:func:`sandbox._process.kill_all`.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox._forkserver import RESULT_FD, pack_request
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

__all__ = ["ForkChild", "ForkServerBackend", "shutdown_servers"]

_START_S = 300.0  # importing torch and Triton on a cold disk can take minutes
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


class _Server:
    """One running ``python -m sandbox._forkserver`` and its private socket directory."""

    def __init__(self, kind: str, isolate_network: bool) -> None:
        """Spawn the server; :meth:`wait_ready` waits for its imports (the first fork does)."""
        self.dir = Path(tempfile.mkdtemp(prefix="kbench-forkserver-"))  # mode 0700
        os.chmod(self.dir, 0o700)
        self.sock = str(self.dir / "sock")
        prefix = network_isolation()[0] if isolate_network else []
        env = child_env(self.dir, "cuda" if kind == "cuda" else "cpu")
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "sandbox._forkserver", self.sock, str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, cwd=self.dir,
            env=env, start_new_session=True,
        )
        self._ready_lock = threading.Lock()
        self._ready = False
        self._failed: str | None = None

    def wait_ready(self) -> None:
        """Return once the server said ``ready`` (at once after the first time); ServerGone,
        and the server stopped, when it did not start."""
        with self._ready_lock:
            if self._ready:
                return
            if self._failed is not None:
                raise ServerGone(self._failed)
            try:
                self._wait_ready()
            except ServerGone as e:
                self._failed = str(e)
                self.stop()
                raise
            self._ready = True

    def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if sel.select(timeout=_START_S):
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    self.proc.stdout.close()
                    return
        raise ServerGone(f"the fork server did not start: {self.log_tail()}")

    def log_tail(self, limit: int = 2000) -> str:
        self.log.flush()
        try:
            return (self.dir / "server.log").read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

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
        if self.proc.poll() is None:
            self.proc.terminate()  # the server kills its children's groups and exits
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
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
    """Stop every fork server this process started (their running children die with them)."""
    with _LOCK:
        servers = list(_ALL) if _OWNER == os.getpid() else []
        _SERVERS.clear()
        _ALL.clear()
    for s in servers:
        s.stop()


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
        """Wait briefly for a clean exit, then kill the group; describe how it ended."""
        self._await_exit(grace_s)
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
        return _server(device, isolate_network).proc.pid
