"""The local executor on several logical GPUs, without a GPU: least-busy placement, a
timing lock per device (devices never wait on each other, one device's timed phase excludes
its other jobs), a failing device retired with a message, every job run once, and one
baseline measurement per (problem, device model) shared by every worker."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from kbench.executors import LocalExecutor
from sandbox.baselines import MemoryCache, _baselines
from sandbox.cases import _Case
from sandbox.devicelock import DeviceLock, Hold, device_lock
from sandbox.timing import RawTimes

GPUS = ["cuda:0", "cuda:1", "cuda:2"]  # opaque names to the executor; no GPU is touched


def _gated(gate: threading.Event, seen: list[str]):
    def fn(device: str) -> str:
        seen.append(device)
        assert gate.wait(10)
        return device
    return fn


def _wait_running(ex: LocalExecutor, n: int) -> None:
    deadline = time.monotonic() + 10
    while sum(u["running"] for u in ex.usage().values()) < n:
        assert time.monotonic() < deadline, ex.usage()
        time.sleep(0.005)


# -- placement ----------------------------------------------------------------------------
def test_a_job_goes_to_the_fewest_running_then_the_least_busy_gpu() -> None:
    slow = {"cuda:0": 0.3, "cuda:1": 0.05, "cuda:2": 0.15}
    with LocalExecutor(devices=GPUS, jobs_per_device=2) as ex:
        # three at once: one per GPU (fewest running first), each busy for its own time
        first = [ex.submit(lambda d: time.sleep(slow[d]) or d) for _ in range(3)]
        assert sorted(f.result(timeout=10) for f in first) == GPUS
        busy = {d: u["busy_s"] for d, u in ex.usage().items()}
        assert busy["cuda:1"] < busy["cuda:2"] < busy["cuda:0"], busy

        gate, seen = threading.Event(), []
        held = []
        for n in range(4):  # each held until the gate opens, so running counts add up
            held.append(ex.submit(_gated(gate, seen)))
            _wait_running(ex, n + 1)
        gate.set()
        assert [f.result(timeout=10) for f in held] == seen
    # idle GPUs by busy time (1, 2, 0), then a second job where the least busy one is
    assert seen == ["cuda:1", "cuda:2", "cuda:0", "cuda:1"]


def test_a_running_jobs_time_counts_as_busy() -> None:
    """Both GPUs run one job, neither has finished any: the one whose job started earlier
    has been busy longer, so the next job shares the other."""
    gate, seen = threading.Event(), []
    with LocalExecutor(devices=["cuda:0", "cuda:1"], jobs_per_device=2) as ex:
        a = ex.submit(_gated(gate, seen))
        _wait_running(ex, 1)
        time.sleep(0.3)
        b = ex.submit(_gated(gate, seen))
        _wait_running(ex, 2)
        c = ex.submit(_gated(gate, seen))
        _wait_running(ex, 3)
        usage = ex.usage()
        gate.set()
        assert [f.result(timeout=10) for f in (a, b, c)] == ["cuda:0", "cuda:1", "cuda:1"]
    assert usage["cuda:0"]["busy_s"] >= 0.3 > usage["cuda:1"]["busy_s"]
    assert usage["cuda:1"]["running"] == 2


def test_every_job_runs_once_and_a_slow_gpu_gets_fewer() -> None:
    runs: Counter[int] = Counter()
    on: dict[int, str] = {}
    mu = threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def job(i: int):
        def fn(device: str) -> int:
            with mu:
                runs[i] += 1
                on[i] = device
                running[device] += 1
                peak[device] = max(peak[device], running[device])
            time.sleep(0.04 if device == "cuda:0" else 0.01)
            with mu:
                running[device] -= 1
            return i
        return fn

    with LocalExecutor(devices=GPUS, jobs_per_device=2) as ex:
        assert list(ex.map([job(i) for i in range(90)])) == list(range(90))
        usage = ex.usage()
    assert runs == Counter(range(90))
    per = Counter(on.values())
    assert set(per) == set(GPUS) and max(peak.values()) <= 2
    assert per["cuda:0"] < per["cuda:1"] and per["cuda:0"] < per["cuda:2"], per
    assert {d: u["jobs"] for d, u in usage.items()} == dict(per)


def test_each_job_runs_with_its_gpu_current_in_its_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Work that names no index (``torch.cuda.synchronize()``, ``device="cuda"``) lands on
    the job's GPU, not GPU 0: the job's thread has its GPU set current before it starts."""
    torch = pytest.importorskip("torch")
    current = threading.local()  # the index set current in this thread
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)

    def set_device(i: int) -> None:
        current.index = i

    monkeypatch.setattr(torch.cuda, "set_device", set_device)

    def job(device: str) -> tuple[str, int | None]:
        time.sleep(0.01)
        return device, getattr(current, "index", None)

    with LocalExecutor(devices=[*GPUS, "cuda:7", "cpu:0"], jobs_per_device=2) as ex:
        seen = list(ex.map([job] * 20))
    assert {d for d, _ in seen} == {*GPUS, "cuda:7", "cpu:0"}
    for device, index in seen:
        assert index == (int(device[5:]) if device in GPUS else None), seen

    def refuses(i: int) -> None:
        raise RuntimeError(f"CUDA error: cannot set device {i}")

    monkeypatch.setattr(torch.cuda, "set_device", refuses)
    with LocalExecutor(devices=GPUS, max_failures=2) as ex:
        with pytest.raises(RuntimeError, match="cannot set device"):
            ex.submit(lambda d: d).result(timeout=10)


