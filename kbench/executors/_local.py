"""LocalExecutor: one worker thread per device of this machine."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from kbench.executors._base import Executor, ExecutorError

__all__ = ["LocalExecutor", "visible_devices"]

T = TypeVar("T")
log = logging.getLogger("kbench.executors")


def visible_devices(workers: int = 1) -> list[str]:
    """``cuda:0 .. cuda:N-1`` for the GPUs torch sees (``CUDA_VISIBLE_DEVICES`` decides
    which, and they are renumbered from 0), else ``workers`` CPU devices (``["cpu"]`` for
    one, ``cpu:0 ..`` for more). Imports torch, so call it only when devices are needed."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"] if workers == 1 else [f"cpu:{i}" for i in range(workers)]


def bind_thread(device: str) -> None:
    """Make ``cuda:N`` this thread's current CUDA device, so that the job's work which names
    no index (``torch.cuda.synchronize()``, ``device="cuda"``) lands on its own GPU, not on
    GPU 0 where another job may be timed. Nothing for other names, or where torch has no
    such GPU (logical devices in tests); a GPU that refuses fails the job."""
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index.isdigit():
        return
    import torch

    if torch.cuda.is_available() and int(index) < torch.cuda.device_count():
        torch.cuda.set_device(int(index))


@dataclass
class _Device:
    name: str
    order: int
    jobs: int = 0
    busy_s: float = 0.0  # summed wall time of its finished jobs
    started: float = 0.0  # summed monotonic start times of its running jobs
    failures: int = 0  # consecutive jobs that raised
    retired: str | None = None  # why it left the rotation

    def busy_now(self, running: int, now: float) -> float:
        """Busy time so far, the running jobs' elapsed time included."""
        return self.busy_s + running * now - self.started


