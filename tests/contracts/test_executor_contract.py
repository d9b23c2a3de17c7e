"""The contract every Executor passes: a subclass of ``ExecutorContract`` supplies one
fixture, ``make``, that builds a fresh executor of its kind (its devices are opaque names;
jobs here are plain callables, no GPU and no sandbox)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from kbench.errors import ConfigError
from kbench.executors import (
    Executor,
    ExecutorError,
    LocalExecutor,
    available_executors,
    check_executor,
    make_executor,
)

MakeExecutor = Callable[..., Executor]


class _Holds:
    """Records how many jobs run on each device; a clash is a device running more than
    ``slots`` at once."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.lock = threading.Lock()
        self.held: Counter[str] = Counter()
        self.clashes: list[str] = []
        self.used: Counter[str] = Counter()
        self.peak = 0
        self.peak_per_device = 0

    def job(self, value: object, seconds: float = 0.01) -> Callable[[str], object]:
        def fn(device: str) -> object:
            with self.lock:
                self.held[device] += 1
                if self.held[device] > self.slots:
                    self.clashes.append(device)
                self.used[device] += 1
                self.peak = max(self.peak, sum(self.held.values()))
                self.peak_per_device = max(self.peak_per_device, self.held[device])
            time.sleep(seconds)
            with self.lock:
                self.held[device] -= 1
            return value

        return fn


class ExecutorContract:
    """Inherit and supply ``make(max_failures=...) -> Executor``."""

    @pytest.fixture
    def make(self) -> Iterator[MakeExecutor]:
        raise NotImplementedError

    def test_every_job_runs_once_and_returns_its_value(self, make: MakeExecutor) -> None:
        runs: Counter[int] = Counter()
        lock = threading.Lock()

        def job(i: int) -> Callable[[str], int]:
            def fn(device: str) -> int:
                assert device in ex.devices
                with lock:
                    runs[i] += 1
                return i * i
            return fn

        with make() as ex:
            futures = [ex.submit(job(i)) for i in range(40)]
            assert [f.result(timeout=10) for f in futures] == [i * i for i in range(40)]
            assert list(ex.map([job(i) for i in range(40, 45)])) == [i * i for i in range(40, 45)]
        assert runs == Counter(range(45))

    def test_no_device_runs_more_jobs_than_its_slots(self, make: MakeExecutor) -> None:
        with make() as ex:
            holds = _Holds(ex.jobs_per_device)
            futures = [ex.submit(holds.job(i, 0.005)) for i in range(60)]
            assert [f.result(timeout=10) for f in futures] == list(range(60))
        assert holds.clashes == []
        assert holds.peak <= len(ex.devices) * ex.jobs_per_device

    def test_every_device_is_used_under_load(self, make: MakeExecutor) -> None:
        holds = _Holds()
        with make() as ex:
            for f in [ex.submit(holds.job(i, 0.02)) for i in range(6 * len(ex.devices))]:
                f.result(timeout=10)
            assert set(holds.used) == set(ex.devices)
        if len(ex.devices) > 1:  # least-busy placement spreads equal jobs evenly
            assert max(holds.used.values()) - min(holds.used.values()) <= 2, holds.used

    def test_an_exception_in_the_job_reaches_the_future(self, make: MakeExecutor) -> None:
        def boom(device: str) -> None:
            raise KeyError(f"no such thing on {device}")

        with make(max_failures=5) as ex:
            with pytest.raises(KeyError, match="no such thing"):
                ex.submit(boom).result(timeout=10)
            assert ex.submit(lambda d: "still works").result(timeout=10) == "still works"

    def test_a_failing_device_leaves_the_rotation(self, make: MakeExecutor,
                                                    caplog: pytest.LogCaptureFixture) -> None:
        with make(max_failures=2) as ex:
            bad = ex.devices[0]

            def flaky(device: str) -> str:
                if device == bad:
                    raise RuntimeError(f"{device} is broken")
                time.sleep(0.005)
                return device

            results, errors = [], []
            for f in [ex.submit(flaky) for _ in range(30)]:
                try:
                    results.append(f.result(timeout=10))
                except RuntimeError as e:
                    errors.append(str(e))
            assert all(bad in e for e in errors)
            if len(ex.devices) == 1:  # the last device stays: every job tried, failures told
                assert len(errors) == 30 and results == []
                assert ex.submit(lambda d: "ok").result(timeout=10) == "ok"
                said = "is the last in rotation"
            else:
                # jobs already running on it when it left (its other slots) fail too
                assert 2 <= len(errors) <= 1 + ex.jobs_per_device, errors
                assert len(results) == 30 - len(errors) and bad not in results
                assert ex.submit(flaky).result(timeout=10) != bad
                said = "taken out of rotation: 2 jobs in a row raised; the last: RuntimeError"
        assert sum(bad in r.getMessage() and said in r.getMessage()
                   for r in caplog.records) == 1, [r.getMessage() for r in caplog.records]

    def test_a_success_resets_the_failure_count(self, make: MakeExecutor) -> None:
        seen: Counter[str] = Counter()
        lock = threading.Lock()

        def every_other(device: str) -> str:  # each device: fail, succeed, fail, ...
            with lock:
                seen[device] += 1
                odd = seen[device] % 2
            if odd:
                raise RuntimeError("odd")
            return device

        # jobs sharing a device may finish out of the order they started in: with k slots,
        # at most k failures can complete between two successes
        with make(max_failures=2) as ex:
            if ex.jobs_per_device > 1:
                ex.max_failures = ex.jobs_per_device + 2  # type: ignore[attr-defined]
            for f in [ex.submit(every_other) for _ in range(8 * len(ex.devices))]:
                f.exception(timeout=10)
            holds = _Holds()  # no device left the rotation
            for f in [ex.submit(holds.job(i, 0.02)) for i in range(6 * len(ex.devices))]:
                f.result(timeout=10)
            assert set(holds.used) == set(ex.devices)

    def test_shutdown_waits_for_running_jobs(self, make: MakeExecutor) -> None:
        started, done = threading.Event(), []
        ex = make()

        def slow(device: str) -> str:
            started.set()
            time.sleep(0.2)
            done.append(device)
            return device

        futures = [ex.submit(slow) for _ in range(len(ex.devices) * ex.jobs_per_device + 1)]
        assert started.wait(10)
        ex.shutdown(wait=True)
        assert all(f.done() for f in futures) and len(done) == len(futures)
        with pytest.raises(ExecutorError, match="shut down"):
            ex.submit(slow)

    def test_shutdown_can_cancel_queued_jobs(self, make: MakeExecutor) -> None:
        gate = threading.Event()
        ex = make()
        running = [ex.submit(lambda d: gate.wait(10))
                   for _ in range(len(ex.devices) * ex.jobs_per_device)]
        queued = [ex.submit(lambda d: "never") for _ in range(3)]
        time.sleep(0.05)
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        gate.set()
        assert all(f.result(timeout=10) is True for f in running)