# -- the timing lock is per GPU -----------------------------------------------------------
def test_gpus_never_wait_on_each_others_timing_lock(tmp_path: Path) -> None:
    """Every GPU times at once: a barrier inside each exclusive hold is passed only if no
    GPU's exclusive hold waits for another's."""
    all_timing = threading.Barrier(3, timeout=5)

    def job(device: str) -> str:
        with Hold(DeviceLock(device, root=tmp_path, timeout_s=10)) as hold:
            hold.share()
            hold.exclude()
            all_timing.wait()  # BrokenBarrierError if the holds were serialised
        return device

    with LocalExecutor(devices=GPUS) as ex:
        assert sorted(ex.map([job] * 3)) == GPUS
    assert len({p.name for p in tmp_path.iterdir()}) == 6  # a turnstile and a lock per GPU


def test_one_gpus_timed_phase_excludes_its_other_jobs(tmp_path: Path) -> None:
    """Two jobs per GPU: while one is timed (exclusive), the other's checks (shared) and
    timing wait; the GPUs' timed phases still overlap with each other."""
    mu = threading.Lock()
    spans: dict[str, list[tuple[str, float, float]]] = {d: [] for d in GPUS}

    def job(device: str) -> None:
        with Hold(DeviceLock(device, root=tmp_path, timeout_s=20)) as hold:
            for mode in ("shared", "exclusive"):
                hold.share() if mode == "shared" else hold.exclude()
                t0 = time.monotonic()
                time.sleep(0.1)
                with mu:
                    spans[device].append((mode, t0, time.monotonic()))

    with LocalExecutor(devices=GPUS, jobs_per_device=2) as ex:
        list(ex.map([job] * 6))
    for device, s in spans.items():
        assert len(s) == 4, s
        timed = [x for x in s if x[0] == "exclusive"]
        for mode, a, b in s:  # nothing else on the device while one of its jobs is timed
            for _, ta, tb in timed:
                if (a, b) != (ta, tb):
                    assert b <= ta or a >= tb, (device, mode, s)
        shared = [x for x in s if x[0] == "shared"]
        assert shared[0][1] < shared[1][2] and shared[1][1] < shared[0][2], s  # checks overlap
    first = [min(x[1] for x in s if x[0] == "exclusive") for s in spans.values()]
    last = [max(x[2] for x in s if x[0] == "exclusive") for s in spans.values()]
    assert max(first) < min(last), "the GPUs' timed phases did not overlap"


