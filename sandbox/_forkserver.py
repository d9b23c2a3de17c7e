"""The server side of the warm fork server: one process that has imported torch, Triton and
the sandbox child's modules once, and forks a fresh verification child per job.

Run as ``python -m sandbox._forkserver SOCKET_PATH PARENT_PID`` by
:mod:`sandbox.backends._forkserver`, never forked from the orchestrator: it starts from an
allowlisted environment (``child_env``) and, where namespaces allow, with no network, so
every child it forks inherits neither secrets nor the network nor the orchestrator's memory.
It never initialises CUDA (each child does, after the fork); it checks before every fork and
exits rather than hand a child an initialised CUDA context.

Protocol, one Unix-socket connection per job, from the parent process only (checked with
``SO_PEERCRED``): the request is a 4-byte big-endian length, then that much JSON
``{"work", "env", "argv"}`` (``{result_fd}`` in argv stands for the result pipe's number
in the child) sent with three file descriptors (the child's stdin, its log for
stdout and stderr, the result pipe's write end). The reply is JSON lines: ``{"pid": N}``
once forked, then ``{"exit": CODE}`` when the child has been reaped (``CODE`` as
``subprocess`` reports it: negative for a signal), or ``{"error": TEXT}`` instead of a pid.
Before reaping a child the server kills what is left of its process group. A request with
no descriptors and the body ``{"ping": true}`` is answered ``{"pong": SERVER_PID}``.

A *kept* server (``--keep IDLE_S LOCK``, see :mod:`sandbox.backends._forkserver`) outlives
the process that started it, so that the next ``kbench`` command finds torch and Triton
imported: it holds ``LOCK`` (``flock``) for its whole life and says ``busy`` instead of
``ready`` when another server holds it; it binds its socket under a temporary name and
renames it into place only once ready; it serves any process of its own user that is not
its own descendant (no candidate can ask it for anything), and exits, removing its socket,
after ``IDLE_S`` seconds without a job or on SIGTERM. Every server is non-dumpable
(``PR_SET_DUMPABLE`` 0): no process of the user, candidates included, can attach to it or
write its memory to poison the children it forks; each child is made dumpable again.

The child never returns into the server: it becomes a session leader, takes the fds as
0/1/2, closes every other descriptor but the result pipe, moves into its work directory,
replaces its environment and ``sys.path`` with the job's, runs ``sandbox._child.main()`` and
leaves with ``os._exit``. Hash seeds and the already-imported modules' pristine state are
shared with the server; nothing else is (``random`` reseeds itself at fork; the child seeds
torch and its inputs itself).
"""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any

__all__ = ["MAX_REQUEST", "RESULT_FD", "main", "pack_request", "peer_creds", "take_lock"]

MAX_REQUEST = 1 << 22  # a request is an environment and two paths: far below this
_NFDS = 3  # stdin, log (stdout and stderr), result pipe
RESULT_FD = "{result_fd}"  # in a request's argv: the number the result pipe has in the child


def pack_request(req: dict[str, Any]) -> bytes:
    """One request as it goes on the socket: length prefix, then JSON."""
    body = json.dumps(req).encode()
    return struct.pack(">I", len(body)) + body


def _preimport() -> list[str]:
    """Everything a child would import before the candidate: paid once, here. Returns where
    anything asked the CUDA runtime for its devices meanwhile (see :func:`_fork_poisoned`)."""
    # torch.cuda.is_available() asks the CUDA runtime (cudaGetDeviceCount), and torch then
    # marks every later fork unsafe for CUDA; with this, it asks NVML, as device_count does.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import numpy  # noqa: F401
    import torch

    asked: list[str] = []
    count = getattr(torch._C, "_cuda_getDeviceCount", None)
    if count is not None:  # a CUDA build: note who asks, for the error if fork is poisoned

        def noted() -> int:
            asked.append("".join(traceback.format_stack(limit=12)[:-1]))
            return count()

        torch._C._cuda_getDeviceCount = noted
    try:
        _import_all()
    finally:
        if count is not None:
            torch._C._cuda_getDeviceCount = count
    assert not torch.cuda.is_initialized(), "importing must not initialise CUDA"
    # Triton hashes its own sources and libraries (0.35 s on an H100 host) at a kernel's
    # first compile or cache lookup, once per process: once here, inherited by every child.
    from triton.runtime.cache import triton_key

    triton_key()
    return asked