class TestLocalOneDevice(ExecutorContract):
    @pytest.fixture
    def make(self) -> Iterator[MakeExecutor]:
        made: list[Executor] = []

        def build(**kw: object) -> Executor:
            made.append(make_executor("local", devices=["cpu"], **kw))
            return made[-1]

        yield build
        for ex in made:
            ex.shutdown(wait=True)


class TestLocalThreeDevices(ExecutorContract):
    @pytest.fixture
    def make(self) -> Iterator[MakeExecutor]:
        made: list[Executor] = []

        def build(**kw: object) -> Executor:
            made.append(make_executor("local", devices=["cpu", "cpu:1", "cpu:2"], **kw))
            return made[-1]

        yield build
        for ex in made:
            ex.shutdown(wait=True)


class TestLocalTwoSlotsPerDevice(ExecutorContract):
    @pytest.fixture
    def make(self) -> Iterator[MakeExecutor]:
        made: list[Executor] = []

        def build(**kw: object) -> Executor:
            made.append(make_executor("local", devices=["cpu", "cpu:1"], jobs_per_device=2,
                                      **kw))
            return made[-1]

        yield build
        for ex in made:
            ex.shutdown(wait=True)


def test_slots_per_device_are_filled_and_never_exceeded() -> None:
    """With two slots, two jobs share a device at once (so their checks can overlap), a
    third waits, and load spreads over devices before doubling up."""
    holds = _Holds(slots=2)
    with LocalExecutor(devices=["cpu", "cpu:1"], jobs_per_device=2) as ex:
        for f in [ex.submit(holds.job(i, 0.05)) for i in range(16)]:
            f.result(timeout=10)
    assert holds.clashes == []
    assert holds.peak_per_device == 2
    assert holds.peak == 4
    first = _Holds(slots=2)
    with LocalExecutor(devices=["cpu", "cpu:1"], jobs_per_device=2) as ex:
        a, b = ex.submit(first.job("a", 0.2)), ex.submit(first.job("b", 0.2))
        a.result(timeout=5), b.result(timeout=5)
    assert sorted(first.used) == ["cpu", "cpu:1"]  # one each, not both on the first
    with pytest.raises(ValueError, match="jobs_per_device"):
        LocalExecutor(jobs_per_device=0)


# -- the registry ----------------------------------------------------------------------
def test_local_is_always_available_and_ray_says_why_not() -> None:
    assert "local" in available_executors()
    assert isinstance(make_executor("local", devices=["cpu"]), LocalExecutor)
    if "ray" not in available_executors():
        with pytest.raises(ConfigError, match="executor 'ray' is not available: .*use 'local'"):
            make_executor("ray")
    with pytest.raises(ConfigError, match="unknown executor 'slurm'; choose one of local"):
        check_executor("slurm")


def test_devices_are_found_lazily_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a LocalExecutor asks nothing of torch; its devices are decided when first
    needed: every visible GPU, else ``workers`` CPU devices."""
    torch = pytest.importorskip("torch")
    asked: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: asked.append("gpu?") or False)
    ex = LocalExecutor(workers=2)
    assert asked == []
    assert ex.devices == ["cpu:0", "cpu:1"] and asked == ["gpu?"]
    assert ex.devices == ["cpu:0", "cpu:1"] and asked == ["gpu?"]  # decided once
    assert LocalExecutor().devices == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert LocalExecutor().devices == ["cuda:0", "cuda:1"]
    assert LocalExecutor(devices=["cuda:1"]).devices == ["cuda:1"]


def test_importing_executors_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, kbench.executors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_leaves_no_idle_thread_behind() -> None:
    """A LocalExecutor's threads end with their jobs, so one never shut down cannot hold up
    interpreter exit, and a job running at exit is waited for, not killed."""
    ex = LocalExecutor(devices=["cpu", "cpu:1"])
    assert list(ex.map([lambda d: d] * 6)) and ex.submit(lambda d: 1).result(timeout=10) == 1
    deadline = time.monotonic() + 10
    while any(t.name.startswith("kbench-exec-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.01)
