"""The Docker backend: what its container may touch, seen from inside it and from the engine;
its limits enforced; and, with no engine, one clear line and a non-zero exit.

The first tests need no engine (only the ``docker`` SDK). Those marked ``engine`` run
against a real Docker engine and the backend's image, and are skipped, saying why, where
there is none (the Backend contract suite runs the backend's honest/crash/timeout/secret
cases; tests/contracts/test_backend_contract.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kbench.problems import load, load_file
from sandbox import Limits, Status, verify
from sandbox.errors import ConfigError
from tests.contracts.test_backend_contract import docker_unusable
from tests.fakes.relu import RELU as _HONEST

docker = pytest.importorskip("docker", reason="the `docker` SDK is not installed (dev extra)")

from sandbox.backends import get_backend  # noqa: E402 - after the SDK check
from sandbox.backends._docker import (  # noqa: E402
    DockerBackend,
    DockerChild,
    _gpu_index,
    container_env,
    engine_status,
    reap_orphans,
)
from sandbox.backends._docker_image import _distributions  # noqa: E402

_FAST = Limits(import_s=120, check_s=60, trials=1, derived_trials=1, max_derived=1)
engine = pytest.mark.skipif(bool(docker_unusable()), reason=str(docker_unusable()))


@pytest.fixture
def no_engine(tmp_path: Path, monkeypatch) -> str:
    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def _kbench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``kbench ARGS`` in a fresh process; the backend and image only as ``env`` says."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("KBENCH_SANDBOX_BACKEND", "KBENCH_DOCKER_IMAGE")}
    return subprocess.run([sys.executable, "-c", "from kbench.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**base, "COLUMNS": "400", **env})


# --- no engine needed -----------------------------------------------------------------------
def test_sandbox_docker_without_engine_is_one_line_and_exit_2(no_engine: str) -> None:
    r = _kbench("--sandbox", "docker", "problems", "list", env={"DOCKER_HOST": no_engine})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: sandbox backend 'docker': no Docker engine answered "
                               f"at {no_engine}"), lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""  # the command itself never ran


def test_env_var_docker_without_engine_fails_eval_in_one_line(no_engine: str) -> None:
    relu = Path(load("level1/relu")[0].path)
    cand = relu.parents[2] / "kbench" / "examples" / "level1" / "relu.py"
    if not cand.exists():
        pytest.skip(f"no example candidate at {cand}")
    r = _kbench("eval", "--problem", "level1/relu", "--candidate", str(cand),
                env={"DOCKER_HOST": no_engine, "KBENCH_SANDBOX_BACKEND": "docker"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no Docker engine answered" in r.stderr and "Traceback" not in r.stderr


def test_unknown_sandbox_name_is_refused() -> None:
    r = _kbench("--sandbox", "dockr", "problems", "list", env={})
    assert r.returncode == 2
    assert "unknown sandbox backend 'dockr'" in r.stderr and "docker" in r.stderr


def _doctor_docker_row(env: dict[str, str]) -> dict[str, str]:
    r = _kbench("doctor", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = [row for row in json.loads(r.stdout)["isolation"] if row["layer"] == "Docker"]
    assert len(rows) == 1
    return rows[0]


def test_doctor_reports_docker_unavailable_without_engine(no_engine: str) -> None:
    row = _doctor_docker_row({"DOCKER_HOST": no_engine})
    assert row["status"] == "unavailable" and "no Docker engine answered" in row["detail"]
    row = _doctor_docker_row({"DOCKER_HOST": no_engine, "KBENCH_SANDBOX_BACKEND": "docker"})
    assert row["status"] == "FAILED"  # asked for, and it cannot run


@engine
def test_doctor_reports_the_engine_and_the_image() -> None:
    row = _doctor_docker_row({})
    assert row["status"] == "not enforced", row
    assert row["detail"].startswith("engine ") and ": present;" in row["detail"], row
    row = _doctor_docker_row({"KBENCH_SANDBOX_BACKEND": "docker"})
    assert row["status"] == "enforced", row
    row = _doctor_docker_row({"KBENCH_DOCKER_IMAGE": "kbench-no-such-image:0"})
    assert row["status"] == "unavailable" and "not present" in row["detail"], row


def test_get_backend_without_engine_raises_config_error(no_engine: str) -> None:
    with pytest.raises(ConfigError, match="no Docker engine answered"):
        get_backend("docker")
    up, detail, present = engine_status()
    assert not up and present is None and no_engine in detail


@pytest.mark.parametrize("var, value", [("KBENCH_DOCKER_PIDS", "many"),
                                        ("KBENCH_DOCKER_CPUS", "0")])
def test_bad_limit_settings_are_one_clear_error(monkeypatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=f"{var}='{value}': expected a positive number"):
        DockerBackend()


def test_container_env_is_the_allowlist_without_host_paths(tmp_path: Path,
                                                          monkeypatch) -> None:
    from sandbox._process import child_env

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")  # would hand the container every GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    for device in ("cpu", "cuda:1"):
        env = container_env(tmp_path, device)
        assert set(env) - set(child_env(tmp_path, device)) <= (
            {"PYTHONPATH", "TRITON_LIBCUDA_PATH"} if device != "cpu" else {"PYTHONPATH"})
        assert not any("sk-ant-secret" in v for v in env.values())
        assert "NVIDIA_VISIBLE_DEVICES" not in env and "PATH" not in env
        assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert container_env(tmp_path, "cpu")["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in container_env(tmp_path, "cuda:1")
    import sandbox

    code_root = str(Path(sandbox.__path__[0]).resolve().parent)
    assert code_root in env["PYTHONPATH"].split(os.pathsep)


def test_gpu_index_follows_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _gpu_index("cuda") == "0" and _gpu_index("cuda:3") == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert _gpu_index("cuda:1") == "5" and _gpu_index("cuda") == "4"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    assert _gpu_index("cuda:1") == "GPU-bbbb"


def test_host_image_holds_what_the_child_imports_and_not_the_orchestrators() -> None:
    names = {d.metadata["Name"].lower().replace("_", "-") for d in _distributions()}
    assert {"torch", "triton", "numpy", "pydantic", "pydantic-core", "sympy"} <= names
    assert not names & {"anthropic", "openai", "docker", "sqlalchemy", "optuna", "kbench"}


# --- a real engine --------------------------------------------------------------------------
def _job(work: Path, device: str = "cpu") -> None:
    spec = load("level1/relu")[0]
    (work / "job.json").write_text(json.dumps({"mode": "candidate", "device": device,
                                               "problem": str(spec.path)}))


@engine
def test_container_as_the_engine_sees_it(tmp_path: Path, monkeypatch) -> None:
    """The engine's own record of the container: every restriction there, and the container
    gone after the child is closed."""
    import sandbox

    monkeypatch.setenv("KBENCH_DOCKER_MEMORY", "3g")
    monkeypatch.setenv("KBENCH_DOCKER_PIDS", "300")
    monkeypatch.setenv("KBENCH_DOCKER_CPUS", "1.5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    backend = DockerBackend()
    work = backend.workdir()
    try:
        _job(work)
        with backend.start(work, "cpu") as child:
            assert isinstance(child, DockerChild)
            info = backend.client.api.inspect_container(child.cid)
            hc, cfg = info["HostConfig"], info["Config"]
            assert hc["ReadonlyRootfs"] is True
            assert hc["NetworkMode"] == "none"
            assert cfg.get("NetworkDisabled", True) is True  # podman does not report it
            dropped = {c.removeprefix("CAP_") for c in hc["CapDrop"]}  # podman lists them
            assert "ALL" in dropped or {"CHOWN", "KILL", "NET_RAW", "SETUID"} <= dropped
            assert "no-new-privileges" in " ".join(hc["SecurityOpt"])
            assert hc["Memory"] == 3 << 30 and hc["MemorySwap"] == 3 << 30
            assert hc["PidsLimit"] == 300 and hc["NanoCpus"] == 1_500_000_000
            assert not hc.get("DeviceRequests")  # a CPU job gets no GPU
            assert hc["Init"] is True
            assert cfg["User"] == f"{os.getuid()}:{os.getgid()}"
            assert not any("sk-test-secret" in e for e in cfg["Env"])
            # host:dest:options (podman adds rprivate,rbind to rw / ro)
            binds = {b.split(":")[0]: set(b.split(":")[2].split(",")) for b in hc["Binds"]}
            assert "rw" in binds[str(work)]
            assert "ro" in binds[str(Path(sandbox.__path__[0]).resolve())]
            assert all("ro" in opts for path, opts in binds.items() if path != str(work))
            assert not any(Path(p) == Path(sandbox.__path__[0]).resolve().parent for p in binds)
            cid = child.cid
        with pytest.raises(docker.errors.NotFound):
            backend.client.api.inspect_container(cid)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


_PROBE = '''
import json, os, socket
from pathlib import Path

import sandbox

seen = {"uid": os.getuid(), "pid1": Path("/proc/1/cmdline").read_bytes().split(b"\\0")[0].decode()}
seen["cap_eff"] = [l.split()[1] for l in Path("/proc/self/status").read_text().splitlines()
                   if l.startswith(("CapEff", "NoNewPrivs"))]
try:
    socket.create_connection(("10.255.255.1", 9), timeout=3).close()
    seen["net"] = "connected"
except OSError as e:
    seen["net"] = type(e).__name__ + ": " + str(e)
for where in ("/usr/kbench-probe", "/kbench-probe", str(Path(sandbox.__file__).parent / "x")):
    try:
        Path(where).write_text("x")
        seen[where] = "written"
    except OSError as e:
        seen[where] = type(e).__name__
Path("own-dir-probe").write_text("x")  # the job directory is writable
root = Path(sandbox.__file__).resolve().parents[1]
seen["repo_root_listing"] = sorted(os.listdir(root))
seen["env_keys"] = sorted(os.environ)
raise RuntimeError("PROBE" + json.dumps(seen) + "END")
'''


@engine
def test_candidate_inside_has_no_network_and_cannot_write_outside_its_job(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    spec = load("level1/relu")[0]
    v = verify(spec, textwrap.dedent(_PROBE) + _HONEST, device="cpu", limits=_FAST,
               isolation=DockerBackend(), static_policy=False)
    assert v.status is Status.COMPILE_ERROR and "PROBE" in v.reason, v.reason
    seen = json.loads(v.reason.split("PROBE", 1)[1].split("END", 1)[0])
    assert seen["net"].startswith("OSError") and "unreachable" in seen["net"], seen["net"]
    assert seen["/usr/kbench-probe"] != "written" and seen["/kbench-probe"] != "written"
    assert [v for k, v in seen.items() if k.endswith("/x")] == ["OSError"]  # code is read-only
    assert seen["uid"] == os.getuid()
    assert int(seen["cap_eff"][0], 16) == 0, seen["cap_eff"]  # no capability, even as root
    assert seen["cap_eff"][1] == "1"  # no-new-privileges
    assert Path(seen["pid1"]).name in ("docker-init", "tini", "podman-init", "catatonit")
    # only kbench's child-side packages are mounted from the code's root: no .git, no .env,
    # no kbench (orchestrator) package, no pyproject
    assert set(seen["repo_root_listing"]) <= {"sandbox", "reference_ops", "problems"}
    assert "sandbox" in seen["repo_root_listing"]
    assert not any(k.endswith(("_KEY", "_TOKEN", "_SECRET")) for k in seen["env_keys"])


@engine
def test_memory_limit_kills_the_container(monkeypatch) -> None:
    monkeypatch.setenv("KBENCH_DOCKER_MEMORY", "1g")
    spec = load("level1/relu")[0]
    hog = _HONEST.replace("BLOCK = 256\n", "BLOCK = 256\nimport torch as _t\n"
                          "_HOG = _t.ones(768 << 20, dtype=_t.float32)  # 3 GiB, touched\n")
    backend = DockerBackend()
    v = verify(spec, textwrap.dedent(hog), device="cpu", limits=_FAST, isolation=backend,
               static_policy=False)
    assert v.status is Status.RUNTIME_ERROR, v.reason
    assert "killed by SIGKILL" in v.reason, v.reason
    if not backend.podman:  # podman does not report OOMKilled (cgroup v1 here)
        assert "OOMKilled" in v.reason, v.reason
    assert backend.stale_containers() == []  # killed and removed


@engine
def test_output_flood_is_killed(monkeypatch) -> None:
    spec = load("level1/relu")[0]
    flood = _HONEST.replace("BLOCK = 256\n", "BLOCK = 256\nimport sys as _s\n"
                            "while True:\n    _s.stderr.write('x' * 65536)\n")
    backend = DockerBackend()
    v = verify(spec, textwrap.dedent(flood), device="cpu", limits=_FAST, isolation=backend,
               static_policy=False)
    assert v.status is Status.RUNTIME_ERROR, v.reason
    assert v.reason.startswith("flooded its output during import"), v.reason
    assert backend.stale_containers() == []


_BUILDS_AN_EXTENSION = '''
import subprocess, sys, sysconfig
from pathlib import Path

_SRC = """#include <Python.h>
static PyObject* two(PyObject* s, PyObject* a) { return PyLong_FromLong(2); }
static PyMethodDef M[] = {{"two", two, METH_NOARGS, ""}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "NAME", 0, -1, M};
PyMODINIT_FUNC PyInit_NAME(void) { return PyModule_Create(&D); }
"""
for _cc, _name, _extra in (("cc", "ext_c", ""), ("c++", "ext_cxx", "#include <vector>\\n")):
    _suffix = ".c" if _cc == "cc" else ".cpp"
    Path(_name + _suffix).write_text(_extra + _SRC.replace("NAME", _name))
    _r = subprocess.run([_cc, _name + _suffix, "-O2", "-shared", "-fPIC", "-o", _name + ".so",
                         "-I" + sysconfig.get_paths()["include"]], capture_output=True, text=True)
    if _r.returncode:
        raise RuntimeError(_cc + " failed: " + _r.stderr[-800:])
sys.path.insert(0, ".")
import ext_c, ext_cxx
assert ext_c.two() == 2 and ext_cxx.two() == 2
'''


@engine
def test_image_builds_a_python_extension_as_triton_does_on_a_gpu() -> None:
    """Triton compiles its launcher with ``cc`` against Python.h at first launch on a GPU, and
    load_inline's host code is C++: both builds here, in the job directory of a read-only
    container, then imported."""
    backend = DockerBackend()
    labels = backend.client.images.get(backend.image).labels or {}
    if labels.get("kbench.toolchain") != "cc":
        pytest.skip(f"image {backend.image} was not built with a C toolchain here "
                    f"(label kbench.toolchain={labels.get('kbench.toolchain')!r})")
    spec = load("level1/relu")[0]
    v = verify(spec, textwrap.dedent(_BUILDS_AN_EXTENSION) + _HONEST, device="cpu",
               limits=_FAST, isolation=backend, static_policy=False)
    assert v.status is Status.CORRECT, v.reason


@engine
def test_containers_of_a_dead_orchestrator_are_reaped() -> None:
    """An orchestrator killed with SIGKILL leaves its job's container running (a candidate
    stuck on a GPU would never stop): the next backend made on this host removes it, and
    leaves the containers of a live orchestrator alone."""
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    backend = DockerBackend()
    host = socket.gethostname()
    made = {}
    for who, pid in (("dead", gone.pid), ("alive", os.getpid())):
        made[who] = backend.client.containers.create(
            backend.image, ["python3", "-c", "import time; time.sleep(600)"],
            labels={"kbench.job": f"/nonexistent/{who}", "kbench.owner": f"{host}:{pid}"},
            network_mode="none", ulimits=[docker.types.Ulimit(name=n, soft=1024, hard=1024)
                                          for n in ("nofile", "nproc")]).id
    try:
        backend.client.api.start(made["dead"])
        assert reap_orphans(backend.client) == [made["dead"]]
        with pytest.raises(docker.errors.NotFound):
            backend.client.api.inspect_container(made["dead"])
        backend.client.api.inspect_container(made["alive"])  # still there
    finally:
        for cid in made.values():
            try:
                backend.client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass


@engine
def test_a_gpu_job_where_the_engine_has_no_gpu_runtime_is_one_clear_error(monkeypatch) -> None:
    """device_requests for the job's GPU reach the engine: one without the NVIDIA runtime
    (this machine's, if it has none) refuses them, and that is one ConfigError naming the
    GPU, with no container left behind."""
    backend = DockerBackend()
    runtimes = backend.client.info().get("Runtimes", {})
    if "nvidia" in runtimes:
        pytest.skip("this engine has the NVIDIA runtime: the refusal cannot be shown here")
    if backend.podman:
        pytest.skip("podman: GPU jobs are refused before any container (next test)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    work = backend.workdir()
    try:
        _job(work, device="cuda:1")
        before = set(backend.stale_containers())
        with pytest.raises(ConfigError, match="could not give the container GPU 7"):
            backend.start(work, "cuda:1")
        assert set(backend.stale_containers()) == before
        # the container would have seen its one GPU as cuda:0
        assert json.loads((work / "job.json").read_text())["device"] == "cuda:0"
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


@engine
def test_a_problem_file_outside_kbench_reached_through_a_symlink(tmp_path: Path) -> None:
    """A user's own problem file (not under the mounted packages), named through a symlink:
    it is mounted read-only where the child will open it."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "relu.py").write_text(Path(load("level1/relu")[0].path).read_text())
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    spec = load_file(tmp_path / "link" / "relu.py")
    v = verify(spec, textwrap.dedent(_HONEST), device="cpu", limits=_FAST,
               isolation=DockerBackend())
    assert v.status is Status.CORRECT, v.reason


_THREADS = '''
import threading, time

_stop = threading.Event()
_n = 0
try:
    while _n < 2000:
        threading.Thread(target=_stop.wait, daemon=True).start()
        _n += 1
except RuntimeError as e:
    _why = str(e)
else:
    _why = "none"
_stop.set()
raise RuntimeError(f"PROBE{_n}|{_why}END")
'''


@engine
def test_pids_limit_stops_a_fork_or_thread_bomb(monkeypatch) -> None:
    """Threads count against the container's pids limit: a candidate that starts as many as
    it can is stopped there, and the verdict still comes."""
    monkeypatch.setenv("KBENCH_DOCKER_PIDS", "128")
    spec = load("level1/relu")[0]
    v = verify(spec, textwrap.dedent(_THREADS) + _HONEST, device="cpu", limits=_FAST,
               isolation=DockerBackend(), static_policy=False)
    assert v.status is Status.COMPILE_ERROR and "PROBE" in v.reason, v.reason
    started, why = v.reason.split("PROBE", 1)[1].split("END", 1)[0].split("|", 1)
    assert int(started) < 128 and "can't start new thread" in why, (started, why)


@engine
def test_a_gpu_job_on_podman_is_refused_before_any_container(monkeypatch) -> None:
    """Podman's Docker API accepts device_requests and ignores them (seen with podman 4.3:
    the container started, with no GPU): a GPU job there is one ConfigError, not a child
    that fails later for want of a device."""
    backend = DockerBackend()
    if not backend.podman:
        pytest.skip("the engine is not podman")
    work = backend.workdir()
    try:
        _job(work, device="cuda:0")
        before = set(backend.stale_containers())
        with pytest.raises(ConfigError, match="this engine is podman"):
            backend.start(work, "cuda:0")
        assert set(backend.stale_containers()) == before
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


@engine
def test_a_container_the_engine_refuses_is_one_clear_error(monkeypatch) -> None:
    """A limit the engine will not apply (a 1 KiB memory limit) is one ConfigError quoting
    the engine, raised before any candidate runs, with no container left behind."""
    monkeypatch.setenv("KBENCH_DOCKER_MEMORY", "1k")
    backend = DockerBackend()
    before = set(backend.stale_containers())
    with pytest.raises(ConfigError, match="the engine refused the job's container") as e:
        verify(load("level1/relu")[0], textwrap.dedent(_HONEST), device="cpu", limits=_FAST,
               isolation=backend)
    assert "memory" in str(e.value).lower(), e.value
    assert set(backend.stale_containers()) == before
