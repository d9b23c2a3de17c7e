"""The Executor base: where jobs run. A job is a callable given one device."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from kbench.errors import KbenchError

if TYPE_CHECKING:
    from sandbox.baselines import Cache
    from sandbox.job import Job
    from sandbox.verdict import Verdict

__all__ = ["Executor", "ExecutorError"]

T = TypeVar("T")


class ExecutorError(KbenchError):
    """An executor cannot take a job (it is shut down, or cannot reach its devices)."""


class Executor(abc.ABC):
    """Runs jobs on devices. ``submit(fn)`` picks a device with a free slot and calls
    ``fn(device)`` there; at most :attr:`jobs_per_device` jobs share a device at once (the
    verifier's device lock keeps their timed phases apart). The returned future carries
    ``fn``'s value (a :class:`~sandbox.verdict.Verdict` in the runner) or its exception.

    Implementations are registered by name in :mod:`kbench.executors` and pass the contract
    suite in ``tests/contracts/test_executor_contract.py``.

    Example:
        >>> from kbench.executors import make_executor
        >>> with make_executor("local", devices=["cpu"]) as ex:
        ...     ex.submit(lambda device: device).result()
        'cpu'
    """

    @property
    @abc.abstractmethod
    def devices(self) -> list[str]:
        """The devices jobs may be placed on, in rotation or not (e.g. ``["cuda:0"]``)."""

    #: Jobs run in other processes, perhaps on other machines (Ray): such an executor takes
    #: only :meth:`submit_job` work from the runner, never a closure over the driver's state
    #: (its store, its loaded problems). In-process executors take both.
    remote: bool = False

    #: A device whose jobs keep raising leaves the rotation (the executor places jobs
    #: itself); False where a cluster scheduler places them (Ray) and only tells failures.
    retires_devices: bool = True

    @property
    def jobs_per_device(self) -> int:
        """How many jobs may run on one device at once."""
        return 1

    @abc.abstractmethod
    def submit(self, fn: Callable[[str], T]) -> Future[T]:
        """Queue ``fn``; it runs once, on one device, sharing it with at most
        ``jobs_per_device - 1`` other jobs.

        Raises:
            ExecutorError: the executor is shut down.
        """

    def submit_job(self, job: Job, *, cache: Cache | None = None) -> Future[Verdict]:
        """Queue one verification; its future carries the :class:`~sandbox.verdict.Verdict`.

        The :class:`~sandbox.job.Job` is all the worker gets: :func:`sandbox.job.run_job` on
        the device the executor picks (the job's own ``device`` is replaced by it). ``cache``
        holds baselines where the job runs in this process; a remote executor keeps its own
        per worker node instead. A problem file that is missing or changed raises
        :class:`~sandbox.errors.ProblemError` through the future.

        Raises:
            ExecutorError: the executor is shut down.
        """
        def fn(device: str) -> Verdict:
            from sandbox.job import run_job

            return run_job(replace(job, device=device), cache)

        return self.submit(fn)

    @abc.abstractmethod
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more jobs. ``cancel_futures`` cancels queued jobs that have not started;
        ``wait`` blocks until every started (and, unless cancelled, queued) job is done."""

    def map(self, fns: Iterable[Callable[[str], T]]) -> Iterator[T]:
        """Submit every ``fn`` at once; yield their values in submission order (the first
        exception is raised when its value is reached)."""
        futures = [self.submit(fn) for fn in fns]
        return (f.result() for f in futures)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown(wait=True)
