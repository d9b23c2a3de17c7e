"""The Ray executor against a real local Ray instance on CPU (logical GPUs, Triton's
interpreter): ``kbench run --executor ray`` end to end with a replay model, workers that die
mid-job (retried once, then a clear verdict), no secret reaching a worker, and bad input as
one line. One Ray instance serves the module; the executor contract runs in
tests/contracts/test_executor_contract.py."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kbench.store import Store

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
RELU = ROOT / "problems" / "level1" / "relu.py"
EXAMPLE = ROOT / "kbench" / "examples" / "level1" / "relu.py"
SECRET = "sk-kbench-test-secret-0123456789"


@contextlib.contextmanager
def local_ray(gpus: int = 2) -> Iterator[str]:
    """A local Ray instance with ``gpus`` logical GPUs on two CPUs; yields its address.
    Workers import this checkout (jobs of the contract suite are pickled by reference) and
    inherit none of this process's secrets (a developer's own API keys)."""
    from kbench.executors._ray import _without_secrets

    with _without_secrets():
        ctx = ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                       logging_level=logging.ERROR, object_store_memory=100 * 2**20,
                       runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    with local_ray() as address:
        yield address


def kbench(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("KBENCH_STORE", "RAY_ADDRESS")} | (env or {})
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env=full, timeout=timeout)


def _problem(folder: Path, name: str, extra: str) -> Path:
    """The relu problem with ``extra`` code run whenever a process loads the file."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(RELU.read_text() + "\n" + extra)
    return path


# -- the executor on its own ----------------------------------------------------------
def test_a_worker_lost_once_is_retried_and_twice_is_a_clear_error(ray_cluster: str,
                                                                  tmp_path: Path) -> None:
    """Ray retries a task whose worker process dies (max_retries=1): a job that kills its
    worker on the first try returns its value from the second; one that kills it every time
    fails with an ExecutorError naming the workers, and the executor goes on."""
    from kbench.executors import ExecutorError, make_executor

    tries = tmp_path / "tries"
    tries.mkdir()

    def dies_first(device: str) -> int:
        n = len(os.listdir(tries))
        (tries / str(n)).write_text(str(os.getpid()))
        if n == 0:
            os._exit(1)
        return n

    def always_dies(device: str) -> None:
        os._exit(1)

    with make_executor("ray", devices=["cpu"]) as ex:
        assert ex.submit(dies_first).result(timeout=120) == 1
        assert sorted(os.listdir(tries)) == ["0", "1"]
        with pytest.raises(ExecutorError, match=r"the Ray worker running it died on all 2 "
                                                r"tries \(Ray retried it 1x\): worker pid "
                                                r"\d+ on node .+, then worker pid \d+"):
            ex.submit(always_dies).result(timeout=120)
        assert ex.submit(lambda d: "still works").result(timeout=60) == "still works"