def test_the_verifiers_lock_registry_keys_one_lock_per_gpu() -> None:
    assert device_lock("cuda:1") is device_lock("cuda:1")
    names = {device_lock(d)._files()[1].name for d in GPUS}
    assert len(names) == 3
    assert DeviceLock("cuda")._files() == DeviceLock("cuda:0")._files()  # the same card


# -- retirement ---------------------------------------------------------------------------
def test_a_gpu_that_keeps_failing_is_retired_with_a_message(
        caplog: pytest.LogCaptureFixture) -> None:
    ran: Counter[int] = Counter()
    mu = threading.Lock()

    def job(i: int):
        def fn(device: str) -> str:
            with mu:
                ran[i] += 1
            if device == "cuda:1":
                raise RuntimeError("CUDA error: unspecified launch failure (Xid 79)")
            time.sleep(0.005)
            return device
        return fn

    caplog.set_level(logging.WARNING, logger="kbench.executors")
    with LocalExecutor(devices=GPUS, max_failures=3) as ex:
        futures = [ex.submit(job(i)) for i in range(40)]
        errors = [f.exception(timeout=10) for f in futures]
        failed = [e for e in errors if e is not None]
        assert len(failed) == 3 and all("Xid 79" in str(e) for e in failed)
        done = [f.result() for f, e in zip(futures, errors) if e is None]
        assert "cuda:1" not in done and set(done) == {"cuda:0", "cuda:2"}
        assert list(ex.retired) == ["cuda:1"]
        assert "3 jobs in a row raised; the last: RuntimeError: CUDA error" in ex.retired["cuda:1"]
        assert ex.usage()["cuda:1"]["retired"] == ex.retired["cuda:1"]
        assert {ex.submit(lambda d: d).result(timeout=10) for _ in range(6)} <= {"cuda:0", "cuda:2"}
    assert ran == Counter(range(40))  # every job ran once: none lost, none repeated
    said = [r.getMessage() for r in caplog.records if "out of rotation" in r.getMessage()]
    assert said == [f"device cuda:1 taken out of rotation: {ex.retired['cuda:1']}"]