def _import_all() -> None:
    import torch.utils.cpp_extension  # noqa: F401  (a CUDA child wraps its loaders)
    import triton  # noqa: F401
    import triton.compiler.code_generator  # noqa: F401  (a kernel's first launch needs it)
    import triton.language  # noqa: F401

    import sandbox._child  # noqa: F401  (and its imports: inputs, provenance, perturb)

    if os.environ.get("TRITON_INTERPRET") == "1":
        import triton.runtime.interpreter  # noqa: F401

        # imported only: warming the CPU math here would start torch's OpenMP threads, and a
        # child forked after that hangs at its first parallel op; the child installs _interp
        import sandbox._cpumath  # noqa: F401
        import sandbox._interp  # noqa: F401
    import sandbox.timing  # noqa: F401
    from sandbox import precision

    # Setting the matmul precision imports torch._dynamo and torch._inductor's config (0.8 s
    # on a CPU box, about 5 s on an H100 host): done once here, not in every child (each
    # child applies its job's own settings again before any candidate code). Every child
    # needs dynamo anyway: the first tensor method a candidate calls under the watch's
    # dispatch mode goes through torch._compile's wrapper, which imports it.
    precision.apply(None)


def _fork_poisoned() -> bool:
    """Whether a child forked now would find CUDA unusable: torch marks fork unsafe once
    anything asked the CUDA runtime for its devices, not only once CUDA is initialised, and
    every child would then fail at its first CUDA call. One probe child, at start."""
    import torch

    probe = getattr(torch._C, "_cuda_isInBadFork", None)
    if probe is None:  # a build without CUDA
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(3 if probe() else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) != 0


def _cuda_initialised() -> bool:
    import torch

    return bool(torch.cuda.is_initialized())


def peer_creds(conn: socket.socket) -> tuple[int, int]:
    """The connected peer's pid and uid (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is ``ancestor``'s descendant (or itself). A process that cannot be
    followed to init counts as one: the answer that refuses."""
    for _ in range(1 << 16):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            pid = _ppid(pid)
        except (OSError, ValueError, IndexError):
            return True
    return True


_LIBC: Any = None


