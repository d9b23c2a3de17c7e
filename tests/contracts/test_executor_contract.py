"""The contract every Executor passes: a subclass of ``ExecutorContract`` supplies one
fixture, ``make``, that builds a fresh executor of its kind (its devices are opaque names;
jobs here are plain callables, no GPU and no sandbox).

Jobs may run in this process (local) or in others (Ray workers), so they keep their records
on files in one folder (:class:`_Board`), never in this process's memory, and they capture
nothing that cannot be pickled."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbench.errors import ConfigError
from kbench.executors import (
    Executor,
    ExecutorError,
    LocalExecutor,
    available_executors,
    check_executor,
    executor_names,
    make_executor,
)

MakeExecutor = Callable[..., Executor]
WAIT = 60  # seconds a result may take (a Ray worker may have to start first)


class _Board:
    """Records what jobs did, as files under ``root``, from any thread or process: how many
    jobs run on each device at once (a clash is a device running more than ``slots``), which
    devices were used, and named marks (e.g. one per run of a job)."""

    def __init__(self, root: Path, slots: int = 1) -> None:
        self.root, self.slots = root, slots
        for d in ("held", "used", "marks", "clash", "peak"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def mark(self, name: str) -> None:
        (self.root / "marks" / f"{name}.{uuid.uuid4().hex}").touch()

    def claim(self, name: str) -> int:
        """The next number of ``name``, 1, 2, 3, ..., each handed out once (an exclusive
        file create): two jobs that mark and then count can both count the same total."""
        i = 1
        while True:
            try:
                os.close(os.open(self.root / "marks" / f"{name}#{i}", os.O_CREAT | os.O_EXCL))
                return i
            except FileExistsError:
                i += 1

    def marks(self, prefix: str = "") -> Counter[str]:
        return Counter(p.name.rsplit(".", 1)[0] for p in (self.root / "marks").iterdir()
                       if p.name.startswith(prefix))

    def enter(self, device: str) -> Path:
        me = self.root / "held" / device / uuid.uuid4().hex
        me.parent.mkdir(exist_ok=True)
        me.touch()
        (self.root / "used" / f"{device}.{me.name}").touch()
        here = len(os.listdir(me.parent))
        total = sum(len(os.listdir(d)) for d in (self.root / "held").iterdir())
        if here > self.slots:
            (self.root / "clash" / f"{device}.{me.name}").touch()
        (self.root / "peak" / f"{total}.{here}.{me.name}").touch()
        return me

    def job(self, value: object, seconds: float = 0.01) -> Callable[[str], object]:
        def fn(device: str) -> object:
            me = self.enter(device)
            time.sleep(seconds)
            me.unlink()
            return value

        return fn

    @property
    def clashes(self) -> list[str]:
        return [p.name.rsplit(".", 1)[0] for p in (self.root / "clash").iterdir()]

    @property
    def used(self) -> Counter[str]:
        return Counter(p.name.rsplit(".", 1)[0] for p in (self.root / "used").iterdir())

    def _peaks(self, i: int) -> int:
        return max((int(p.name.split(".")[i]) for p in (self.root / "peak").iterdir()),
                   default=0)

    @property
    def peak(self) -> int:
        return self._peaks(0)

    @property
    def peak_per_device(self) -> int:
        return self._peaks(1)


def _wait_for(path: Path, timeout_s: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def board(tmp_path: Path) -> _Board:
    return _Board(tmp_path / "board")


class ExecutorContract:
    """Inherit and supply ``make(max_failures=...) -> Executor``."""

    #: run a real verification through ``submit_job`` (once per executor kind: a variant
    #: of one executor in another device layout sets it False, it costs seconds)
    verifies_jobs = True

    @pytest.fixture
    def make(self) -> Iterator[MakeExecutor]:
        raise NotImplementedError

    def test_every_job_runs_once_and_returns_its_value(self, make: MakeExecutor,
                                                       board: _Board) -> None:
        def job(i: int) -> Callable[[str], int]:
            def fn(device: str) -> int:
                board.mark(f"run-{i}")
                board.mark(f"on-{device}")
                return i * i
            return fn

        with make() as ex:
            futures = [ex.submit(job(i)) for i in range(40)]
            assert [f.result(timeout=WAIT) for f in futures] == [i * i for i in range(40)]
            assert list(ex.map([job(i) for i in range(40, 45)])) == [i * i for i in range(40, 45)]
            devices = ex.devices
        assert board.marks("run-") == Counter(f"run-{i}" for i in range(45))
        assert {k.removeprefix("on-") for k in board.marks("on-")} <= set(devices)

    def test_no_device_runs_more_jobs_than_its_slots(self, make: MakeExecutor,
                                                      board: _Board) -> None:
        with make() as ex:
            board.slots = ex.jobs_per_device
            futures = [ex.submit(board.job(i, 0.005)) for i in range(60)]
            assert [f.result(timeout=WAIT) for f in futures] == list(range(60))
        assert board.clashes == []
        assert board.peak <= len(ex.devices) * ex.jobs_per_device

    def test_every_device_is_used_under_load(self, make: MakeExecutor, board: _Board) -> None:
        with make() as ex:
            for f in [ex.submit(board.job(i, 0.02)) for i in range(6 * len(ex.devices))]:
                f.result(timeout=WAIT)
            assert set(board.used) == set(ex.devices)
        if len(ex.devices) > 1:  # least-busy placement spreads equal jobs evenly
            used = board.used
            assert max(used.values()) - min(used.values()) <= 2, used

    def test_jobs_run_at_once_up_to_the_capacity(self, make: MakeExecutor,
                                                  board: _Board) -> None:
        """As many jobs as the devices' slots hold run at once, not one after another: each
        waits until all have started."""
        def together(n: int) -> Callable[[str], bool]:
            def fn(device: str) -> bool:
                me = board.enter(device)
                board.mark("arrived")
                deadline = time.monotonic() + WAIT
                while board.marks("arrived")["arrived"] < n and time.monotonic() < deadline:
                    time.sleep(0.01)
                me.unlink()
                return board.marks("arrived")["arrived"] >= n
            return fn

        with make() as ex:
            board.slots = ex.jobs_per_device
            capacity = len(ex.devices) * ex.jobs_per_device
            futures = [ex.submit(together(capacity)) for _ in range(capacity)]
            assert [f.result(timeout=2 * WAIT) for f in futures] == [True] * capacity
        assert board.peak == capacity and board.clashes == []

    def test_an_exception_in_the_job_reaches_the_future(self, make: MakeExecutor) -> None:
        def boom(device: str) -> None:
            raise KeyError(f"no such thing on {device}")

        with make(max_failures=5) as ex:
            with pytest.raises(KeyError, match="no such thing"):
                ex.submit(boom).result(timeout=WAIT)
            assert ex.submit(lambda d: "still works").result(timeout=WAIT) == "still works"

    def test_a_failing_device_leaves_the_rotation(self, make: MakeExecutor,
                                                    caplog: pytest.LogCaptureFixture) -> None:
        """Where the executor places jobs itself, a device whose jobs keep raising leaves the
        rotation (unless it is the last); where a cluster's scheduler places them
        (``retires_devices`` False), every failure is told and nothing leaves."""
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
                    results.append(f.result(timeout=WAIT))
                except RuntimeError as e:
                    errors.append(str(e))
            assert all(bad in e for e in errors)
            if len(ex.devices) == 1 or not ex.retires_devices:
                # every job tried, every failure told; the last device stays
                assert len(errors) == 30 and results == []
                assert ex.submit(lambda d: "ok").result(timeout=WAIT) == "ok"
                said = "is the last in rotation" if ex.retires_devices else None
            else:
                # jobs already running on it when it left (its other slots) fail too
                assert 2 <= len(errors) <= 1 + ex.jobs_per_device, errors
                assert len(results) == 30 - len(errors) and bad not in results
                assert ex.submit(flaky).result(timeout=WAIT) != bad
                said = "taken out of rotation: 2 jobs in a row raised; the last: RuntimeError"
        told = [r.getMessage() for r in caplog.records if "rotation" in r.getMessage()]
        if said is None:
            assert told == []
        else:
            assert sum(bad in m and said in m for m in told) == 1, told

    def test_a_success_resets_the_failure_count(self, make: MakeExecutor,
                                                board: _Board) -> None:
        def every_other(device: str) -> str:  # each device: fail, succeed, fail, ...
            if board.claim(f"seen-{device}") % 2:
                raise RuntimeError("odd")
            return device

        # jobs sharing a device may finish out of the order they started in: with k slots,
        # at most k failures can complete between two successes
        with make(max_failures=2) as ex:
            if ex.retires_devices and ex.jobs_per_device > 1:
                ex.max_failures = ex.jobs_per_device + 2  # type: ignore[attr-defined]
            for f in [ex.submit(every_other) for _ in range(8 * len(ex.devices))]:
                f.exception(timeout=WAIT)
            after = _Board(board.root / "after")  # no device left the rotation
            for f in [ex.submit(after.job(i, 0.02)) for i in range(6 * len(ex.devices))]:
                f.result(timeout=WAIT)
            assert set(after.used) == set(ex.devices)

    def test_a_job_becomes_its_verdict(self, make: MakeExecutor) -> None:
        """``submit_job``: a Job record in, its Verdict out (a real verification on CPU:
        Triton's interpreter); a job whose problem file changed raises ProblemError."""
        if not self.verifies_jobs:
            pytest.skip("the same executor verifies a job in another layout's class")
        from kbench.errors import ProblemError
        from kbench.problems import load
        from sandbox.job import Candidate, Job

        spec = load("level1/relu")[0]
        example = Path(__file__).parents[2] / "kbench" / "examples" / "level1" / "relu.py"
        job = Job(str(spec.path), spec.source_hash, Candidate(example.read_text(), "triton"),
                  device="cpu", timing=False)
        with make() as ex:
            v = ex.submit_job(job).result(timeout=600)
            assert v.status.value == "correct", v.reason
            assert v.device in ex.devices and v.shapes
            with pytest.raises(ProblemError, match="the problem file changed"):
                ex.submit_job(Job(str(spec.path), "0" * 16, job.candidate, device="cpu",
                                  timing=False)).result(timeout=WAIT)

    def test_shutdown_waits_for_running_jobs(self, make: MakeExecutor, board: _Board) -> None:
        ex = make()

        def slow(device: str) -> str:
            board.mark("started")
            time.sleep(0.2)
            board.mark("done")
            return device

        futures = [ex.submit(slow) for _ in range(len(ex.devices) * ex.jobs_per_device + 1)]
        deadline = time.monotonic() + WAIT
        while not board.marks("started") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert board.marks("started")
        ex.shutdown(wait=True)
        assert all(f.done() for f in futures)
        assert board.marks("done")["done"] == len(futures)
        with pytest.raises(ExecutorError, match="shut down"):
            ex.submit(slow)

    def test_shutdown_can_cancel_queued_jobs(self, make: MakeExecutor, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        ex = make()
        running = [ex.submit(lambda d: _wait_for(gate))
                   for _ in range(len(ex.devices) * ex.jobs_per_device)]
        queued = [ex.submit(lambda d: "never") for _ in range(3)]
        time.sleep(0.05)
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        gate.touch()
        assert all(f.result(timeout=WAIT) is True for f in running)


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
    verifies_jobs = False

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
    verifies_jobs = False

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


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    pytest.importorskip("ray")
    from tests.test_ray_executor import local_ray

    with local_ray(gpus=2) as address:
        yield address


class TestRay(ExecutorContract):
    """Each job a Ray task holding one (logical) GPU of a local two-GPU instance."""

    @pytest.fixture
    def make(self, ray_cluster: str) -> Iterator[MakeExecutor]:
        made: list[Executor] = []

        def build(max_failures: int = 3) -> Executor:  # Ray's scheduler retires nothing
            made.append(make_executor("ray", devices=["cpu"]))
            return made[-1]

        yield build
        for ex in made:
            ex.shutdown(wait=True)


def test_slots_per_device_are_filled_and_never_exceeded(tmp_path: Path) -> None:
    """With two slots, two jobs share a device at once (so their checks can overlap), a
    third waits, and load spreads over devices before doubling up."""
    holds = _Board(tmp_path / "all", slots=2)
    with LocalExecutor(devices=["cpu", "cpu:1"], jobs_per_device=2) as ex:
        for f in [ex.submit(holds.job(i, 0.05)) for i in range(16)]:
            f.result(timeout=10)
    assert holds.clashes == []
    assert holds.peak_per_device == 2
    assert holds.peak == 4
    first = _Board(tmp_path / "first", slots=2)
    with LocalExecutor(devices=["cpu", "cpu:1"], jobs_per_device=2) as ex:
        a, b = ex.submit(first.job("a", 0.2)), ex.submit(first.job("b", 0.2))
        a.result(timeout=5), b.result(timeout=5)
    assert sorted(first.used) == ["cpu", "cpu:1"]  # one each, not both on the first
    with pytest.raises(ValueError, match="jobs_per_device"):
        LocalExecutor(jobs_per_device=0)


# -- the registry ----------------------------------------------------------------------
def test_local_is_always_available_and_ray_wherever_ray_is_installed() -> None:
    import importlib.util

    assert "local" in available_executors() and "ray" in executor_names()
    assert isinstance(make_executor("local", devices=["cpu"]), LocalExecutor)
    if importlib.util.find_spec("ray") is None:
        with pytest.raises(ConfigError, match="executor 'ray' is not available: .*use 'local'"):
            make_executor("ray")
    else:
        assert "ray" in available_executors()
    with pytest.raises(ConfigError, match="unknown executor 'slurm'; choose one of local, ray"):
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
