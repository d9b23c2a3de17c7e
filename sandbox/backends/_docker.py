"""Each job's child in its own Docker container, through the ``docker`` SDK.

The container has no network (``network_mode="none"``), a read-only root filesystem, no
capabilities, ``no-new-privileges``, limits on memory (no swap), processes and CPUs, and
runs as the orchestrator's own uid. Mounted, each at its host path: the job directory
(read-write) and, read-only, the code the child needs (the ``sandbox``, ``reference_ops``
and ``problems`` packages, and the problem file). A CUDA job gets exactly one GPU
(``device_requests`` with the job's device, through the NVIDIA container toolkit).

The protocol is the subprocess backend's (``sandbox._child``): the HMAC key, then the
parent's lines, on the container's attached stdin; the signed messages come back on the
attached stdout. Inside, a few lines of Python move the real stdout to fd 3 (the child's
result channel) and point fd 1 at stderr, so whatever the candidate prints lands in the
job's ``child.log``, as with ``subprocess``; a thread splits Docker's multiplexed stream
into the result pipe and the log, and :class:`ChildChannel` reads the pipe as always.

The image needs ``python3`` with torch, Triton and numpy (and pydantic) at the host's
versions; kbench's own code is mounted, never baked in. ``KBENCH_DOCKER_IMAGE`` names it;
the default, :func:`default_image`, is what ``python -m sandbox.backends._docker_image``
builds from this machine's own interpreter (no registry needed). Other settings:
``KBENCH_DOCKER_MEMORY`` (default ``16g``), ``KBENCH_DOCKER_PIDS`` (``1024``),
``KBENCH_DOCKER_CPUS`` (all of this machine's), ``KBENCH_DOCKER_PYTHON`` (``python3``),
``KBENCH_DOCKER_LIBCUDA_DIR`` (where the NVIDIA runtime mounts libcuda in the image:
``/usr/lib/x86_64-linux-gnu``; Triton is pointed there).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import secrets
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from sandbox._process import LOG_CAP, ChildChannel, Exit, child_env, job_dir, signal_name
from sandbox.backends._base import Backend, register_backend
from sandbox.errors import ConfigError

__all__ = ["DockerBackend", "DockerChild", "container_env", "default_image", "engine_status",
           "reap_orphans"]

_SDK = importlib.util.find_spec("docker") is not None
IMAGE_VAR = "KBENCH_DOCKER_IMAGE"
_CODE_PACKAGES = ("sandbox", "reference_ops", "problems")
# Variables of child_env that describe the host's file layout or its GPUs: the image has its
# own PATH and libraries, and the GPU is chosen by device_requests (the NVIDIA runtime reads
# NVIDIA_VISIBLE_DEVICES from the container's environment: passing "all" would undo that).
_HOST_ONLY = ("PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "TRITON_PTXAS_PATH", "CC",
              "CXX", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
# fd 3 becomes the result channel (the real stdout); fd 1 joins stderr (the log).
_BOOT = ("import os, runpy, sys; os.dup2(1, 3); os.dup2(2, 1); "
         "sys.argv = ['sandbox._child', sys.argv[1], '3']; "
         "runpy.run_module('sandbox._child', run_name='__main__', alter_sys=True)")


def default_image() -> str:
    """``$KBENCH_DOCKER_IMAGE``, else ``kbench-sandbox:py3.X-torch<host torch version>``."""
    name = os.environ.get(IMAGE_VAR, "").strip()
    if name:
        return name
    import torch

    v = sys.version_info
    return f"kbench-sandbox:py{v.major}.{v.minor}-torch{torch.__version__.replace('+', '-')}"


_CLIENTS: dict[tuple[int, float, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(timeout: float = 10):  # noqa: ANN202 - docker.DockerClient, imported lazily
    """One client per process, timeout and DOCKER_HOST (every job would otherwise leave a
    connection pool behind); a forked process makes its own."""
    import docker

    key = (os.getpid(), timeout, os.environ.get("DOCKER_HOST", ""))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = docker.from_env(timeout=timeout)
        return client


def _engine_error(e: BaseException) -> ConfigError:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    why = " ".join(str(e).split())[:300]
    return ConfigError(f"sandbox backend 'docker': no Docker engine answered at {host} "
                       f"({type(e).__name__}: {why}); start one (dockerd, or `podman system "
                       "service` with DOCKER_HOST at its socket) or choose another --sandbox")


def _image_error(image: str) -> ConfigError:
    return ConfigError(f"sandbox backend 'docker': image {image!r} not found; build it with "
                       f"`python -m sandbox.backends._docker_image` or name one in ${IMAGE_VAR}")


def engine_status(image: str | None = None) -> tuple[bool, str, bool | None]:
    """``(engine reachable, detail, image present)``; never raises (for ``kbench doctor``).
    ``image present`` is None when the engine could not be asked."""
    if not _SDK:
        return (False, "the `docker` Python SDK is not installed (pip install 'kbench[docker]')",
                None)
    image = image or default_image()
    try:
        client = _client(timeout=3)
        ver = client.version()
    except Exception as e:  # noqa: BLE001 - a report, never a crash
        return False, str(_engine_error(e)), None
    import docker.errors

    try:
        client.images.get(image)
        present = True
    except docker.errors.ImageNotFound:
        present = False
    except Exception:  # noqa: BLE001
        present = None
    return True, f"engine {ver.get('Version', '?')} ({ver.get('Os', '?')}); image {image}", present


_OWNER = "kbench.owner"  # label: "host:pid" of the orchestrator that started the container


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reap_orphans(client: Any) -> list[str]:
    """Remove this host's kbench containers whose orchestrator is gone (killed with SIGKILL
    mid-job: nothing else would stop a candidate stuck on a GPU). Returns their ids."""
    host = socket.gethostname()
    gone = []
    for c in client.containers.list(all=True, filters={"label": _OWNER}):
        owner_host, _, pid = str(c.labels.get(_OWNER, "")).rpartition(":")
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its orchestrator is alive (ours or another kbench's)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        try:
            c.remove(force=True)
            gone.append(c.id)
        except Exception:  # noqa: BLE001 - removed meanwhile
            pass
    return gone


def _package_dirs() -> list[Path]:
    dirs = []
    for name in _CODE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.append(Path(next(iter(spec.submodule_search_locations))).resolve())
    return dirs


def container_env(work: Path, device: str) -> dict[str, str]:
    """``subprocess``'s allowlisted environment (:func:`sandbox._process.child_env`), less
    what names the host's paths or GPUs; PYTHONPATH is the mounted code's."""
    env = {k: v for k, v in child_env(work, device).items() if k not in _HOST_ONLY}
    env["PYTHONPATH"] = os.pathsep.join(sorted({str(d.parent) for d in _package_dirs()}))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # the host's is not mounted
    if not device.startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:  # where the NVIDIA runtime mounts libcuda: Triton's ldconfig -p needs a cache else
        env["TRITON_LIBCUDA_PATH"] = os.environ.get("KBENCH_DOCKER_LIBCUDA_DIR",
                                                    "/usr/lib/x86_64-linux-gnu")
    return env


def _gpu_index(device: str) -> str:
    """The host's id for the job's GPU (``cuda:1`` under ``CUDA_VISIBLE_DEVICES=4,5`` is 5)."""
    idx = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [s.strip() for s in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if s.strip()]
    return visible[idx] if visible else str(idx)


class _SocketWriter:
    """The container's attached stdin as the file-like ``ChildChannel`` writes to."""

    def __init__(self, sock: Any) -> None:
        self.raw = getattr(sock, "_sock", sock)

    def write(self, data: bytes) -> int:
        self.raw.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.raw.close()