def test_no_secret_reaches_a_worker(ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's API keys stay in the driver: the executor passes no environment to its
    tasks, and the Job it ships (a dict) holds none."""
    from kbench.executors import make_executor
    from sandbox.job import Candidate, Job

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with make_executor("ray", devices=["cpu"]) as ex:
        seen = ex.submit(lambda d: {k: v for k, v in os.environ.items()
                                    if "KEY" in k or SECRET in v}).result(timeout=60)
    assert seen == {}
    job = Job(str(RELU), "0" * 16, Candidate(EXAMPLE.read_text(), "triton"), device="cpu")
    assert SECRET not in json.dumps(job.to_dict())


# -- kbench run --executor ray ---------------------------------------------------------
def test_kbench_run_through_ray_stores_verdicts_retries_lost_workers_and_keeps_secrets(
        ray_cluster: str, tmp_path: Path) -> None:
    """A replay run over four problems on the Ray cluster, with an API key in the driver's
    environment: every verdict is stored under its problem; a problem whose file kills the
    worker on the first try is verified on the second; one that kills it every time gets a
    runtime_error verdict naming the lost workers, and the run finishes (exit 0). Each
    problem file notes the process that loads it: the driver has the key, no worker does."""
    probs, seen = tmp_path / "probs", tmp_path / "seen.log"
    in_worker = "'KBENCH_TEST_DRIVER' not in _os.environ"  # the driver has it, workers not
    note = (f"import os as _os\nwith open({str(seen)!r}, 'a') as _f:\n"
            f"    _f.write(f\"{{_os.getpid()}} {{_os.environ.get('OPENAI_API_KEY')}}\\n\")\n")
    _problem(probs, "spy", note)
    _problem(probs, "dies_once", (
        f"import os as _os\n_mark = {str(tmp_path / 'died')!r}\n"
        f"if {in_worker} and not _os.path.exists(_mark):\n"
        "    open(_mark, 'w').close()\n    _os._exit(1)\n"))
    _problem(probs, "dies_always", f"import os as _os\nif {in_worker}:\n    _os._exit(1)\n")
    answer = f"```python\n{EXAMPLE.read_text()}\n```"
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps({"problem": k, "response": answer}) + "\n" for k in
                              ("level1/relu", "spy", "dies_once", "dies_always")))
    r = kbench("run", "--model", f"replay:{replay}", "--problems", f"level1/relu,{probs}",
               "--device", "cpu", "--executor", "ray", "--ray-address", ray_cluster,
               "--name", "on-ray", cwd=tmp_path,
               env={"OPENAI_API_KEY": SECRET, "KBENCH_TEST_DRIVER": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    db = Store(str(tmp_path / "kbench.db"))
    run = db.get_run("on-ray")
    assert run is not None and run.status.value == "finished"
    rows = dict(db.results(run.id))
    assert {k: v["status"] for k, v in rows.items()} == {
        "level1/relu": "correct", "spy": "correct", "dies_once": "correct",
        "dies_always": "runtime_error"}
    assert (tmp_path / "died").exists()  # dies_once did kill its first worker
    why = rows["dies_always"]["reason"]
    assert why.startswith("verification lost: the Ray worker running it died on all 2 tries")
    assert why.count("worker pid") == 2, why
    [lost] = db.candidates_for(run.id, "dies_always")
    assert lost.verdict.verdict().problem == "dies_always"
    [ok] = db.candidates_for(run.id, "level1/relu")
    assert ok.verdict.verdict().problem == "level1/relu"
    assert len(db.llm_calls_for(run.id)) == 4

    lines = [ln.split(" ", 1) for ln in seen.read_text().splitlines()]
    driver = {pid for pid, key in lines if key == SECRET}
    others = [key for pid, key in lines if pid not in driver]
    assert len(driver) == 1, lines  # the driver loaded the file (and has the key) ...
    assert others and set(others) == {"None"}, lines  # ... no worker or child saw it


def test_bad_executor_input_is_one_line(tmp_path: Path) -> None:
    """An unreachable cluster (flag or kbench.toml) and an unknown executor: one line each,
    exit 2, no traceback, no run stored."""
    base = ["run", "--model", f"replay:{ROOT / 'kbench' / 'examples'}", "--problems",
            "level1/relu", "--device", "cpu"]
    for args, cwd, says in [
        (["--executor", "ray", "--ray-address", "127.0.0.1:9"], tmp_path,
         "cannot reach the Ray cluster at 127.0.0.1:9"),
        (["--executor", "nonsense"], tmp_path,
         "unknown executor 'nonsense'; choose one of local, ray"),
    ]:
        r = kbench(*base, *args, cwd=cwd, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    toml = tmp_path / "toml"
    toml.mkdir()
    (toml / "kbench.toml").write_text('executor = "ray"\nray_address = "127.0.0.1:9"\n')
    r = kbench(*base, cwd=toml, timeout=120)
    assert r.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for folder in (tmp_path, toml):
        if (folder / "kbench.db").exists():
            assert Store(str(folder / "kbench.db")).list_runs() == []


@pytest.mark.slow
def test_a_local_instance_started_by_the_executor_gets_no_secret(tmp_path: Path) -> None:
    """Without --ray-address the executor starts a local Ray instance, whose processes
    inherit the environment: it starts them without the driver's secret-looking variables
    (and gives them back to the driver after)."""
    code = (
        "import os\nfrom kbench.executors import make_executor\n"
        "ex = make_executor('ray', devices=['cpu'])\n"
        "seen = ex.submit(lambda d: sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k"
        "))\nprint('worker', seen.result(timeout=120))\nex.shutdown()\n"
        "print('driver', os.environ['OPENAI_API_KEY'], os.environ['HF_TOKEN'])\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"OPENAI_API_KEY": SECRET, "HF_TOKEN": SECRET}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "worker []" in r.stdout and f"driver {SECRET} {SECRET}" in r.stdout, r.stdout



def test_tuning_is_refused_on_ray_before_anything_runs() -> None:
    """Tuning writes its study beside the store, so it stays on the local executor: asking
    for it with Ray is one clear error before any call."""
    from kbench.config import RunConfig
    from kbench.errors import ConfigError
    from kbench.runner import check_tune

    with pytest.raises(ConfigError, match="--tune runs beside the store, on the local "
                                          "executor"):
        check_tune(RunConfig(executor="ray", tune=True), "cuda")
    check_tune(RunConfig(executor="local", tune=True), "cuda")  # local: allowed


def test_tasks_share_a_gpu_as_jobs_per_device_says(ray_cluster: str) -> None:
    """``jobs_per_device`` tasks share one GPU (each holds 1/N of it): on the module's two
    logical GPUs, 1 gives 2 tasks at once, 2 gives 4, 5 gives 10 (1 / 5 does not floor to 9),
    and an explicit ``num_gpus`` wins."""
    from kbench.executors import make_executor

    for per, slots in ((1, 2), (2, 4), (5, 10)):
        with make_executor("ray", devices=["cpu"], jobs_per_device=per) as ex:
            assert ex.jobs_per_device == slots
    with make_executor("ray", devices=["cpu"], jobs_per_device=2, num_gpus=1.0) as ex:
        assert ex.jobs_per_device == 2
    with pytest.raises(ValueError, match="jobs_per_device must be at least 1"):
        make_executor("ray", devices=["cpu"], jobs_per_device=0)


def _marker(job: dict) -> Path:
    """The file a fake task of this job writes (named in the candidate's last line)."""
    return Path(job["candidate"]["source"].rstrip().splitlines()[-1].removeprefix("# marker "))


def _fake_build(job: dict) -> dict:
    """A build task's stand-in: records the resources it holds, returns its node's id."""
    import ray as ray_

    ctx = ray_.get_runtime_context()
    if "FAIL" in job["candidate"]["source"]:
        raise RuntimeError("the build task failed")
    _marker(job).write_text(json.dumps(ctx.get_assigned_resources()))
    return {"node": str(ctx.get_node_id()), "state": "built", "wall_s": 1.5}


def _fake_verify(job: dict, built_on: str | None = None) -> dict:
    """A verification task's stand-in: a correct verdict whose reason says where it ran,
    what it held, whether its build had been made before it started and where."""
    import ray as ray_

    from sandbox.verdict import Status, Verdict

    ctx = ray_.get_runtime_context()
    seen = {"node": str(ctx.get_node_id()), "gpu": ctx.get_assigned_resources().get("GPU"),
            "built_before": _marker(job).exists(), "built_on": built_on}
    return Verdict(problem="relu", status=Status.CORRECT, reason=json.dumps(seen),
                   device="cuda:0", backend=job["candidate"]["backend"]).to_dict()


def test_a_cuda_candidate_is_built_by_a_task_without_a_gpu_then_verified_on_its_node(
        ray_cluster: str, tmp_path: Path) -> None:
    """On a CUDA run, a candidate that builds is built first by a task holding a CPU and no
    GPU share, and its verification (a GPU-share task) starts after it, on the node that
    built it; a Triton candidate goes straight to verification; a failed build task still
    leads to the verification (which builds for itself)."""
    import ray.cloudpickle

    from kbench.executors._ray import RayExecutor
    from sandbox.job import Candidate, Job
    from sandbox.problem import load_file

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = load_file(str(RELU))
    cuda = (ROOT / "kbench" / "examples" / "level1" / "relu_cuda.py").read_text()

    def job(source: str, backend: str, name: str) -> Job:
        return Job(str(RELU), spec.source_hash,
                   Candidate(f"{source}\n# marker {tmp_path / name}\n", backend))

    with RayExecutor(devices=["cuda"], address=ray_cluster, jobs_per_device=2) as ex:
        ex._build_task = ray.remote(num_gpus=0, num_cpus=1, max_retries=0)(_fake_build)
        ex._job_task = ray.remote(num_gpus=0.5, max_retries=0)(_fake_verify)
        futs = {"cuda": ex.submit_job(job(cuda, "cuda", "cuda")),
                "triton": ex.submit_job(job(EXAMPLE.read_text(), "triton", "triton")),
                "failed": ex.submit_job(job(cuda + "\n# FAIL\n", "cuda", "failed"))}
        got = {k: f.result(timeout=120) for k, f in futs.items()}
        builds, wall_s = dict(ex.builds), ex.build_wall_s
    assert builds == {"built": 1, "error": 1} and wall_s == 1.5, (builds, wall_s)  # none for Triton
    assert all(v.status.value == "correct" for v in got.values()), got
    seen = {k: json.loads(v.reason) for k, v in got.items()}
    held = json.loads((tmp_path / "cuda").read_text())
    assert held.get("GPU", 0) == 0 and held.get("CPU") == 1.0, held  # built without a GPU
    node = ray.get_runtime_context().get_node_id()
    assert seen["cuda"] == {"node": node, "gpu": 0.5, "built_before": True, "built_on": node}
    assert not (tmp_path / "triton").exists() and seen["triton"]["built_before"] is False
    assert seen["triton"]["built_on"] is None
    assert not (tmp_path / "failed").exists() and seen["failed"]["gpu"] == 0.5
    assert seen["failed"]["built_on"] is None  # the verification's own task builds


def _cache_holds(job: dict, built_on: str | None = None) -> dict:
    """A verification's stand-in that looks the candidate's build up in this node's cache as
    a verification on a GPU of capability 9.0 would: a correct verdict whose reason says
    whether the cache holds it, where it was built and where this ran."""
    import ray as ray_

    from sandbox import buildcache
    from sandbox.verdict import Status, Verdict

    jc = buildcache.open_job(job["candidate"]["source"], "cuda", "cuda:0", capability="9.0")
    assert jc is not None
    work = jc.workdir()
    try:
        held = bool(work is not None and jc.restore(work))
    finally:
        jc.release()
    seen = {"held": held, "built_on": built_on,
            "node": str(ray_.get_runtime_context().get_node_id())}
    return Verdict(problem="relu", status=Status.CORRECT, reason=json.dumps(seen),
                   device="cuda:0", backend="cuda").to_dict()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ninja") is None or shutil.which("c++") is None,
                    reason="torch's JIT build needs ninja and a C++ compiler on PATH")
def test_the_build_task_builds_into_its_nodes_cache_for_the_gpu_nvidia_smi_names(
        ray_cluster: str, tmp_path: Path) -> None:
    """End to end on a real Ray worker: the build task (no GPU) asks nvidia-smi (a stand-in
    printing 9.0) for the node's GPU, builds the candidate's extension (C++ here: this torch
    has no CUDA) into the node's build cache, and the verification placed after it finds
    the build under the key a 9.0 GPU looks up."""
    import ray.cloudpickle

    from kbench.executors import _ray
    from sandbox.job import Candidate, Job
    from sandbox.problem import load_file
    from tests.test_prebuild import _CPP

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 9.0\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {"env_vars": {"PATH": f"{fake}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
                        "KBENCH_CACHE_DIR": str(tmp_path / "cache")}}
    spec = load_file(str(RELU))
    job = Job(str(RELU), spec.source_hash, Candidate(_CPP, "cuda"), static_policy=False)
    with _ray.RayExecutor(devices=["cuda"], address=ray_cluster, jobs_per_device=2) as ex:
        ex._build_task = ray.remote(num_gpus=0, num_cpus=1, max_retries=0,
                                    runtime_env=env)(_ray._build_job)
        ex._job_task = ray.remote(num_gpus=0.5, max_retries=0, runtime_env=env)(_cache_holds)
        v = ex.submit_job(job).result(timeout=600)
        assert ex.builds == {"built": 1} and ex.build_wall_s > 0, (ex.builds, ex.build_wall_s)
    node = ray.get_runtime_context().get_node_id()
    assert json.loads(v.reason) == {"held": True, "built_on": node, "node": node}, v.reason
    assert any((tmp_path / "cache" / "builds").iterdir())


def test_the_build_task_builds_for_its_nodes_gpu_capability(
        ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build task, which sees no GPU through CUDA, builds for the capability nvidia-smi
    reports (the key its verification on that GPU looks up), returns its node's id, and
    builds nothing where no capability can be told."""
    import shutil
    import subprocess as sp

    import sandbox.prebuild
    from kbench.executors import _ray
    from sandbox.job import Candidate, Job
    from sandbox.problem import load_file

    calls: list[tuple[str, str | None]] = []

    def prebuild(source: str, device: str, **kw: object) -> sandbox.prebuild.Prebuilt:
        calls.append((device, kw.get("capability")))  # type: ignore[arg-type]
        return sandbox.prebuild.Prebuilt("built")

    monkeypatch.setattr(sandbox.prebuild, "prebuild", prebuild)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(sp, "run", lambda *a, **k: sp.CompletedProcess(a, 0, "9.0\n9.0\n", ""))
    _ray._node_capability.cache_clear()
    spec = load_file(str(RELU))
    payload = Job(str(RELU), spec.source_hash, Candidate("x = 1\n", "cuda")).to_dict()
    try:
        assert _ray._node_capability() == "9.0"
        assert _ray._build_job(payload) == {"node": ray.get_runtime_context().get_node_id(),
                                            "state": "built", "wall_s": 0.0}
        assert calls == [("cuda:0", "9.0")]
        monkeypatch.setattr(sp, "run", lambda *a, **k: sp.CompletedProcess(a, 0, "", ""))
        _ray._node_capability.cache_clear()
        assert _ray._node_capability() is None
        assert _ray._build_job(payload) == {"node": None, "state": "untried", "wall_s": 0.0}
        assert calls == [("cuda:0", "9.0")]
    finally:
        _ray._node_capability.cache_clear()


def _pid() -> int:
    return os.getpid()


def _fails() -> None:
    raise KeyError("from the other process")


def test_a_reused_worker_bound_to_another_gpu_runs_the_task_in_its_own_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm worker's CUDA stays bound to the GPU of the task during which it started: a
    later task that Ray gives another GPU runs in a process of its own, which sees that GPU
    (its value or its exception comes back); a task of the same GPU, or one before CUDA
    started, runs in the worker. A real verification (CPU) comes back the same way."""
    from kbench.executors import _ray
    from sandbox.job import Candidate, Job
    from sandbox.problem import load_file

    monkeypatch.setattr(_ray, "_BOUND", None)
    started = [False]
    monkeypatch.setattr(_ray, "_cuda_started", lambda: started[0])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert _ray._bound_run("cuda", _pid) == os.getpid()  # CUDA not started: not bound
    assert _ray._BOUND is None
    started[0] = True
    assert _ray._bound_run("cuda", _pid) == os.getpid()  # CUDA started during it: bound to 1
    assert _ray._BOUND == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert _ray._bound_run("cuda", _pid) != os.getpid()  # another GPU: its own process
    with pytest.raises(KeyError, match="from the other process"):
        _ray._bound_run("cuda", _fails)
    from kbench.executors import ExecutorError

    with pytest.raises(ExecutorError, match=r"own process .* died \(exit 3\)"):
        _ray._bound_run("cuda", functools.partial(os._exit, 3))
    assert _ray._bound_run("cpu", _pid) == os.getpid()  # CPU tasks never move
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert _ray._bound_run("cuda", _pid) == os.getpid()

    spec = load_file(str(RELU))
    job = Job(str(RELU), spec.source_hash, Candidate(EXAMPLE.read_text(), "triton"),
              device="cpu", timing=False)
    got = _ray._apart(functools.partial(_ray._job_here, job.to_dict()))
    assert got["status"] == "correct", got.get("reason")


def test_a_gpu_task_builds_its_candidate_before_the_verification_holds_the_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task on a GPU worker builds a CUDA candidate's extensions (sandbox.prebuild: no GPU,
    no device hold) before run_job verifies it, with the job's own isolation and policy
    switch; a CPU task builds nothing. Built inside the verification, nvcc held the device's
    shared hold and the task sharing the GPU could not be timed meanwhile."""
    import sandbox.job
    import sandbox.prebuild
    from kbench.executors import _ray
    from sandbox.job import Candidate, Job
    from sandbox.problem import load_file
    from sandbox.verdict import Status, Verdict

    calls: list[tuple[str, ...]] = []

    def prebuild(source: str, device: str, **kw: object) -> sandbox.prebuild.Prebuilt:
        calls.append(("prebuild", device, source, repr(kw.get("static_policy")),
                      type(kw.get("isolation")).__name__))
        return sandbox.prebuild.Prebuilt("built")

    def run_job(job: Job, cache: object) -> Verdict:
        calls.append(("verify", job.device))
        return Verdict(problem="relu", status=Status.CORRECT, reason="", device=job.device or "",
                       backend=job.candidate.backend)

    monkeypatch.setattr(sandbox.prebuild, "prebuild", prebuild)
    monkeypatch.setattr(sandbox.job, "run_job", run_job)
    monkeypatch.setattr(_ray, "_node_cache", lambda: None)
    spec = load_file(str(RELU))
    source = (ROOT / "kbench" / "examples" / "level1" / "relu_cuda.py").read_text()
    job = Job(str(RELU), spec.source_hash, Candidate(source, "cuda"), device="cuda",
              static_policy=False, isolation="subprocess")
    assert _ray._job_here(job.to_dict())["status"] == "correct"
    assert calls == [("prebuild", "cuda:0", source, "False", "SubprocessBackend"),
                     ("verify", "cuda:0")]
    calls.clear()
    _ray._job_here(replace(job, device="cpu").to_dict())
    assert calls == [("verify", "cpu")]
    # after a build task of this node tried the build, the verification does not try again;
    # placed on another node (a soft affinity), it builds for itself
    monkeypatch.setattr(_ray, "_node_id", lambda: "node-a")
    calls.clear()
    _ray._job_here(job.to_dict(), "node-a")
    assert [c[0] for c in calls] == ["verify"]
    calls.clear()
    _ray._job_here(job.to_dict(), "node-b")
    assert [c[0] for c in calls] == ["prebuild", "verify"]


@pytest.mark.slow
def test_the_throughput_benchmark_runs_on_ray_on_cpu(tmp_path: Path) -> None:
    """bench/throughput.py on a local Ray instance it starts (CPU, interpreter): both passes
    verify the mix, tasks share the logical GPU as --jobs-per-device says, progress is printed
    per verdict, and the JSON is written after each pass."""
    out = tmp_path / "t.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--device", "cpu",
                        "--limit", "2", "--executor", "ray", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["executor"] == "ray" and res["jobs_per_device"] == 2
    for name in ("cold", "warm"):
        p = res["passes"][name]
        assert p["statuses"] == {"correct": 2}, p["not_verified"]
        assert f"pass {name}: 2 candidates on ['cpu'] (2 jobs per device)" in r.stderr
    assert "| warm | ray | 1 | 2 | 2 |" in r.stdout