class LocalExecutor(Executor):
    """Jobs run in this process, in threads; each device runs up to ``jobs_per_device``
    jobs at a time (the verifier's :class:`~sandbox.devicelock.DeviceLock` lets their
    correctness checks overlap and times one alone; its lock is per device, so devices never
    wait on each other). The next queued job goes to the least busy device with a free slot:
    fewest running jobs, then least busy time so far (running jobs' time included). A device
    whose jobs raise ``max_failures`` times in a row (harness faults, not verdicts) leaves
    the rotation with a warning on the ``kbench.executors`` logger (printed to stderr when
    logging is not configured) and in :attr:`retired`, unless it is the last one in rotation.

    Args:
        devices: device names to use, opaque to the executor (default: every visible GPU,
            else CPU; found when first needed, not at construction).
        workers: CPU devices when no GPU is visible and ``devices`` is not given.
        jobs_per_device: jobs that may run on one device at once.
        max_failures: consecutive raising jobs that take a device out of rotation.

    Example:
        >>> with LocalExecutor(devices=["cpu:0", "cpu:1"]) as ex:
        ...     sorted(set(ex.map([lambda d: d[:3]] * 4)))
        ['cpu']
    """

    def __init__(self, devices: Sequence[str] | None = None, *, workers: int = 1,
                 max_failures: int = 3, jobs_per_device: int = 1) -> None:
        if devices is not None:
            if not devices:
                raise ValueError("devices is empty; pass None to use the visible ones")
            if len(set(devices)) != len(devices):
                raise ValueError(f"devices repeat a name: {list(devices)}")
        if workers < 1 or max_failures < 1 or jobs_per_device < 1:
            raise ValueError("workers, max_failures and jobs_per_device must be at least 1")
        self._slots = jobs_per_device
        self._asked = list(devices) if devices is not None else None
        self._workers = workers
        self.max_failures = max_failures
        self._cond = threading.Condition()
        self._devs: dict[str, _Device] | None = None
        self._queue: deque[tuple[Callable[[str], Any], Future[Any]]] = deque()
        self._held: dict[str, int] = {}  # running jobs per device
        self._threads: set[threading.Thread] = set()  # one per running job
        self._closed = False

    # -- state ----------------------------------------------------------------------------
    def _devices(self) -> dict[str, _Device]:
        if self._devs is None:  # callers hold self._cond
            names = self._asked or visible_devices(self._workers)
            self._devs = {n: _Device(n, i) for i, n in enumerate(names)}
        return self._devs

    @property
    def devices(self) -> list[str]:
        with self._cond:
            return list(self._devices())

    @property
    def retired(self) -> dict[str, str]:
        """Devices out of rotation, with the reason."""
        with self._cond:
            return {d.name: d.retired for d in self._devices().values() if d.retired}

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per device: finished ``jobs``, ``busy_s`` (running jobs' time so far included),
        ``running`` jobs, consecutive ``failures`` and why it was ``retired`` (or None)."""
        now = time.monotonic()
        with self._cond:
            return {d.name: {"jobs": d.jobs,
                             "busy_s": d.busy_now(self._held.get(d.name, 0), now),
                             "running": self._held.get(d.name, 0), "failures": d.failures,
                             "retired": d.retired}
                    for d in self._devices().values()}

    def _free(self) -> list[_Device]:
        return [d for d in self._devices().values()
                if not d.retired and self._held.get(d.name, 0) < self._slots]

    @property
    def jobs_per_device(self) -> int:
        return self._slots

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, fn: Callable[[str], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise ExecutorError("the executor is shut down")
            self._queue.append((fn, fut))
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        """Hand queued jobs to free devices, least busy first (caller holds the lock). Each
        job gets its own thread, which ends with the job: no idle thread outlives the work,
        and a job still running at interpreter exit is waited for (as ThreadPoolExecutor
        does), not killed inside torch."""
        now = time.monotonic()
        while self._queue:
            free = sorted(self._free(), key=lambda d: (
                self._held.get(d.name, 0), d.busy_now(self._held.get(d.name, 0), now),
                d.jobs, d.order))
            if not free:
                break
            fn, fut = self._queue.popleft()
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued
            name = free[0].name
            self._held[name] = self._held.get(name, 0) + 1
            free[0].started += now
            t = threading.Thread(target=self._run, args=(name, fn, fut, now),
                                 name=f"kbench-exec-{name}")
            self._threads.add(t)
            t.start()

    def _run(self, name: str, fn: Callable[[str], Any], fut: Future[Any], t0: float) -> None:
        try:
            bind_thread(name)
            value, error = fn(name), None
        except BaseException as e:  # noqa: BLE001 - it travels to the caller's future
            value, error = None, e
        # settle the future while the device is still held, so that shutdown(wait=True)
        # returns only after every future it waited for is done
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)
        with self._cond:
            dev = self._devices()[name]
            self._held[name] -= 1
            if not self._held[name]:
                del self._held[name]
            dev.jobs += 1
            dev.started -= t0
            dev.busy_s += time.monotonic() - t0
            dev.failures = 0 if error is None else dev.failures + 1
            if dev.failures >= self.max_failures:
                self._retire(dev, error)
            self._dispatch()
            self._threads.discard(threading.current_thread())
            self._cond.notify_all()

    def _retire(self, dev: _Device, error: BaseException | None) -> None:
        """Take ``dev`` out of rotation, unless it is the last one in it: then it keeps
        taking jobs (each failure still reaches its future) and the warning says so."""
        why = f"{dev.failures} jobs in a row raised; the last: {type(error).__name__}: {error}"
        others = [d for d in self._devices().values() if d is not dev and not d.retired]
        if others:
            dev.retired = why
            log.warning("device %s taken out of rotation: %s", dev.name, why)
        elif dev.failures == self.max_failures:
            log.warning("device %s keeps failing (%s) but is the last in rotation, so it "
                        "stays", dev.name, why)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            cancelled = [f for _, f in self._queue] if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
        for f in cancelled:
            f.cancel()
        if not wait:
            return
        me = threading.current_thread()
        with self._cond:  # queued jobs (not cancelled) still run; a job may shut it down
            self._cond.wait_for(lambda: not (self._threads - {me})
                                and not (self._queue and me not in self._threads))