def test_the_retirement_message_reaches_stderr_without_logging_set_up() -> None:
    """A run does not configure logging; the warning still shows in its output."""
    code = textwrap.dedent("""
        from kbench.executors import LocalExecutor
        def fn(device):
            if device == "cuda:0":
                raise OSError("device is gone")
            return device
        with LocalExecutor(devices=["cuda:0", "cuda:1"], max_failures=2) as ex:
            for f in [ex.submit(fn) for _ in range(8)]:
                f.exception(timeout=10)
        print(sorted(ex.retired))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['cuda:0']"
    assert ("device cuda:0 taken out of rotation: 2 jobs in a row raised; the last: "
            "OSError: device is gone") in out.stderr


# -- baselines per (problem, device model) --------------------------------------------------
def _fake_gpu(monkeypatch: pytest.MonkeyPatch, names: dict[int, str]) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
        name=names[i], multi_processor_count=132, major=9, minor=0, total_memory=80 * 2**30,
        L2_cache_size=50 * 2**20))


def test_two_gpus_of_one_model_share_a_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.fingerprint import fingerprint, fingerprint_hash

    _fake_gpu(monkeypatch, {0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA H100 80GB HBM3",
                            2: "NVIDIA H200"})
    fp = fingerprint.__wrapped__  # not the process's cached one
    assert fingerprint_hash(fp("cuda:0")) == fingerprint_hash(fp("cuda:1"))
    assert fingerprint_hash(fp("cuda:0")) != fingerprint_hash(fp("cuda:2"))


def test_concurrent_workers_measure_a_baseline_once(tmp_path: Path) -> None:
    """Workers on two GPUs of one model miss the same baseline at once: one measures, the
    other waits and reads it; a different device model measures its own, concurrently."""
    spec = SimpleNamespace(key="level1/relu", source_hash="abc")
    cases = [_Case("main", {"N": 8}, False, True, 1)]
    cache = MemoryCache()
    mu = threading.Lock()
    measured: list[tuple[str, str]] = []
    models_together = threading.Barrier(2, timeout=5)

    def runner(fph: str):
        def run(sub: Path, mode: str, todo: list[_Case]) -> tuple[dict[str, RawTimes], str]:
            with mu:
                measured.append((fph, mode))
            if mode == "eager":
                models_together.wait()  # both models measure at the same time
            time.sleep(0.1)
            ms = [1.0, 1.0, 1.1]
            return {"main": RawTimes(ms, ms)}, ""
        return run

    out: dict[str, dict] = {}

    def worker(name: str, fph: str) -> None:
        work = tmp_path / name
        work.mkdir()
        out[name] = _baselines(spec, cases, work, cache, {"gpu": fph}, fph, runner(fph))

    workers = [threading.Thread(target=worker, args=a) for a in
               (("h100-cuda0", "h100"), ("h100-cuda1", "h100"), ("h200-cuda2", "h200"))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(20)
    assert sorted(measured) == [("h100", "compile"), ("h100", "eager"),
                                ("h200", "compile"), ("h200", "eager")]
    assert out["h100-cuda0"] == out["h100-cuda1"]
    assert out["h100-cuda0"][("main", "eager")].median_ms == 1.0


# -- bench/throughput.py stays runnable -----------------------------------------------------
@pytest.mark.slow
def test_the_throughput_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    """Two Triton candidates through the interpreter, cold then warm: every field the GPU
    run reports is there, and the figures agree with each other."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(root / "bench" / "throughput.py"), "--device", "cpu",
                        "--limit", "2", "--warm-jobs", "3", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["executor"] == "local" and res["devices"] == ["cpu"]
    assert res["mix"] == ["level1/relu.py#0", "level1/softmax.py#0"]
    assert any("relu_cuda.py" in x and "needs a GPU" in x for x in res["left_out"])
    # --warm-jobs 3: one more warm pass, on an executor running three jobs per device
    assert list(res["passes"]) == ["cold", "warm", "warm_j3"]
    assert [p["jobs_per_device"] for p in res["passes"].values()] == [2, 2, 3]
    assert "pass warm_j3: 2 candidates on ['cpu'] (3 jobs per device)" in r.stderr
    for p in res["passes"].values():
        assert p["candidates"] == 2 and p["statuses"] == {"correct": 2}, p["not_verified"]
        assert p["verified"] == 2 and p["not_verified"] == [] and p["devices"] == 1
        assert p["wall_s"] > 0 and p["verified_per_device_minute"] == pytest.approx(
            2 / (p["wall_s"] / 60), rel=1e-2)
        assert p["per_device"] == {"cpu": {"jobs": 2}}
        assert p["gpu_busy_share"] is None and p["timed"] == 0  # no timing on CPU
        assert p["phase_s"]["correctness"] > 0 and p["mean_verdict_wall_s"] > 0
    assert "| cold | local | 1 | 2 | 2 |" in r.stdout and "| warm | local | 1 | 2 | 2 |" in r.stdout
    # progress as it goes (a GPU step cut by its limit still shows where it was)
    for name in ("cold", "warm"):
        assert f"pass {name}: 2 candidates on ['cpu'] (2 jobs per device)" in r.stderr
        assert re.search(rf"^{name}\s+[\d.]+ s\s+2/2\s+level1/\w+\.py#0\s+correct", r.stderr,
                         re.M), r.stderr[-2000:]


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "throughput.py"
    spec = importlib.util.spec_from_file_location("kbench_bench_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_throughput_benchmark_counts_the_builds_where_they_were_made() -> None:
    """A pass's builds are the prebuilds made in the benchmark's own pool, or, for an
    executor that builds in tasks of its own (Ray), what those tasks did during the pass."""
    from collections import Counter

    tp = _bench()
    ray_like = SimpleNamespace(builds=Counter({"built": 3, "cached": 1}), build_wall_s=200.0,
                               _build_slots=4)
    before = (Counter({"built": 1}), 60.0)
    assert tp._pass_builds(Counter(), 0.0, 4, ray_like, before) == {
        "built": 2, "cached": 1, "wall_s": 140.0, "slots": 4, "executor_tasks": True}
    assert tp._pass_builds(Counter({"built": 2}), 12.34567, 4, SimpleNamespace(),
                           (Counter(), 0.0)) == {"built": 2, "wall_s": 12.346, "slots": 4}


def test_the_busy_sampler_reads_nvml_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    util = {"GPU-a": 50, "GPU-b": 100}
    fake = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByUUID=lambda u: u,
                           nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=util[h]))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    s = _bench().BusySampler(["GPU-a", "GPU-b"], period_s=0.01).start()
    time.sleep(0.2)
    got = s.stop()
    assert s.how == "nvml"
    assert got["GPU-a"]["busy_share"] == 0.5 and got["GPU-b"]["busy_share"] == 1.0
    assert got["GPU-a"]["samples"] >= 3


