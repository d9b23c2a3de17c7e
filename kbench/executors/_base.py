"""The Executor base: where jobs run. A job is a callable given one device."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from kbench.errors import KbenchError

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