def _prctl(option: int, arg: int) -> bool:
    global _LIBC
    try:
        if _LIBC is None:
            import ctypes

            _LIBC = ctypes.CDLL(None, use_errno=True)
        return _LIBC.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_dumpable(on: bool) -> bool:
    """``PR_SET_DUMPABLE``: off, no unprivileged process can ptrace this one or open its
    ``/proc/PID/mem`` or ``environ``; a fork inherits the flag."""
    return _prctl(4, 1 if on else 0)


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request and its descriptors; a ping (``{"ping": true}``) comes with none."""
    conn.settimeout(30)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, _NFDS)
    try:
        if len(fds) not in (0, _NFDS) or len(data) < 4:
            raise ValueError(f"a request carries {_NFDS} descriptors and a length")
        (n,) = struct.unpack(">I", data[:4])
        if n > MAX_REQUEST:
            raise ValueError("request too large")
        body = data[4:]
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                raise ValueError("connection closed mid-request")
            body += chunk
        req = json.loads(body)
        if not fds:
            if req != {"ping": True}:
                raise ValueError("a request without descriptors can only be a ping")
            return req, fds
        if not (isinstance(req.get("work"), str) and isinstance(req.get("env"), dict)
                and isinstance(req.get("argv"), list)):
            raise ValueError("a request needs work, env and argv")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return req, fds


def _reply(conn: socket.socket, **msg: Any) -> None:
    try:
        conn.settimeout(10)
        conn.sendall(json.dumps(msg).encode() + b"\n")
    except OSError:
        pass  # the parent gave up on this job; the child is still reaped


def _stdio(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
    """A text stream on ``fd`` as ``python -u`` makes one (``PYTHONUNBUFFERED=1``)."""
    enc = sys.getfilesystemencoding()
    if mode == "r":
        return io.TextIOWrapper(io.BufferedReader(io.FileIO(fd, "r", closefd=False)),
                                encoding=enc, errors=errors)
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=enc,  # type: ignore[arg-type]
                            errors=errors, line_buffering=False, write_through=True)


def _become_child(req: dict[str, Any], fds: list[int], shed: Any) -> None:
    """In the forked child: shed the server (``shed()`` closes its sockets and selector),
    take the job's stdio and environment, run the verification child, exit. Never returns."""
    code = 1
    try:
        os.setsid()
        set_dumpable(True)  # the server is not; its children are, as any process is
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        shed()
        stdin_fd, log_fd, result_fd = fds
        os.dup2(stdin_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, os.sysconf("SC_OPEN_MAX"))
        sys.stdin = sys.__stdin__ = _stdio(0, "r", "strict")
        sys.stdout = sys.__stdout__ = _stdio(1, "w", "strict")
        sys.stderr = sys.__stderr__ = _stdio(2, "w", "backslashreplace")
        work = req["work"]
        os.chdir(work)
        env = {str(k): str(v) for k, v in req["env"].items()}
        os.environ.clear()  # unsetenv for each: the C environment follows
        os.environ.update(env)
        path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        rest = [p for p in sys.path[1:] if p not in path]  # sys.path[0] was the server's cwd
        sys.path[:] = [work, *path, *rest]
        sys.path_importer_cache.clear()
        import importlib

        importlib.invalidate_caches()
        import sandbox._child as child

        # the result pipe has this process's number for it, not the parent's
        sys.argv = [child.__file__ or "sandbox/_child.py",
                    *[str(a).replace(RESULT_FD, str(result_fd)) for a in req["argv"]]]
        try:
            code = child.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report whatever broke, then leave
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def _become_subreaper() -> bool:
    """Have orphaned descendants of every job re-parented to this server, not to init, so
    none outlives its job by leaving the job's session (Linux's PR_SET_CHILD_SUBREAPER)."""
    return _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def _children(ppid: int) -> list[int]:
    """Pids whose parent is ``ppid`` (from /proc), zombies excluded."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == ppid and fields[0] not in (b"Z", b"X"):
            out.append(int(name))
    return out


class _Server:
    def __init__(self, path: str, parent: int, idle_s: float | None = None,
                 lock_fd: int | None = None) -> None:
        """``idle_s`` set: a kept server (see the module's docstring), serving its user's
        processes until idle that long, holding ``lock_fd``'s lock; else the server of
        ``parent`` alone, for its life."""
        self.parent = parent
        self.idle_s = idle_s
        self.lock_fd = lock_fd
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if idle_s is None:
            self.listener.bind(path)
        else:  # in place only once listening: whoever finds the path finds a server
            tmp = f"{path}.{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            self.listener.bind(tmp)
        self.listener.listen(64)
        if idle_s is not None:
            os.rename(tmp, path)
            self.ino = os.stat(path).st_ino
        self.last = time.monotonic()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        self.jobs: dict[int, socket.socket] = {}  # child pid -> its connection
        self.stopping = False
        self.draining = False  # CUDA got initialised: no more forks, exit once jobs end
        self.orphaned = False

    def _shed(self, conn: socket.socket) -> None:
        """In a forked child: close the server's descriptors through their objects, so no
        finalizer closes a number the candidate has reused since (and the lock, which a
        child must not hold on for the server)."""
        self.sel.close()
        for s in (self.listener, conn, *self.jobs.values()):
            s.close()
        for fd in (self.wake_r, self.wake_w, *([self.lock_fd] if self.lock_fd is not None else [])):
            os.close(fd)

    def serve(self) -> None:
        _become_subreaper()
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGHUP, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        while not self.stopping and not (self.draining and not self.jobs):
            for key, _ in self.sel.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
            self._reap()
            if self.idle_s is None:
                if os.getppid() != self.parent:
                    self.stopping = self.orphaned = True  # the parent is gone
            elif not self.jobs and time.monotonic() - self.last > self.idle_s:
                self.stopping = True
        self._withdraw()
        self._kill_jobs()

    def _withdraw(self) -> None:
        """A kept server takes its socket's name away (if still its own), so the next
        command starts a fresh server rather than connect to one that will not answer."""
        if self.idle_s is None:
            return
        try:
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass

    def _release(self) -> None:
        """Let another kept server start (one that drains serves no one new)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _allowed(self, conn: socket.socket) -> bool:
        """Only the parent may ask a private server for children; a kept one serves its own
        user's processes, never one of its descendants (a candidate, or anything it left)."""
        pid, uid = peer_creds(conn)
        if self.idle_s is None:
            return pid == self.parent
        return uid == os.getuid() and not descends_from(pid, os.getpid())

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.last = time.monotonic()
        try:
            if not self._allowed(conn):
                conn.close()
                return
            req, fds = _read_request(conn)
        except (OSError, ValueError) as e:
            _reply(conn, error=f"bad request: {e}")
            conn.close()
            return
        if not fds:
            _reply(conn, pong=os.getpid())
            conn.close()
            return
        try:
            if _cuda_initialised():
                _reply(conn, error="CUDA is initialised in the fork server; restart it")
                conn.close()
                self.draining = True
                self._withdraw()
                self.sel.unregister(self.listener)
                self.listener.close()
                self._release()
                return
            pid = os.fork()
            if pid == 0:
                _become_child(req, fds, lambda: self._shed(conn))
        except OSError as e:
            _reply(conn, error=f"fork failed: {e}")
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.jobs[pid] = conn
        _reply(conn, pid=pid)

    def _kill_strays(self) -> None:
        """Kill this server's children that are not jobs: a job's descendants orphaned here
        (the server is their subreaper) after leaving the job's process group with
        ``setsid``, which the group kill cannot reach. They are reaped by :meth:`_reap`."""
        for pid in _children(os.getpid()):
            if pid not in self.jobs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def _reap(self) -> None:
        """Report every exited child: kill what is left of its group while the zombie still
        holds the group id (it cannot be reused yet), then reap and tell its connection.
        Strays (:meth:`_kill_strays`) are killed first, and reaped like any child."""
        self._kill_strays()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            conn = self.jobs.pop(pid, None)
            if conn is not None:
                _reply(conn, exit=os.waitstatus_to_exitcode(status))
                conn.close()
                self.last = time.monotonic()

    def _kill_jobs(self) -> None:
        for pid in list(self.jobs):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(self.jobs):
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            conn = self.jobs.pop(pid)
            _reply(conn, exit=os.waitstatus_to_exitcode(status))
            conn.close()


def take_lock(path: str) -> int | None:
    """The kept server's lock (``flock``), held for its life; None when another server holds
    it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def main(argv: list[str]) -> int:
    """``SOCKET PARENT_PID [--keep IDLE_S LOCK]``."""
    path, parent = argv[1], int(argv[2])
    idle_s, lock_fd = None, None
    if argv[3:4] == ["--keep"]:
        idle_s = float(argv[4])
        lock_fd = take_lock(argv[5])
        if lock_fd is None:  # another kept server runs or is starting: use that one
            sys.stdout.write("busy\n")
            sys.stdout.flush()
            return 0
    set_dumpable(False)
    asked = _preimport()
    if _fork_poisoned():
        where = "\n".join(asked) or "(not through torch.cuda: no caller was noted)\n"
        sys.stderr.write("the fork server cannot fork CUDA children: its imports asked the CUDA "
                         f"runtime for its devices, which makes torch refuse CUDA after a fork. "
                         f"Asked from:\n{where}")
        return 1
    server = _Server(path, parent, idle_s, lock_fd)
    # the parent waits for this line; then stdout is no longer ours to write to
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    server.serve()
    if server.orphaned:  # nobody else will remove our private directory
        import shutil

        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stderr.flush()
    # Without the interpreter's teardown of torch, Triton and dynamo (0.7 s, which the
    # parent's exit waited for): the server holds nothing that needs saving.
    os._exit(code)