def test_the_busy_sampler_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(textwrap.dedent("""\
        #!/bin/sh
        [ "$1 $2 $3 $4" = "--query-gpu=uuid,utilization.gpu --format=csv,noheader,nounits -lms 100" ] || exit 3
        while true; do printf 'GPU-a, 30\\nGPU-b, 90\\nGPU-other, 5\\n'; sleep 0.02; done
    """))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    s = _bench().BusySampler(["GPU-a", "GPU-b"]).start()
    time.sleep(0.3)
    got = s.stop()
    assert s.how == "nvidia-smi"
    assert got["GPU-a"]["busy_share"] == pytest.approx(0.3)
    assert got["GPU-b"]["busy_share"] == pytest.approx(0.9) and got["GPU-b"]["samples"] >= 2
    assert "GPU-other" not in got


def test_the_mix_and_the_gpu_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    cands, left = bench.mix("cuda", 2, None)
    assert left == [] and len(cands) == 10
    assert Counter(c["backend"] for c in cands) == {"triton": 6, "cuda": 4}
    assert len({c["source"] for c in cands}) == 10  # each a distinct build
    cpu, left = bench.mix("cpu", 2, 3)
    assert [c["example"] for c in cpu] == ["level1/relu.py", "level1/softmax.py",
                                           "level1/matmul.py"]
    assert len(left) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    bench._narrow_gpus(2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with pytest.raises(SystemExit, match="only 2 visible"):
        bench._narrow_gpus(4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    bench._narrow_gpus(2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_torch_gpus_are_matched_to_nvml_uuids(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    bench = _bench()
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(uuid=f"uuid-{i}"))
    assert bench._nvml_uuids(2) == ["GPU-uuid-0", "GPU-uuid-1"]

    def old_torch(i: int) -> None:
        raise AttributeError("no uuid")

    monkeypatch.setattr(torch.cuda, "get_device_properties", old_torch)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, GPU-aaa\\n1, GPU-bbb\\n2, GPU-ccc\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert bench._nvml_uuids(2) == ["GPU-ccc", "GPU-aaa"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    assert bench._nvml_uuids(1) == ["GPU-bbb"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert bench._nvml_uuids(1) == []  # unknown: no busy share rather than a wrong one
    s = bench.BusySampler([]).start()
    assert s.stop() == {} and "unknown" in s.how


def test_a_pass_counts_what_the_executor_returns(tmp_path: Path) -> None:
    """One pass over a fake executor: a job that raises is a counted failure with its
    reason, not the end of the benchmark; per-device jobs come from the verdicts."""
    from concurrent.futures import Future

    from kbench.problems import load
    from sandbox.verdict import Status, Verdict

    bench = _bench()
    cands, _ = bench.mix("cpu", 1, 3)
    specs = {c["problem"]: load(c["problem"])[0] for c in cands}

    class Fake:
        devices = ["lane:0", "lane:1"]
        remote = True

        def __init__(self) -> None:
            self.jobs: list[object] = []

        def submit_job(self, job, *, cache=None):
            self.jobs.append(job)
            f: Future = Future()
            if "relu" in job.problem_path:
                f.set_exception(OSError("worker lost"))
            else:
                f.set_result(Verdict(problem="p", status=Status.CORRECT, device="lane:1",
                                     backend="triton", reason="ok", wall_s=2.0,
                                     phases={"correctness": 1.5}))
            return f

    ex = Fake()
    p = bench.run_pass("warm", ex, cands, specs, None, "cpu", 0, [], 1)
    assert len(ex.jobs) == 3 and {j.candidate.backend for j in ex.jobs} == {"triton"}
    assert p["verified"] == 2 and p["statuses"] == {"correct": 2, "runtime_error": 1}
    assert p["not_verified"] == ["level1/relu.py#0: runtime_error: the job raised OSError: "
                                 "worker lost"]
    assert p["per_device"] == {"lane:0": {"jobs": 0}, "lane:1": {"jobs": 2},
                               "(raised)": {"jobs": 1}}
    assert p["devices"] == 2 and p["phase_s"] == {"correctness": 3.0}
    assert p["verified_per_device_minute"] > 0 and p["gpu_busy_share"] is None


def test_per_gpu_timing_compares_each_shape_across_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same candidates on each GPU in turn (each GPU current while it verifies): per
    timed shape the medians side by side, their difference and the timings' own spread."""
    torch = pytest.importorskip("torch")
    import contextlib

    import sandbox.verifier
    from sandbox.verdict import ShapeResult, Status, Timing, Verdict

    current: list[str | None] = [None]
    calls: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def device(d: str):
        current[0] = d
        yield
        current[0] = None

    def verify(spec, source, *, device, cache):
        assert current[0] == device  # the GPU is current in this thread while it verifies
        calls.append((spec.key, device))
        slow = 1.05 if device == "cuda:1" else 1.0  # cuda:1 is 5 % slower
        shapes = tuple(ShapeResult(n, {}, False, 1, True, timing=Timing(
            ms * slow, 0.01 * ms, ms, ms, 30, 0.0)) for n, ms in (("main", 2.0), ("odd", 1.0)))
        return Verdict(problem=spec.key, status=Status.CORRECT, device=device,
                       backend="triton", reason="ok", shapes=shapes)

    monkeypatch.setattr(torch.cuda, "device", device)
    # (the function in its module: `sandbox.verify` is looked up there on each import, and
    # patching the package attribute would leave the real function cached in it afterwards)
    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    got = _bench().per_gpu_timing(["cuda:0", "cuda:1"], None)
    assert calls == [(p, d) for p in ("level1/relu", "level1/softmax", "level1/matmul")
                     for d in ("cuda:0", "cuda:1")]
    assert len(got["shapes"]) == 6 and got["max_diff_pct"] == pytest.approx(5.0)
    main = got["shapes"][0]
    assert main["candidate"] == "level1/relu.py" and main["shape"] == "main"
    assert main["median_ms"] == {"cuda:0": 2.0, "cuda:1": 2.1}
    assert main["spread_pct"] == pytest.approx(1.0)  # IQR / median of the timings
    assert len(got["beyond_spread"]) == 6  # 5 % apart, 1 % spread: the GPUs differ
    assert set(got["statuses"].values()) == {"correct"}