class DockerChild(ChildChannel):
    """One job's container, driven exactly as :class:`sandbox._process.Child`; killed and
    removed on exit."""

    def __init__(self, backend: DockerBackend, work: Path, device: str) -> None:
        import docker.errors
        from docker.types import DeviceRequest, Ulimit

        self.work = work
        self.key = secrets.token_bytes(32)
        self.api = backend.client.api
        self.cid: str | None = None
        self.code: int | None = None
        self.oom = False
        self.flooded = False
        self.log = open(work / "child.log", "wb")  # noqa: SIM115 - closed in close()
        self._log_lock = threading.Lock()
        binds = {str(work): {"bind": str(work), "mode": "rw"}}
        for d in _package_dirs():
            binds[str(d)] = {"bind": str(d), "mode": "ro"}
        job = json.loads((work / "job.json").read_text())
        problem = Path(os.path.abspath(job["problem"]))  # the child opens it by this name
        if not any(problem.is_relative_to(d) for d in _package_dirs()):
            binds[str(problem.resolve())] = {"bind": str(problem), "mode": "ro"}
        # Open files and processes: an engine's defaults can exceed what it may set (podman's
        # fail "error setting rlimits" under this host's 20000 / 32768). The container's real
        # cap on processes is pids_limit; nproc counts the uid's processes host-wide.
        limits = [Ulimit(name=name, soft=min(resource.getrlimit(which)[1], cap),
                         hard=min(resource.getrlimit(which)[1], cap))
                  for name, which, cap in (("nofile", resource.RLIMIT_NOFILE, 1 << 16),
                                           ("nproc", resource.RLIMIT_NPROC, 1 << 14))]
        gpu = []
        if device.startswith("cuda") and backend.podman:
            self.log.close()
            raise ConfigError("sandbox backend 'docker': this engine is podman, whose Docker API "
                              "ignores device_requests (the container would start with no GPU); "
                              "GPU jobs need Docker with the NVIDIA container toolkit")
        if device.startswith("cuda"):
            gpu = [DeviceRequest(device_ids=[_gpu_index(device)], capabilities=[["gpu"]])]
            if job["device"] != "cuda:0":  # the container sees its one GPU as cuda:0
                job["device"] = "cuda:0"
                (work / "job.json").write_text(json.dumps(job))
        host = self.api.create_host_config(
            binds=binds, read_only=True, network_mode="none", cap_drop=["ALL"],
            security_opt=["no-new-privileges"], init=True, device_requests=gpu,
            mem_limit=backend.memory, memswap_limit=backend.memory, pids_limit=backend.pids,
            nano_cpus=int(backend.cpus * 1e9), tmpfs={"/tmp": "rw,size=256m,mode=1777"},
            ulimits=limits,
        )
        sock = None
        try:
            self.cid = self.api.create_container(
                backend.image, [backend.python, "-c", _BOOT, str(work)], stdin_open=True,
                tty=False, environment=backend.env(work, device), working_dir=str(work),
                user=f"{os.getuid()}:{os.getgid()}", host_config=host,
                labels={"kbench.job": str(work), _OWNER: _owner()}, network_disabled=True,
            )["Id"]
            sock = self.api.attach_socket(
                self.cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self.api.start(self.cid)
        except BaseException as e:
            if sock is not None:
                sock.close()
            self._remove()
            self.log.close()
            if isinstance(e, docker.errors.ImageNotFound):  # removed since the backend was made
                raise _image_error(backend.image) from e
            if isinstance(e, docker.errors.APIError):  # the engine's set-up, not the candidate
                why = " ".join(str(e.explanation or e).split())[:300]
                if gpu:
                    raise ConfigError(
                        f"sandbox backend 'docker': the engine could not give the container GPU "
                        f"{_gpu_index(device)} ({why}); install the NVIDIA container toolkit "
                        "and register its runtime with the engine") from e
                raise ConfigError(f"sandbox backend 'docker': the engine refused the job's "
                                  f"container ({why})") from e
            raise
        rfd, self._wfd = os.pipe()
        self._sock = sock
        self._pump = threading.Thread(target=self._demux, daemon=True,
                                      name=f"kbench-docker-{self.cid[:12]}")
        self._pump.start()
        self._open(_SocketWriter(sock), rfd)

    def __enter__(self) -> DockerChild:
        return self

    def _demux(self) -> None:
        """Docker's stream, split: stdout (the signed messages) to the pipe, stderr to the
        log, up to ``LOG_CAP`` bytes; more is a flood, and the container is killed. Ends
        when the container's streams close; then the pipe's end says EOF."""
        from docker.utils.socket import STDOUT, frames_iter

        logged = 0
        try:
            for stream, data in frames_iter(self._sock, tty=False):
                if stream == STDOUT:
                    os.write(self._wfd, data)
                    continue
                logged += len(data)
                if logged > LOG_CAP:
                    if not self.flooded:
                        self.flooded = True
                        self._kill_container()
                    continue
                with self._log_lock:
                    self.log.write(data)
        except (OSError, ValueError):
            pass  # the socket was closed under us (kill): the pipe's EOF says the rest
        finally:
            os.close(self._wfd)

    @property
    def pid(self) -> int | None:
        """The child's pid as this host sees it (the verifier's GPU-memory check asks NVML
        about it): the one child of the container's init. None where the engine is not on
        this host or the container is gone."""
        try:
            init = int(self.api.inspect_container(self.cid)["State"]["Pid"])
            kids = Path(f"/proc/{init}/task/{init}/children").read_text().split()
            return int(kids[0]) if kids else None
        except Exception:  # noqa: BLE001 - not known: the check says it could not run
            return None

    def log_tail(self, limit: int = 3000) -> str:
        with self._log_lock:
            return super().log_tail(limit)

    def _wait(self, timeout: float) -> bool:
        """Wait for the container to stop; record its exit code. True when it stopped."""
        import requests

        if self.cid is None or self.code is not None:
            return True
        try:
            res = self.api.wait(self.cid, timeout=max(timeout, 0.1))
        except requests.exceptions.RequestException:  # ReadTimeout, ConnectionError
            return False
        except Exception:  # noqa: BLE001 - the container is gone: nothing left to wait for
            return True
        code = int(res.get("StatusCode", -1))
        # docker-init reports a child killed by signal N as 128 + N (a shell's convention);
        # subprocess's is -N, which signal_name() and the verifier read.
        self.code = -(code - 128) if 128 < code < 128 + 65 else code
        try:
            self.oom = bool(self.api.inspect_container(self.cid)["State"].get("OOMKilled"))
        except Exception:  # noqa: BLE001
            pass
        return True

    def _remove(self) -> None:
        if self.cid is None:
            return
        try:
            self.api.remove_container(self.cid, force=True)
        except Exception:  # noqa: BLE001 - already gone (removed, or the engine is)
            pass

    def _kill_container(self) -> None:
        try:
            self.api.kill(self.cid)
        except Exception:  # noqa: BLE001 - it stopped by itself meanwhile
            pass

    def kill(self) -> None:
        if self.cid is not None and self.code is None:
            self._kill_container()
            self._wait(10)
        self._pump.join(timeout=10)

    def finish(self, grace_s: float = 5.0) -> Exit:
        """Wait briefly for a clean exit (:meth:`_grace`), then kill the container; describe
        how it ended."""
        self._wait(self._grace(grace_s))
        self.kill()
        tail = self.log_tail()
        if self.oom:
            tail += "\n[kbench] the container was killed at its memory limit (OOMKilled)"
        return Exit(self.code, signal_name(self.code), self.timed_out, tail,
                    flooded=self.flooded)

    def close(self) -> None:
        try:
            super().close()
        finally:
            try:
                self._sock.close()
            except OSError:
                pass
            self._remove()


def _number(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    try:
        value = float(raw) if raw else float(default)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{var}={raw!r}: expected a positive number")
    return value


@register_backend(enabled=_SDK, why="the `docker` Python SDK is not installed "
                                    "(pip install 'kbench[docker]')")
class DockerBackend(Backend):
    """Each job's child in a fresh container (see the module's docstring for what it may
    touch). Constructing one asks the engine once: no engine, or no image, is one clear
    ConfigError."""

    name = "docker"

    def __init__(self, image: str | None = None) -> None:
        self.image = image or default_image()
        self.memory = os.environ.get("KBENCH_DOCKER_MEMORY", "16g")
        self.pids = int(_number("KBENCH_DOCKER_PIDS", 1024))
        self.cpus = _number("KBENCH_DOCKER_CPUS", os.cpu_count() or 1)
        self.python = os.environ.get("KBENCH_DOCKER_PYTHON", "python3")
        try:
            self.client = _client()
            self.client.ping()
        except Exception as e:  # noqa: BLE001 - any failure to connect is the same answer
            raise _engine_error(e) from None
        import docker.errors

        parts = self.client.version().get("Components") or []
        self.podman = any("podman" in str(c.get("Name", "")).lower() for c in parts)
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise _image_error(self.image) from None
        reap_orphans(self.client)

    def workdir(self) -> Path:
        return job_dir()

    def env(self, work: Path, device: str) -> dict[str, str]:
        return container_env(work, device)

    def start(self, work: Path, device: str) -> DockerChild:
        return DockerChild(self, work, device)

    def stale_containers(self) -> list[str]:
        """Ids of the kbench job containers on this engine (any orchestrator's)."""
        found = self.client.containers.list(all=True, filters={"label": "kbench.job"})
        return [c.id for c in found]
