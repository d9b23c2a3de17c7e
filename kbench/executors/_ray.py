"""RayExecutor: every job a Ray task holding one GPU, wherever the cluster places it.

A verification travels as its :class:`~sandbox.job.Job` dict and comes back as its
:class:`~sandbox.verdict.Verdict` dict; the LLM calls, the store and the strategy stay in the
driver. Ray retries a task whose worker process dies (``max_retries=1``); a job lost twice
becomes a verdict that says so (:meth:`RayExecutor.submit_job`) or an
:class:`~kbench.executors.ExecutorError` (:meth:`RayExecutor.submit`), never a crash of the
run. Baselines are cached per worker node, in a SQLite file beside the build cache. A CUDA
candidate is first built by a task that holds a CPU and no GPU, into its node's build cache,
and its verification is then placed on that node where a GPU share is free there.

Secrets stay in the driver: a Job carries no environment, the executor passes no environment
to the workers, and a local Ray instance it starts itself is started without the driver's
secret-looking variables (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSW*``, ...).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kbench.executors._base import Executor, ExecutorError

if TYPE_CHECKING:
    from sandbox.baselines import Cache
    from sandbox.job import Job
    from sandbox.verdict import Verdict

__all__ = ["RayExecutor", "connect"]

T = TypeVar("T")
log = logging.getLogger("kbench.executors")

#: environment names a local Ray instance started here never inherits
SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


# -- connecting ---------------------------------------------------------------------------
@contextlib.contextmanager
def _without_secrets() -> Iterator[None]:
    """Hide secret-looking variables from processes started meanwhile (Ray's raylet and its
    workers inherit this process's environment). Ray's own (``RAY_*``: its auth mode and
    token among them) stay: Ray needs them."""
    hidden = {k: os.environ.pop(k) for k in list(os.environ)
              if SECRET_ENV.search(k) and not k.startswith("RAY_")}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`ExecutorError` unless ``host:port`` (or ``ray://host:port``) answers."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                            "or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: "
                            f"{e.strerror or e}") from None


def connect(address: str | None = None, *, local_gpus: int | None = None) -> bool:
    """Connect this process to Ray: the cluster at ``address`` (``HOST:PORT``,
    ``ray://HOST:PORT``, ``auto``), else a local instance started now (with ``local_gpus``
    logical GPUs if given). A process already connected keeps its connection.

    Returns whether a local instance was started here (its owner shuts it down).

    Raises:
        ExecutorError: the cluster cannot be reached (one line).
    """
    import ray

    if ray.is_initialized():
        return False
    if address and address != "auto":
        _reachable(address)
    opts: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                logging_level=logging.ERROR)
    if not address and local_gpus is not None:
        opts["num_gpus"] = local_gpus
    # a local instance's processes inherit this environment; a cluster's do not
    hide = _without_secrets() if not address else contextlib.nullcontext()
    try:
        with hide:
            ray.init(address=address or None, **opts)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or "a local Ray instance"
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise ExecutorError(f"cannot connect to {where}: {first}") from None
    return not address


# -- on the worker ------------------------------------------------------------------------
_NODE_CACHE: Any = None


def node_cache_path() -> Path:
    """This node's baselines cache: ``$KBENCH_CACHE_DIR/ray-baselines.db`` (default
    ``~/.cache/kbench``), shared by every worker process of the node."""
    from sandbox._cachedir import cache_base

    return cache_base() / "ray-baselines.db"


def _node_cache() -> Cache:
    global _NODE_CACHE
    if _NODE_CACHE is None:
        from kbench.store import Store

        path = node_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        _NODE_CACHE = Store(str(path))
    return _NODE_CACHE


def _worker_device(kind: str | None) -> str:
    """The device a task uses: Ray makes the GPU it holds ``cuda:0`` (CUDA_VISIBLE_DEVICES);
    a CPU run (logical GPUs, Triton's interpreter) uses ``cpu``."""
    return "cpu" if (kind or "cpu").startswith("cpu") else "cuda:0"


_WHEREABOUTS = "kbench-whereabouts"


class _Whereabouts:
    """A Ray actor of the driver's job: where each task attempt ran (node, pid), so that a
    job whose worker died can say which. Keeps the latest ``keep`` tasks."""

    def __init__(self, keep: int = 10_000) -> None:
        from collections import OrderedDict

        self.keep = keep
        self.seen: OrderedDict[str, list[str]] = OrderedDict()

    def ran(self, task_id: str, where: str) -> None:
        self.seen.setdefault(task_id, []).append(where)
        self.seen.move_to_end(task_id)
        while len(self.seen) > self.keep:
            self.seen.popitem(last=False)

    def where(self, task_id: str) -> list[str]:
        return self.seen.pop(task_id, [])


def _report() -> None:
    """Tell the driver's whereabouts actor where this attempt runs (before any work, so
    that it is known if the worker dies); a failure to tell is no failure of the job."""
    import ray

    try:
        ctx = ray.get_runtime_context()
        where = f"worker pid {os.getpid()} on node {ray.util.get_node_ip_address()}"
        ray.get(ray.get_actor(_WHEREABOUTS).ran.remote(ctx.get_task_id(), where), timeout=10)
    except Exception as e:  # noqa: BLE001 - only the lost-worker message is poorer
        log.debug("could not report where the task runs: %s", e)


#: the CUDA_VISIBLE_DEVICES of the task during which this worker started CUDA: its CUDA
#: context stays bound to that GPU for the life of the process, whatever Ray gives its
#: later tasks (ray-project/ray#29624)
_BOUND: str | None = None


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _here(assigned: str) -> bool:
    """Whether a task given the GPU(s) ``assigned`` (its CUDA_VISIBLE_DEVICES) can run in
    this worker process: its CUDA has not started, or started on those."""
    return _BOUND is None or _BOUND == assigned


def _note(assigned: str) -> None:
    """After a task: the worker is bound to ``assigned`` if CUDA started meanwhile."""
    global _BOUND
    if _BOUND is None and _cuda_started():
        _BOUND = assigned


def _apart_child(src: str, out: str) -> None:
    """In the fresh process of :func:`_apart`: run the pickled call in ``src``, write
    ``(True, value)`` or ``(False, exception)`` to ``out``."""
    import ray.cloudpickle as cloudpickle

    call = cloudpickle.loads(Path(src).read_bytes())
    try:
        got: tuple[bool, Any] = (True, call())
    except BaseException as e:  # noqa: BLE001 - it travels back to the task
        got = (False, e)
    try:
        data = cloudpickle.dumps(got)
    except Exception as e:  # noqa: BLE001 - an unpicklable value or exception, said in words
        why = f"{type(got[1]).__name__}: {got[1]}" if not got[0] else \
            f"its value cannot be pickled: {e}"
        data = cloudpickle.dumps((False, RuntimeError(why)))
    Path(out).write_bytes(data)


def _apart(call: Callable[[], T]) -> T:
    """``call()`` in a fresh process of this worker's environment (so it sees the GPU this
    task was given): its value, or its exception raised here. Slower by the imports."""
    import subprocess
    import tempfile

    import ray.cloudpickle as cloudpickle

    with tempfile.TemporaryDirectory(prefix="kbench-ray-apart-") as d:
        src, out = Path(d) / "call.pkl", Path(d) / "got.pkl"
        src.write_bytes(cloudpickle.dumps(call))
        code = "import sys; from kbench.executors._ray import _apart_child; _apart_child(*sys.argv[1:])"
        r = subprocess.run([sys.executable, "-c", code, str(src), str(out)],
                           capture_output=True, text=True, env=dict(os.environ))
        if not out.exists():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExecutorError(f"the task's own process (for this worker's new GPU) died "
                                f"(exit {r.returncode}): {last[:300]}")
        ok, value = cloudpickle.loads(out.read_bytes())
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _bound_run(kind: str | None, call: Callable[[], T]) -> T:
    """``call()`` in this worker, warm, unless its CUDA is bound to another GPU than the one
    this task was given: then in a process of its own."""
    if not _worker_device(kind).startswith("cuda"):
        return call()
    assigned = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not _here(assigned):
        return _apart(call)
    try:
        return call()
    finally:
        _note(assigned)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # a warm worker keeps no blocks a child could use


def _build_first(job: Job, device: str, capability: str | None = None) -> tuple[str, float]:
    """Build a CUDA candidate's extensions on this node before its verification starts
    (:func:`sandbox.prebuild.prebuild`: a child that sees no GPU; a build the node's cache
    holds is restored at once). Built inside the verification, nvcc held the device's shared
    hold, so the task sharing this GPU could not be timed for the build's minute: on an
    H100 (2026-12-07) most of a cold 20-candidate mix's verdicts took about 70 s each, the
    local executor's (which builds ahead in a CPU pool) 2-18 s. A failed build is left to
    the verification, which reports it (at once, without building, when the compiler refused
    the sources: ``compile_error``). ``capability``: the GPU's, for a task that sees none.
    Returns what the prebuild did (``built``, ``cached``, ``compile_error``, ``skipped``;
    ``failed`` when it raised) and its wall seconds."""
    from sandbox.backends import get_backend
    from sandbox.prebuild import prebuild

    try:
        got = prebuild(job.candidate.source, device, static_policy=job.static_policy,
                       isolation=get_backend(job.isolation) if job.isolation else None,
                       capability=capability)
        log.debug("prebuild: %s %s (%.1f s)", got.state, got.why, got.wall_s)
        return got.state, got.wall_s
    except Exception as e:  # noqa: BLE001 - the verification builds it then
        log.warning("prebuild failed (the verification will build): %s", e)
        return "failed", 0.0


@functools.lru_cache(maxsize=1)
def _node_capability() -> str | None:
    """The CUDA capability of this node's (first) GPU, as a task that holds no GPU can learn
    it: Ray hides the GPUs from such a task's CUDA, not from ``nvidia-smi``. None where it
    cannot be told (no driver here): the verification's own task builds then."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = next((line.strip() for line in out.splitlines() if line.strip()), "")
    return first if re.fullmatch(r"\d+\.\d+", first) else None


def _build_job(job: dict[str, Any]) -> dict[str, Any]:
    """The Ray task that builds a CUDA candidate on CPU cores, holding no GPU, before its
    verification takes one: the build lands in this node's cache under the key the
    verification looks up (the node's GPU capability). Returns ``node``, the node's id, so
    that the verification is placed here and does not try the build again (None: no build
    was tried, the node's GPU capability being unknown), with the prebuild's ``state``
    (``untried`` then) and ``wall_s``. Nothing here decides a verdict."""
    import ray

    from sandbox.job import Job

    cap = _node_capability()
    if cap is None:  # nothing tried here: the verification's task builds
        return {"node": None, "state": "untried", "wall_s": 0.0}
    state, wall_s = _build_first(Job.from_dict(job), "cuda:0", capability=cap)
    return {"node": str(ray.get_runtime_context().get_node_id()), "state": state,
            "wall_s": wall_s}


def _job_here(job: dict[str, Any], built_on: str | None = None) -> dict[str, Any]:
    """``built_on``: the node whose build task already tried this candidate's build (its
    cache has the build, or the build failed there and would fail again)."""
    from sandbox.job import Job, run_job

    j = Job.from_dict(job)
    device = _worker_device(j.device)
    if device.startswith("cuda") and not (built_on and built_on == _node_id()):
        _build_first(j, device)
    cache = _node_cache() if device.startswith("cuda") and j.timing else None
    return run_job(replace(j, device=device), cache).to_dict()


def _run_job(job: dict[str, Any], built_on: str | None = None) -> dict[str, Any]:
    """The Ray task of one verification: a Job dict in, a Verdict dict out (``built_on``: see
    :func:`_job_here`). The worker stays warm between tasks (imports, its CUDA context, the
    node's fork server)."""
    _report()
    return _bound_run(job.get("device"), functools.partial(_job_here, job, built_on))


def _node_id() -> str | None:
    """This worker's Ray node id (None outside Ray)."""
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None


def _run_fn(fn: Callable[[str], Any], kind: str) -> Any:
    """The Ray task of a plain job: ``fn(device)``."""
    _report()
    return _bound_run(kind, functools.partial(fn, _worker_device(kind)))


# -- the executor -------------------------------------------------------------------------
def _lost_types() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError,
            rx.OutOfMemoryError)


def _builds(source: str) -> bool:
    """Whether ``source`` builds extensions when imported (a CUDA candidate, whatever the
    run's backend)."""
    from sandbox.policy import detect_backend

    return detect_backend(source) == "cuda"


@dataclass
class _Build:
    payload: dict[str, Any]  # the Job dict
    future: Future[Any]  # the caller's: the verdict, after the build and the verification
    lost: Callable[[str], Any]


@dataclass
class _Queued:
    start: Callable[[], Any]  # submits the task, returns its ObjectRef
    future: Future[Any]
    finish: Callable[[Any], Any]  # the task's value -> the future's value
    lost: Callable[[str], Any]  # why a worker was lost on every try -> value, or raises
    ref: Any = None  # the task's ObjectRef, once started


class RayExecutor(Executor):
    """Each job is a Ray task holding a share of one GPU (``1 / jobs_per_device``); Ray places
    it anywhere on the cluster and retries it once if its worker dies. Tasks sharing a GPU
    overlap their checks and never their timing, as in the local executor (the device lock
    is per physical GPU and per host). At most as many tasks as the cluster's GPUs hold are
    in flight (the rest wait here, so that ``shutdown(cancel_futures=True)`` can
    cancel them); ``devices`` is the one device name tasks see (``cuda:0``: the GPU Ray gave
    them, or ``cpu``) and ``jobs_per_device`` how many may run at once.

    Args:
        devices: ``["cpu"]`` for CPU runs (tasks still hold a GPU, logical on a CPU cluster,
            and Triton runs in its interpreter); anything else means CUDA.
        address: the cluster (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``); None starts a
            local instance unless this process is already connected.
        jobs_per_device: verifications sharing one GPU at once (1: each task holds a whole
            GPU; ``kbench run`` passes its ``--jobs-per-device``, 2 by default).
        num_gpus: the GPU share each task holds, instead of ``1 / jobs_per_device``.
        max_retries: Ray's retries of a task whose worker died.

    Example:
        >>> with RayExecutor(devices=["cpu"]) as ex:  # doctest: +SKIP
        ...     ex.submit(lambda device: device).result()
        'cpu'
    """

    remote = True
    retires_devices = False

    def __init__(self, devices: Sequence[str] | None = None, *, address: str | None = None,
                 jobs_per_device: int = 1, num_gpus: float | None = None,
                 max_retries: int = 1) -> None:
        if num_gpus is None:
            if jobs_per_device < 1:
                raise ValueError("jobs_per_device must be at least 1")
            num_gpus = 1.0 / jobs_per_device
        if num_gpus <= 0 or max_retries < 0:
            raise ValueError("num_gpus must be positive and max_retries at least 0")
        cpu = bool(devices) and all(d.startswith("cpu") for d in devices or ())
        self._kind = "cpu" if cpu else "cuda"
        self.tries = max_retries + 1
        self._owns = connect(address, local_gpus=1 if cpu else None)
        import ray

        gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus < num_gpus:
            self._close_ray()
            raise ExecutorError(
                f"the Ray cluster{f' at {address}' if address else ''} has {gpus:g} GPUs; each "
                f"verification holds {num_gpus:g} (for CPU runs declare logical ones: "
                "ray start --num-gpus N)")
        # how many tasks fit the cluster's GPUs (rounded first: 1.0 // (1 / 5) is 4.0)
        self._slots = max(1, int(round(gpus / num_gpus, 6)))
        # Workers stay warm between tasks (max_calls=0): a fresh worker per GPU task (Ray's
        # own default) paid its start, the imports and a CUDA context every verification
        # (on an H100, 2026-12-07, the local executor verified a 20-candidate mix cold and
        # warm in 122 s; Ray had not finished in 300 s). A worker that has touched CUDA
        # stays bound to the card it first had, and Ray may give its next task another one
        # (ray-project/ray#29624): such a task runs in a process of its own (_bound_run).
        opts = dict(num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False,
                    max_calls=0)
        self._job_task = ray.remote(**opts)(_run_job)
        self._fn_task = ray.remote(**opts)(_run_fn)
        # CUDA candidates are built first in tasks that hold a CPU and no GPU, as the local
        # executor builds them in a CPU pool: a build inside the GPU task held its GPU share
        # for nvcc's minute (H100, 2026-12-07: a cold 20-candidate mix with 8 CUDA builds
        # had 13 verdicts after 377 s, the local executor all 20 after 139 s). At most a
        # quarter of the cluster's CPUs build at once, the rest being the verifications'
        # (the Runner's rule for its pool).
        self._build_task = ray.remote(num_gpus=0, num_cpus=1, max_retries=0)(_build_job)
        self._build_slots = max(1, int(float(ray.cluster_resources().get("CPU", 1))) // 4)
        #: what the build tasks did so far: per state (built, cached, skipped, failed,
        #: untried; error: the task itself failed) how many
        self.builds: Counter[str] = Counter()
        #: the build tasks' summed wall seconds
        self.build_wall_s = 0.0
        self._where = ray.remote(_Whereabouts).options(
            name=_WHEREABOUTS, get_if_exists=True, num_cpus=0).remote()
        self._cond = threading.Condition()
        self._queue: deque[_Queued] = deque()
        self._running = 0
        self._builds: deque[_Build] = deque()
        self._building = 0
        self._closed = False
        self._cancelling = False

    @property
    def devices(self) -> list[str]:
        return [_worker_device(self._kind)]

    @property
    def jobs_per_device(self) -> int:
        return self._slots

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, fn: Callable[[str], T]) -> Future[T]:
        def lost(why: str) -> Any:
            raise ExecutorError(why)

        return self._enqueue(lambda: self._fn_task.remote(fn, self._kind), lambda v: v, lost)

    def submit_job(self, job: Job, *, cache: Cache | None = None) -> Future[Verdict]:
        """Ship ``job`` as its dict (``device`` set to this executor's kind); the future
        carries the Verdict. ``cache`` is not used: workers keep one per node."""
        from sandbox.verdict import Status, Verdict

        payload = replace(job, device=self._kind).to_dict()

        def lost(why: str) -> Verdict:
            return Verdict(problem=Path(job.problem_path).stem, status=Status.RUNTIME_ERROR,
                           reason=f"verification lost: {why}", device=self.devices[0],
                           backend=job.candidate.backend)

        if self._kind == "cuda" and _builds(job.candidate.source):
            fut: Future[Verdict] = Future()
            with self._cond:
                if self._closed:
                    raise ExecutorError("the executor is shut down")
                self._builds.append(_Build(payload, fut, lost))
                self._dispatch_builds()
            return fut
        return self._enqueue(lambda: self._job_task.remote(payload), Verdict.from_dict, lost)

    # -- builds ahead of the GPU ------------------------------------------------------------
    def _dispatch_builds(self) -> None:
        """Start queued builds while a build slot is free (caller holds the lock)."""
        while self._builds and self._building < self._build_slots:
            b = self._builds.popleft()
            if b.future.cancelled():
                continue
            try:
                ref = self._build_task.remote(b.payload)
            except Exception as e:  # noqa: BLE001 - its verification builds it then
                log.info("could not start a build task (the verification builds): %s", e)
                self._verify_after(b, None)
                continue
            self._building += 1
            ref.future().add_done_callback(lambda rf, b=b: self._built(rf, b))

    def _built(self, rf: Future[Any], b: _Build) -> None:
        try:
            got: dict[str, Any] = rf.result()
        except BaseException as e:  # noqa: BLE001 - a lost build task: the verification builds
            log.info("build task failed (the verification builds): %s", e)
            got = {"node": None, "state": "error", "wall_s": 0.0}
        node = got.get("node")
        with self._cond:
            self.builds[str(got.get("state"))] += 1
            self.build_wall_s += float(got.get("wall_s") or 0.0)
            self._building -= 1
            self._dispatch_builds()
            if self._cancelling:
                b.future.cancel()
            else:
                self._verify_after(b, node)
            self._cond.notify_all()

    def _verify_after(self, b: _Build, node: str | None) -> None:
        """Queue ``b``'s verification, placed on the node that built it where it can be (a
        soft preference: a node without a free GPU share does not make it wait). Caller
        holds the lock."""
        def start() -> Any:
            task = self._job_task
            if node:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=node, soft=True))
            return task.remote(b.payload, node)

        from sandbox.verdict import Verdict

        self._queue.append(_Queued(start, b.future, Verdict.from_dict, b.lost))
        self._dispatch()

    def _lost_reason(self, e: BaseException, where: list[str]) -> str:
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), "")
        tries = "on its only try" if self.tries == 1 else \
            f"on all {self.tries} tries (Ray retried it {self.tries - 1}x)"
        at = ", then ".join(where) or "where is unknown"
        return f"the Ray worker running it died {tries}: {at} ({type(e).__name__}: {first})"

    def _enqueue(self, start: Callable[[], Any], finish: Callable[[Any], Any],
                 lost: Callable[[BaseException], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise ExecutorError("the executor is shut down")
            self._queue.append(_Queued(start, fut, finish, lost))
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        """Start queued jobs while a GPU is free (caller holds the lock)."""
        while self._queue and self._running < self._slots:
            q = self._queue.popleft()
            if not q.future.set_running_or_notify_cancel():
                continue
            try:
                ref = q.start()
            except Exception as e:  # noqa: BLE001 - e.g. an unpicklable fn: its future says so
                q.future.set_exception(e)
                continue
            self._running += 1
            q.ref = ref
            ref.future().add_done_callback(lambda rf, q=q: self._done(rf, q))

    def _done(self, rf: Future[Any], q: _Queued) -> None:
        from ray.exceptions import RayTaskError

        try:
            q.future.set_result(q.finish(rf.result()))
        except _lost_types() as e:  # asking where it ran waits on Ray: not in its callback
            threading.Thread(target=self._lost, args=(q, e), name="kbench-ray-lost").start()
            return
        except RayTaskError as e:  # the job raised: its own exception, not Ray's wrapper
            q.future.set_exception(e.cause if isinstance(e.cause, BaseException) else e)
        except BaseException as e:  # noqa: BLE001 - it travels to the caller's future
            q.future.set_exception(e)
        self._release()

    def _lost(self, q: _Queued, e: BaseException) -> None:
        import ray

        try:
            where = ray.get(self._where.where.remote(q.ref.task_id().hex()), timeout=10)
        except Exception:  # noqa: BLE001 - the reason says it is unknown
            where = []
        why = self._lost_reason(e, where)
        log.warning("%s", why)
        try:
            q.future.set_result(q.lost(why))
        except BaseException as err:  # noqa: BLE001 - it travels to the caller's future
            q.future.set_exception(err)
        self._release()

    def _release(self) -> None:
        with self._cond:
            self._running -= 1
            self._dispatch()
            self._cond.notify_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            cancelled: list[Future[Any]] = []
            if cancel_futures:
                self._cancelling = True  # builds in flight: no verification after them
                cancelled = [q.future for q in self._queue] + [b.future for b in self._builds]
                self._queue.clear()
                self._builds.clear()
        for f in cancelled:
            f.cancel()
        if not wait:
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._running and not self._queue
                                and not self._building and not self._builds)
        self._close_ray()

    def _close_ray(self) -> None:
        if self._owns:  # a local instance started for this executor
            import ray

            self._owns = False
            ray.shutdown()
