"""The device lock: many correctness checks at once, timing alone — across threads and
processes, with a waiting writer not starved by new readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sandbox.devicelock import DeviceLock, Hold


@pytest.fixture
def lock(tmp_path):
    return DeviceLock("cuda:0", root=tmp_path, timeout_s=10)


def test_cpu_devices_are_never_locked(tmp_path):
    lock = DeviceLock("cpu", root=tmp_path)
    with lock.exclusive(), lock.exclusive():  # would deadlock if it were a real lock
        pass
    assert not list(tmp_path.iterdir())


def test_shared_holds_overlap(lock):
    inside = threading.Barrier(3, timeout=5)

    def reader():
        with lock.shared():
            inside.wait()  # all three readers inside at once, or BrokenBarrierError

    ts = [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    with lock.shared():
        inside.wait()
    for t in ts:
        t.join()


def test_exclusive_waits_for_readers_and_excludes_them(lock):
    events: list[str] = []
    reader_in = threading.Event()
    release = threading.Event()

    def reader():
        with lock.shared():
            events.append("reader in")
            reader_in.set()
            release.wait(5)
            events.append("reader out")

    def writer():
        with lock.exclusive():
            events.append("writer in")

    r = threading.Thread(target=reader)
    r.start()
    reader_in.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.2)
    assert "writer in" not in events  # the reader still holds the device
    release.set()
    r.join()
    w.join()
    assert events == ["reader in", "reader out", "writer in"]


def test_a_waiting_writer_goes_before_readers_that_come_after_it(lock):
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first_reader():
        with lock.shared():
            first_in.set()
            release_first.wait(5)

    def writer():
        with lock.exclusive():
            order.append("writer")
            time.sleep(0.1)

    def late_reader():
        with lock.shared():
            order.append("late reader")

    a = threading.Thread(target=first_reader)
    a.start()
    first_in.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.2)  # the writer is now waiting in the turnstile
    b = threading.Thread(target=late_reader)
    b.start()
    time.sleep(0.2)
    assert order == []  # the late reader did not slip in past the waiting writer
    release_first.set()
    for t in (a, w, b):
        t.join()
    assert order == ["writer", "late reader"]


def test_another_process_timing_keeps_this_one_out(tmp_path):
    lock = DeviceLock("cuda:0", root=tmp_path, timeout_s=0.5)
    main = lock._files()[1]
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(main)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="busy"), lock.shared():
            pass
    finally:
        holder.kill()
        holder.wait()
    with lock.shared():  # the holder's exit released it
        pass


def test_a_hold_moves_from_shared_to_exclusive_without_deadlock(lock):
    """Two jobs both checking, then both timing: each gives up its shared hold before it
    asks for the exclusive one, so neither waits on the other forever."""
    done: list[int] = []
    both_shared = threading.Barrier(2, timeout=5)

    def job(i: int) -> None:
        with Hold(lock) as hold:
            hold.share()
            both_shared.wait()
            hold.exclude()
            assert hold.mode == "exclusive"
            done.append(i)

    ts = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert sorted(done) == [0, 1]
    with lock.exclusive():  # nothing left held
        pass


def test_another_process_timing_one_gpu_leaves_the_others_free(tmp_path):
    """Another process holds cuda:0 exclusively: cuda:1 is still free to check and time,
    and cuda:0 stays closed to this process."""
    gpu0 = DeviceLock("cuda:0", root=tmp_path, timeout_s=0.3)
    gpu1 = DeviceLock("cuda:1", root=tmp_path, timeout_s=0.3)
    assert gpu0._files() != gpu1._files()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        import time
        from sandbox.devicelock import DeviceLock
        with DeviceLock("cuda:0", root=Path({str(tmp_path)!r})).exclusive():
            print("held", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with gpu1.shared():
            pass
        with gpu1.exclusive():
            pass
        with pytest.raises(TimeoutError, match="busy"), gpu0.shared():
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_compile_baseline_child_holds_the_device_alone_from_its_start(tmp_path):
    """A ``torch.compile`` baseline's child compiles on the device and Inductor benchmarks
    there while it compiles (pad_mm): it holds the device exclusively from its first moment,
    not shared beside other jobs' checks. Here a real child (CPU, eager mode, no timing)
    under a hold that records the modes it is taken in."""
    from sandbox.backends import default_backend
    from sandbox.job import Limits
    from sandbox.problem import load_file
    from sandbox.verifier import _build_cases, _job, _run_child

    class Recording(Hold):
        modes: list[str] = []

        def _take(self, mode: str) -> None:
            self.modes.append(mode)
            super()._take(mode)

    from pathlib import Path

    spec = load_file(str(Path(__file__).resolve().parents[1] / "problems" / "level1" / "relu.py"))
    limits = Limits()
    for exclusive, first in ((True, "exclusive"), (False, "shared")):
        cases, _ = _build_cases(spec, "cpu", limits, False)
        work = tmp_path / first
        work.mkdir()
        hold = Recording(DeviceLock("cuda:0", root=tmp_path))
        hold.modes = []
        _job(work, "eager", "cpu", cases[:1], limits, spec)
        out = _run_child(work, "cpu", cases[:1], limits, spec, do_time=False, check=False,
                         isolation=default_backend(), hold=hold, exclusive=exclusive)
        assert out.reason in (None, ""), out.reason
        assert hold.modes[0] == first, hold.modes
        assert not exclusive or "shared" not in hold.modes, hold.modes
        assert hold.mode is None  # released when the child ended
