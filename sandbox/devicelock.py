"""Who may use a GPU when: many jobs check correctness on it at once, one alone times.

A :class:`DeviceLock` is a readers-writer lock on one device, shared by every thread and
every process of this user on the machine (``fcntl.flock`` on a file per device):

- ``shared()`` is held from the start of a verification child until its correctness checks
  are done: imports, builds, reference outputs and trials of several jobs overlap;
- ``exclusive()`` is held while a child is timed: no other job's child checks or times on
  the device meanwhile, so concurrent jobs cannot disturb a measurement.

A turnstile keeps a waiting writer from being starved by a stream of new readers: every
acquisition passes through it, and a writer holds it while it waits for the readers to
leave. Waiting polls with a short back-off (a child that never finishes is killed by its own
deadline, which releases its hold), and gives up with :class:`TimeoutError` after
``timeout_s``. Only CUDA devices are locked; on a CPU device both holds are free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DeviceLock", "Hold", "device_lock", "lock_dir"]


def lock_dir() -> Path:
    """``$KBENCH_LOCK_DIR``, else a private per-user folder in the temp dir."""
    env = os.environ.get("KBENCH_LOCK_DIR")
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"kbench-locks-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _device_id(device: str) -> str:
    """A name for the physical GPU behind ``device`` (its UUID where torch tells it), so
    that two processes with different ``CUDA_VISIBLE_DEVICES`` share one lock per card, and
    two cards never share one. Without CUDA here: the device's index (``cuda`` is
    ``cuda:0``) with the visible devices."""
    index = device.partition(":")[2] or "0"
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(int(index)), "uuid", None)
        if uuid is not None:
            return f"gpu-{uuid}"
    except Exception:  # noqa: BLE001 - no CUDA here: fall back to the visible name
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"cuda:{index}-{visible}"


def _poll(fd: int, op: int, deadline: float) -> None:
    wait = 0.0005
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError("the device stayed busy past the lock timeout") from None
            time.sleep(wait)
            wait = min(wait * 2, 0.02)


class DeviceLock:
    """Readers-writer lock on one device; see the module docstring.

    Example:
        >>> lock = DeviceLock("cpu")
        >>> with lock.shared():
        ...     with lock.exclusive():  # CPU devices are never locked
        ...         pass
    """

    def __init__(self, device: str, *, root: Path | None = None,
                 timeout_s: float = 3600.0) -> None:
        self.device = device
        self.enabled = device.startswith("cuda")
        self.timeout_s = timeout_s
        self._root = root
        self._paths: tuple[Path, Path] | None = None
        self.waited_s = 0.0  # total time spent waiting for exclusive holds
        self._mu = threading.Lock()

    def _files(self) -> tuple[Path, Path]:
        with self._mu:
            if self._paths is None:
                root = self._root or lock_dir()
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", _device_id(self.device))
                self._paths = (root / f"{name}.turnstile", root / f"{name}.lock")
            return self._paths

    @contextlib.contextmanager
    def _hold(self, exclusive: bool) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        turn_path, main_path = self._files()
        deadline = time.monotonic() + self.timeout_s
        turn = os.open(turn_path, os.O_RDWR | os.O_CREAT, 0o600)
        main = os.open(main_path, os.O_RDWR | os.O_CREAT, 0o600)
        t0 = time.monotonic()
        try:
            _poll(turn, fcntl.LOCK_EX, deadline)
            try:
                _poll(main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
            if exclusive:
                self.waited_s += time.monotonic() - t0
            yield
        finally:
            os.close(turn)  # closing releases any hold still on the descriptor
            os.close(main)

    def shared(self) -> contextlib.AbstractContextManager[None]:
        """Held while a child checks correctness: other checks may run, no timing."""
        return self._hold(exclusive=False)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held while a child is timed: nothing else runs on the device."""
        return self._hold(exclusive=True)


_LOCKS: dict[str, DeviceLock] = {}
_LOCKS_MU = threading.Lock()


def device_lock(device: str) -> DeviceLock:
    """The process-wide :class:`DeviceLock` of ``device``."""
    with _LOCKS_MU:
        lock = _LOCKS.get(device)
        if lock is None:
            lock = _LOCKS[device] = DeviceLock(device)
        return lock


class Hold:
    """One job's hold on a device as it moves through its phases: ``share()`` while it
    prepares and checks, ``exclude()`` while it is timed, ``release()`` (or leaving the
    ``with`` block) after. Moving between modes releases the old hold first, so two jobs
    that both move from checking to timing never wait on each other."""

    def __init__(self, lock: DeviceLock) -> None:
        self.lock = lock
        self.mode: str | None = None
        self._cm: contextlib.AbstractContextManager[None] | None = None

    def _take(self, mode: str) -> None:
        if self.mode == mode:
            return
        self.release()
        cm = self.lock.exclusive() if mode == "exclusive" else self.lock.shared()
        cm.__enter__()
        self._cm, self.mode = cm, mode

    def share(self) -> None:
        self._take("shared")

    def exclude(self) -> None:
        self._take("exclusive")

    def release(self) -> None:
        cm, self._cm, self.mode = self._cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
