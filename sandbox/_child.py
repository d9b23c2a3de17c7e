"""The child side of verification: the only place candidate code is ever executed.

Run as ``python -m sandbox._child JOB_DIR RESULT_FD``. The parent writes ``job.json`` and the
input files into JOB_DIR, then sends an HMAC key on stdin. Every message back goes through
the file descriptor RESULT_FD as one JSON line signed with that key, so nothing the candidate
prints (stdout is never parsed) and nothing it writes without the key is believed.

Sequence: import the candidate (compile errors surface here), build ``ModelNew`` per shape
after the parent's init seed, run every correctness trial on pointer-stable input buffers
(each trial copies fresh values into the same tensors, so results cached by address go stale),
check type / aliasing / input mutation, save each output for the parent to compare. Then wait
for the parent's ``stop`` or its ``time`` line (JSON: per timed shape, fresh seeds the child
has never seen). Timing makes its own input sets from those seeds (:class:`_TimedSets`), keeps
the outputs of the last few samples, and hands over the one the parent then asks for (the
audit, chosen in secret when timing began) for a check against the reference.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sandbox._inputs import build_model, make_init_inputs, make_inputs, set_constants, timed_seed
from sandbox._provenance import Watch, own_cuda_kernels, own_triton_kernels, watch_extensions
from sandbox.perturb import perturb_inputs

_KEY = b""
_FD = -1


def _send(**msg: Any) -> None:
    body = json.dumps(msg, sort_keys=True)
    mac = hmac.new(_KEY, body.encode(), hashlib.sha256).hexdigest()
    os.write(_FD, (json.dumps({"body": body, "mac": mac}) + "\n").encode())


def _tail(exc: BaseException, limit: int = 4000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-limit:]


def _limits(job: dict[str, Any]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fsize = int(job.get("max_file_bytes", 16 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if job.get("cpu_seconds"):
        s = int(job["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (s, s + 5))
    if job.get("memory_bytes"):  # CPU runs only: CUDA reserves far more address space
        m = int(job["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (m, m))


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _storages(x: Any) -> list[tuple[int, int]]:
    import torch

    if isinstance(x, torch.Tensor):
        st = x.untyped_storage()
        return [(st.data_ptr(), st.data_ptr() + st.nbytes())]
    if isinstance(x, (list, tuple)):
        return [r for y in x for r in _storages(y)]
    return []


def _audit(out: Any, inputs: list[Any], snapshot: list[Any]) -> list[str]:
    """Faults visible only inside this process: wrong type, aliasing, mutated inputs."""
    import torch

    faults = []
    outs = out if isinstance(out, (tuple, list)) else [out]
    for k, o in enumerate(outs):
        tag = f"output[{k}]" if isinstance(out, (tuple, list)) else "output"
        if type(o) is not torch.Tensor:
            faults.append(f"{tag} is {type(o).__module__}.{type(o).__qualname__}, "
                          "expected a plain torch.Tensor")
            continue
        for (lo, hi) in _storages(o):
            for j, x in enumerate(inputs):
                for (a, b) in _storages(x):
                    if lo < b and a < hi and hi > lo:
                        faults.append(f"{tag} shares memory with input {j}: return a new tensor")
    for j, (x, s) in enumerate(zip(inputs, snapshot)):
        if isinstance(x, torch.Tensor) and not torch.equal(x, s):
            faults.append(f"input {j} was modified by the call: inputs must stay unchanged")
    return faults


def _poison(device: str, nbytes: int) -> None:
    """Fill soon-to-be-reused allocator memory with NaN so untouched outputs show."""
    import torch

    n = max(1, min(nbytes, 1 << 30) // 4)
    buf = torch.empty(n, dtype=torch.float32, device=device)
    buf.fill_(float("nan"))
    del buf


def _to_cpu(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").clone() if type(x) is torch.Tensor else None
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(y) for y in x)
    return x


def checksum(xs: list[Any]) -> str:
    """Order-sensitive digest of inputs, equal in both processes for the same seed. Sums run
    in float64 over chunks, so a multi-gigabyte input never gets a float64 copy."""
    import torch

    parts = []
    for x in xs:
        if isinstance(x, torch.Tensor):
            y = x.detach().reshape(-1)
            s1 = s2 = 0.0
            for c in y.split(1 << 24):
                d = c.double() if c.is_floating_point() else c.long().double()
                s1 += float(d.sum())
                s2 += float((d * d).sum())
            ends = f"{float(y[0].double())!r},{float(y[-1].double())!r}" if y.numel() else ""
            parts.append(f"{tuple(x.shape)}:{x.dtype}:{s1!r}:{s2!r}:{ends}")
        else:
            parts.append(repr(x))
    return "|".join(parts)


def _make_inputs(prob: Any, params: dict[str, Any], seed: int, device: str) -> list[Any]:
    """Exactly what sandbox.problem.ProblemSpec.make_inputs does (the same functions), here."""
    set_constants(prob, params)
    return make_inputs(prob, seed, device)


# ATen ops a candidate's forward may dispatch: allocation, views, copies, dtype conversion,
# concatenation. Anything else (mm, relu, softmax, add, sum, ...) is PyTorch doing the work the
# kernel should do -- whether called from Python or from a C++/CUDA extension.
_ALLOWED_ATEN = frozenset({
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
    "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like",
    "new_full", "fill_", "zero_", "arange", "scalar_tensor", "lift_fresh", "lift_fresh_copy",
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "expand", "permute",
    "transpose", "t", "unsqueeze", "squeeze", "flatten", "unflatten", "slice", "select", "narrow",
    "split", "split_with_sizes", "chunk", "unbind", "detach", "alias", "view_as", "movedim",
    "diagonal", "clone", "copy_", "_copy_from", "_copy_from_and_resize", "_to_copy",
    "contiguous", "resize_", "set_", "cat", "stack", "_local_scalar_dense", "is_same_size",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "record_stream",
    "constant_pad_nd",  # F.pad(x, ..., value=c): an allocation and a copy (FlashAttention pads so)
})


# Triton's own files that dispatch torch ops while benchmarking autotune configs (do_bench
# allocates and zeroes its L2 flush buffer, takes quantiles) or moving data for the CPU
# interpreter. Only these are excused; any other Triton frame is traced as usual.
_TRITON_BENCH_FILES = tuple(os.path.join("triton", *p) for p in (
    ("testing.py",), ("runtime", "autotuner.py"), ("runtime", "interpreter.py")))


def _caller_is_triton() -> bool:
    """True if the innermost frame outside torch that dispatched the op is one of Triton's
    benchmarking or interpreter files (:data:`_TRITON_BENCH_FILES`)."""
    f = sys._getframe(2)
    sep = os.sep
    while f is not None and f"{sep}torch{sep}" in f.f_code.co_filename:
        f = f.f_back
    return f is not None and f.f_code.co_filename.endswith(_TRITON_BENCH_FILES)


def _compute_ops(model: Any, bufs: list[Any]) -> tuple[Any, set[str]]:
    """Call the model once while recording the ATen ops it dispatches outside the allowlist
    (from Python or from C++ extension code alike)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Trace(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bad: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func._overloadpacket.__name__
            # An op of another namespace (a custom op the candidate registered) is named as
            # it is, and never passes for an allowed ATen op of the same name.
            ns = getattr(func, "namespace", "aten")
            if (ns != "aten" or name not in _ALLOWED_ATEN) and not _caller_is_triton():
                self.bad.add(f"{ns}.{name}")
            else:
                _SEEN["ops"].add(name)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), _Trace() as trace:
        out = model(*bufs)
    return out, trace.bad


# What the watched calls of this job did, for `kbench eval --explain`: ATen ops dispatched,
# Triton kernels launched, device kernels on the profiled calls.
_SEEN: dict[str, set[str]] = {"ops": set(), "launches": set(), "kernels": set()}


class _Refused(Exception):
    """An audited call during timing broke the rules (the error is already sent)."""


class _Auditor:
    """Turns timed repetitions, chosen at random (from the OS's entropy, which the candidate
    cannot predict), into traced and watched calls: one among the first ``min_reps``, then
    each later one with probability 1/32. Code that behaves only while checked gains
    nothing, since a timed call and an audited call look alike until it is too late."""

    def __init__(self, model: Any, args: Any, prepare: Any, watch: Any, phase: str,
                 min_reps: int) -> None:
        import random

        # args(): the inputs the next call gets (a fresh timed set, as a timed call's)
        self.model, self.args, self.prepare, self.watch, self.phase = (
            model, args, prepare, watch, phase)
        # prepare(i): a timed sample's whole set-up (_TimedSets.ready: the warm call, a
        # synchronize, the fresh sets), so an audited call is set up as a timed one is
        self.rng = random.SystemRandom()
        self.first_at = self.rng.randrange(max(1, min_reps))
        self.seen = 0
        self.count = 0

    def __call__(self, i: int) -> bool:
        k = self.seen
        self.seen += 1
        if not (k == self.first_at or (k > self.first_at and self.rng.random() < 1 / 32)):
            return False
        self.prepare(i)
        _, ok = _watched_call(self.model, self.args(), self.watch(False),
                              f"{self.phase} (an audited timed call)")
        if not ok:
            raise _Refused
        self.count += 1
        return True


def _watched_call(model: Any, bufs: list[Any], watch: Watch, phase: str) -> tuple[Any, bool]:
    """A traced call whose kernels are watched: (output, True), or (None, False) once PyTorch
    compute or a kernel that is not the candidate's own has been reported."""
    with watch:
        out, ops = _compute_ops(model, bufs)
    foreign = watch.foreign()
    _SEEN["launches"].update(f"{n} ({m})" for m, n in watch.launches)
    _SEEN["kernels"].update(watch.all_kernels)
    if watch.excused:
        _send(event="excused", names=sorted(set(watch.excused)))
    if watch.side_streams:
        _send(event="error", phase=phase, kind="policy", message=(
            f"{phase.replace(':', ' ')}: forward put work on a side stream "
            f"({'; '.join(dict.fromkeys(watch.side_streams))}): work outside the current "
            "stream escapes timing; launch every kernel on the current stream"))
        return None, False
    if not ops and not foreign:
        return out, True
    parts = []
    if ops:
        parts.append(f"forward ran PyTorch compute ops {sorted(ops)} (the reference or a vendor "
                     "library doing the work)")
    if foreign:
        parts.append(f"forward ran kernels that are not the candidate's own: "
                     f"{'; '.join(foreign[:8])}")
    where = phase.replace(":", " ")
    _send(event="error", phase=phase, kind="policy", message=(
        f"{where}: " + "; ".join(parts) + ". Every kernel must come from a @triton.jit function or a "
        "load_inline extension defined in the candidate (or from a library the problem or "
        "run allows with --allow-library NAME)"))
    return None, False


def _send_profile(shape: str, watch: Watch, own: set[str]) -> None:
    """The kernel breakdown of a watched, profiled call (sandbox.profile): advisory, so a
    failure to summarise is reported in the message, never as the candidate's error."""
    try:
        from sandbox.profile import kernel_breakdown

        mine = own | {n for m, n in watch.launches if m == "candidate"}
        _send(event="profile", shape=shape, **kernel_breakdown(watch.events, mine))
    except Exception as e:  # noqa: BLE001 - the reason goes with the message
        _send(event="profile", shape=shape, error=f"{type(e).__name__}: {e}")


def _cpu_gap(e: BaseException, device: str) -> str | None:
    """On CPU runs, why Triton's interpreter could not run what a GPU would (then the
    verdict is ``unsupported``, not a fault of the kernel); else None."""
    if device.startswith("cuda"):
        return None
    from sandbox._interp import unsupported

    what = unsupported(e)
    return f"cannot be checked on CPU: {what}" if what else None


def _redraw(prob: Any, init: list[Any], shape: dict[str, Any], model: Any, device: str) -> None:
    """The redrawn-parameter case: build the trusted reference after the same seed, redraw
    its constant tensors from the parent's seed and copy them into the candidate's model."""

    from sandbox.perturb import hand_over, redraw_constant_tensors

    _send(event="need_params", shape=shape["name"])
    seed = int(json.loads(sys.stdin.readline())["seed"])
    ref, _ = build_model(prob.Model, init, shape["init_seed"], device, shape.get("init_on"))
    ref = ref.train(model.training)
    names = redraw_constant_tensors(ref, seed)
    missing = hand_over(ref, model, names)
    del ref
    _send(event="handed_over", shape=shape["name"], missing=missing)


def _drawn_apart(prob: Any, init: list[Any], shape: dict[str, Any], model: Any, device: str,
                 why: str) -> None:
    """ModelNew's constructor failed on the device, where the reference's parameters were
    drawn, so its own were drawn on the CPU and differ from them (same seed, other
    generator). Hand the reference's, drawn as the parent drew them, to the matching
    tensors of ModelNew, as for redrawn parameters; the verdict names what matched nothing."""
    from sandbox.perturb import float_tensors, hand_over

    ref, _ = build_model(prob.Model, init, shape["init_seed"], device, shape.get("init_on"))
    missing = hand_over(ref, model, [n for n, _ in float_tensors(ref)])
    del ref
    _send(event="drawn_apart", shape=shape["name"], why=why, missing=missing[:50])


def _disarm_harness_functions(mod: Any) -> None:
    """KernelBench-style candidates keep the problem's ``get_inputs`` / ``get_init_inputs``
    at the end of the file. kbench never uses them, and code that calls them fails."""

    def disarmed(name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            raise RuntimeError(f"the candidate called its own {name}(): kbench supplies "
                               "inputs; a candidate must not make or read them itself")
        return call

    for name in ("get_inputs", "get_init_inputs"):
        if hasattr(mod, name):
            setattr(mod, name, disarmed(name))


def _hand_over(out: Any, path: str, msg: dict[str, Any]) -> None:
    """Give an output to the parent: by CUDA IPC if it can open it, else through a file.
    The output stays alive (and untouched: nothing else runs) until the parent answers."""
    import torch

    outs = out if isinstance(out, (tuple, list)) else [out]
    shared = None
    if all(isinstance(o, torch.Tensor) and o.is_cuda for o in outs):
        try:
            from sandbox._ipc import describe

            shared = [describe(o) for o in outs]
        except Exception:  # noqa: BLE001 - IPC unavailable: the file path below
            shared = None
    if shared is not None:
        _send(**msg, ipc=shared, tuple=isinstance(out, (tuple, list)))
        if sys.stdin.readline().strip() == "ok":
            return
    torch.save(_to_cpu(out), path)
    _send(**msg, file=path)
    sys.stdin.readline()


def _copy_into(bufs: list[Any], src: list[Any]) -> list[Any]:
    import torch

    out = []
    for b, s in zip(bufs, src):
        if isinstance(b, torch.Tensor) and isinstance(s, torch.Tensor) and b.shape == s.shape:
            b.copy_(s)
            out.append(b)
        else:
            out.append(s)
    return out


# Timed input sets: a pool of distinct pre-made sets if all of them fit this budget (a
# quarter of the device's free memory, at most POOL_CAP_BYTES), else as many buffers as one
# sample's calls need, refilled in place from the next seed before each sample. The cap was
# 2 GiB until protocol 7; 8 GiB gives a pool to sets up to 80 MiB (100 timed sets) and room
# for more refill buffers (below). Refills have a cost in fidelity: the card runs the random
# fills between samples at a lower duty cycle, and compute-bound products read 7-12 % faster
# than sustained (matmul, gemm_bias_relu, swiglu on an H100, 2026-12-07: 1.479 ms refilled
# against 1.643 with one set and 1.646 by do_bench). A pool does not reach them (an fp16
# 8192^2 pair is 256 MiB, 100 sets 25 GiB), and reusing sets would let a value-keyed cache
# hit. With TimingConfig.warm_call (off: see there) each single-call sample is preceded by one
# untimed call on the set timed last (_TimedSets.prepare), finished before the next set is
# made (bench/baseline_crosscheck.py --warm-too measures it).
POOL_CAP_BYTES = 8 << 30


def pool_budget(free_bytes: int) -> int:
    return min(free_bytes // 4, POOL_CAP_BYTES)


def plan_pool(set_bytes: int, n_sets: int, free_bytes: int) -> bool:
    """True: pre-make all ``n_sets`` timed sets (a pool); False: refill in place."""
    return n_sets * max(1, set_bytes) <= pool_budget(free_bytes)


# Refilled in place, the timed sets still take turns in up to this many buffers where memory
# allows: one buffer timed a whole run at one address, and where a kernel's speed depends on
# its inputs' placement, each run got its own offset. With two buffers (softmax's 1 GiB input
# under the 2 GiB cap) five runs' medians spread 1.56 % while their minimums spread 0.18 %
# (H100, 2026-12-07): a median of two placements' samples lands anywhere between them. More
# placements per run average the offset down (a hypothesis: bench/placement_spread.py).
REFILL_SLOTS = 8


def refill_slots(set_bytes: int, free_bytes: int) -> int:
    """Buffers the timed sets rotate through when they are refilled in place."""
    return max(1, min(REFILL_SLOTS, pool_budget(free_bytes) // max(1, set_bytes)))


def _tensor_bytes(xs: list[Any]) -> int:
    import torch

    return sum(x.numel() * x.element_size() for x in xs if isinstance(x, torch.Tensor))


class _TimedSets:
    """The input sets of timing, made from the parent's timed seeds (sent with ``time``, never
    the seeds of the checked calls): call ``c`` (counted over the whole timing) gets the set
    of :func:`sandbox._inputs.timed_seed` ``(seeds, c)`` (a fresh set for every call, however
    many), in buffer ``c % len(slots)``. A pool has a buffer per parent seed, so the first
    ``n`` calls each meet a set at its own address; otherwise the buffers the next sample's
    calls use take turns (up to :data:`REFILL_SLOTS`, as memory allows). Each set is made in
    its buffer by :meth:`fill`, outside the timed region; ``warm(set)``, if given, is the
    untimed call :meth:`prepare` makes before a sample of one call. ``ring`` keeps (sample, seed,
    output, call) of the last ``ring_size`` samples' last calls, whichever the parent audits."""

    def __init__(self, make: Any, seeds: list[int], bufs: list[Any], free_bytes: int,
                 ring_size: int, warm: Any = None) -> None:
        import collections

        self.make, self.seeds, self.warm = make, seeds, warm
        self.size = max(1, _tensor_bytes(bufs))
        self.free = free_bytes
        self.pool = plan_pool(self.size, len(seeds), free_bytes)
        self.slots: list[list[Any]] = [bufs]
        self.slot_seed: list[int | None] = [None]
        self.k = 1  # calls per sample
        self.base = 0  # index of the current sample's first call
        self.next = 0  # index of the next sample's first call
        self.turn = 0
        self.ring: collections.deque[tuple[int, int, Any, int]] = collections.deque(
            maxlen=max(1, ring_size))
        self._grow(len(seeds) if self.pool else refill_slots(self.size, free_bytes))

    def _grow(self, n: int) -> None:
        while len(self.slots) < n:
            self.slots.append([x.clone() if hasattr(x, "clone") else x for x in self.slots[0]])
            self.slot_seed.append(None)

    def _fill(self, c: int) -> list[Any]:
        j, seed = c % len(self.slots), timed_seed(self.seeds, c)
        if self.slot_seed[j] != seed:
            self.slots[j] = _copy_into(self.slots[j], self.make(seed))
            self.slot_seed[j] = seed
        return self.slots[j]

    def on_batch(self, want: int) -> int:
        """Calls per sample: at most one per distinct set a sample can have (each call of a
        batch gets its own buffers and its own seed)."""
        cap = len(self.seeds) if self.pool else max(1, pool_budget(self.free) // self.size)
        self.k = max(1, min(want, cap, len(self.seeds)))
        self._grow(self.k)
        return self.k

    def prepare(self, i: int) -> None:
        """Before sample ``i`` (outside the timed region, followed by a device-wide
        synchronize): with ``warm`` (``TimingConfig.warm_call``), a sample of one call is
        preceded by one untimed call on the set timed last, so the card meets the timed call
        nearer the power state of calls back to back. The next set is not made yet: the
        candidate never runs between a set's making and its timed call."""
        self.base, self.turn = self.next, 0
        self.next += self.k
        if self.warm is not None and self.k == 1 and self.base > 0:
            last = self.base - 1
            self.warm(self.slots[last % len(self.slots)])

    def fill(self, i: int) -> None:
        """Sample ``i``'s sets made in place: queued after :meth:`prepare`'s synchronize, right
        before the flush (``time_cuda``'s ``queue``), outside the timed region."""
        for c in range(self.base, self.base + self.k):
            self._fill(c)

    def ready(self, i: int) -> None:
        """:meth:`prepare`, a device-wide synchronize, :meth:`fill`: an audited call's set-up,
        the same as a timed call's."""
        self.prepare(i)
        _synchronize(self.slots[0])
        self.fill(i)

    def args(self) -> list[Any]:
        """The inputs of the current sample's next call."""
        c = self.base + self.turn
        self.turn += 1
        return self._fill(c)

    def keep(self, i: int, out: Any) -> None:
        last = self.base + max(self.turn, 1) - 1
        self.ring.append((i, timed_seed(self.seeds, last), out, last))


def _synchronize(bufs: list[Any]) -> None:
    """A device-wide synchronize where the sets live on a GPU."""
    import torch

    if any(isinstance(x, torch.Tensor) and x.is_cuda for x in bufs):
        torch.cuda.synchronize()


def _allocator_lost_its_report(e: BaseException) -> bool:
    """PyTorch's CUDA caching allocator, out of memory, asks NVML for each process's usage to
    write its report (``reportProcessMemoryInfo``, called only there); where NVML cannot be
    initialised (in the sandboxed child it cannot: torch warns "Can't initialize NVML"), an
    internal assert replaces the ``OutOfMemoryError`` (H100, torch 2.11, 2026-12-07)."""
    text = str(e)
    return ("INTERNAL ASSERT FAILED" in text and "nvmlInit" in text
            and "CUDACachingAllocator" in text)


# What a candidate can ask torch about the GPU: in a build child, which sees none, the answers
# differ from its verification's, and so may what it builds.
_DEVICE_QUERIES = ("is_available", "device_count", "current_device", "get_device_capability",
                   "get_device_properties", "get_device_name", "get_arch_list",
                   "is_bf16_supported", "mem_get_info", "is_initialized", "init")


def _watch_device_queries(cuda: Any) -> set[str]:
    """Wrap ``torch.cuda``'s device queries; the returned set fills with the names of those
    called from outside torch (the candidate's code), before or during its build."""
    torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(cuda.__file__)))
    asked: set[str] = set()
    for name in _DEVICE_QUERIES:
        orig = getattr(cuda, name, None)
        if orig is None:
            continue

        def query(*a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if not os.path.abspath(caller).startswith(torch_dir + os.sep):
                asked.add(_name)
            return _orig(*a, **k)

        query.__name__ = query.__qualname__ = orig.__name__
        query.__doc__ = orig.__doc__
        setattr(cuda, name, query)
    return asked


# The environment that tells a process which GPUs it has: the build child's (none) differs
# from its verification's, as torch's answers do.
_VISIBILITY_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"})


def _watch_visibility_reads(environ: Any, asked: set[str], torch_dir: str) -> None:
    """Note in ``asked`` each read of ``environ``'s GPU-visibility variables made from outside
    torch (``os.environ[...]``, ``.get``, ``os.getenv``, ``in``), as ``environ[NAME]``."""
    import _collections_abc

    # the frames between the reader and this method: ``os``'s and the mapping mixins' code
    # (a frozen module's is named ``<frozen os>``), this module's
    between = {os.path.abspath(f) for f in (os.__file__, _collections_abc.__file__, __file__)}
    between |= {"<frozen os>", "<frozen _collections_abc>"}
    base = type(environ)

    class _Watched(base):  # type: ignore[misc, valid-type]
        def __getitem__(self, key: Any) -> Any:
            if key in _VISIBILITY_ENV:
                f = sys._getframe(1)
                while f is not None and (f.f_code.co_filename in between or os.path.abspath(
                        f.f_code.co_filename) in between):
                    f = f.f_back
                if f is not None and not os.path.abspath(
                        f.f_code.co_filename).startswith(torch_dir + os.sep):
                    asked.add(f"environ[{key}]")
            return base.__getitem__(self, key)

    environ.__class__ = _Watched


def _build_only(job_dir: Path, job: dict[str, Any]) -> int:
    """``sandbox.prebuild``: import the candidate without a GPU so that its extensions are
    compiled (for the target's architectures) into the job directory, and nothing else.

    An import that fails says whether torch's extension build failed (``build_error``) and
    which device queries the candidate made first (``asked``: torch's device queries and reads
    of the GPU-visibility environment, from outside torch): a failed build that asked
    nothing of the GPU fails the same with one, and :mod:`sandbox.prebuild` hands it to the
    verification (:meth:`sandbox.buildcache.JobCache.note_failure`)."""
    os.environ["TORCH_CUDA_ARCH_LIST"] = str(job["arch"])
    import torch.cuda

    asked = _watch_device_queries(torch.cuda)
    _watch_visibility_reads(os.environ, asked, os.path.dirname(os.path.dirname(
        os.path.abspath(torch.cuda.__file__))))
    _send(event="started", pid=os.getpid())
    try:
        _load_module(job_dir / job["candidate"], "candidate")
    except BaseException as e:  # noqa: BLE001 - trusted harness reports every failure
        build_error = (isinstance(e, RuntimeError)
                       and str(e).startswith("Error building extension"))
        _send(event="error", phase="import", kind="compile", message=_tail(e),
              build_error=build_error, asked=sorted(asked))
        return 1
    _send(event="imported")
    return 0


def _precision_held(job: dict[str, Any], expected: dict[str, Any], at: str) -> bool:
    """Report the precision settings in effect ``at`` a point of the run; a candidate that
    changed them since they were applied is refused (its speed would not be comparable)."""
    from sandbox import precision

    now = precision.read()
    _send(event="precision", at=at, settings=now)
    bad = precision.changed(expected, now)
    if bad and job["mode"] == "candidate":
        _send(event="error", phase=at, kind="policy",
              message=f"changed the matmul precision settings ({bad})")
        return False
    return True


def main() -> int:
    global _KEY, _FD
    job_dir = Path(sys.argv[1])
    _FD = int(sys.argv[2])
    _KEY = bytes.fromhex(sys.stdin.readline().strip())
    job = json.loads((job_dir / "job.json").read_text())
    _limits(job)
    os.chdir(job_dir)
    if job["mode"] == "build":
        return _build_only(job_dir, job)
    phase = "import"
    try:
        import torch

        from sandbox import precision

        # Before any candidate code: the parent's settings, the same for every mode.
        precision.apply(job.get("precision"))
        applied = precision.read()
        device = job["device"]
        if device.startswith("cuda:"):
            torch.cuda.set_device(int(device.split(":", 1)[1]))  # events and the flush follow
        if device.startswith("cuda"):  # every mode alike, before any candidate code
            from sandbox import memcap

            capped = memcap.apply_gpu_cap(torch.cuda, torch.cuda.current_device(),
                                          job.get("gpu_memory_fraction"))
            _send(event="memcap", **capped)
        _send(event="started", pid=os.getpid())
        if not device.startswith("cuda"):
            from sandbox import _cpumath, _interp

            _interp.install()  # CPU runs only: Triton's interpreter made to run as the GPU does
            _cpumath.warm()  # before inputs are drawn: the verifier's, bit for bit
        # The problem module is trusted; it is loaded before any candidate code runs and is
        # used only to make inputs from the seeds the parent sends one trial at a time.
        prob = _load_module(Path(job["problem"]), "kbench_problem")
        if job["mode"] in ("candidate", "ncu"):  # ncu: sandbox.profile, after the verdict
            own_source = (job_dir / job["candidate"]).read_text()
            if device.startswith("cuda"):  # extension calls report their stream to the watch
                import torch.utils.cpp_extension

                watch_extensions(torch.utils.cpp_extension)
            try:
                mod = _load_module(job_dir / job["candidate"], "candidate")
            except BaseException as e:  # noqa: BLE001 - trusted harness reports every failure
                gap = _cpu_gap(e, device)
                _send(event="error", phase="import", kind="unsupported" if gap else "compile",
                      message=gap or _tail(e))
                return 1
            if not _precision_held(job, applied, "import"):
                return 1
            for k, v in (job.get("knobs") or {}).items():
                setattr(mod, k, v)
            cls = getattr(mod, "ModelNew", None)
            if cls is None:
                _send(event="error", phase="import", kind="compile",
                      message="the candidate defines no class ModelNew")
                return 1
            _disarm_harness_functions(mod)
            own_kernels = own_triton_kernels(mod, "candidate") | own_cuda_kernels(own_source)
            libs = tuple(job.get("allow_libraries") or ())

            def watch(profile: bool) -> Watch:
                return Watch("candidate", own_kernels, _ALLOWED_ATEN, libs,
                             profile=profile and device.startswith("cuda"),
                             cuda=device.startswith("cuda"))
        else:
            cls = prob.Model
        _send(event="imported")

        models: dict[str, Any] = {}
        sets: dict[str, list[Any]] = {}
        check_spans: dict[str, float] = {}  # where the check phase's time went (verdict phases)
        for shape in job["shapes"]:
            name = shape["name"]
            trials = int(shape.get("trials") or 0)
            if job.get("stream"):  # the parent makes its reference meanwhile: ask first
                _send(event="need_shape", shape=name)
                reply = json.loads(sys.stdin.readline())
                if reply.get("skip"):
                    continue  # a derived shape the reference fails on
                trials = int(reply["trials"])
                shape = {**shape, "init_on": reply.get("init_on")}
            phase = f"build:{name}"
            set_constants(prob, shape["params"])
            init = make_init_inputs(prob, shape["init_seed"])
            # Drawn where the parent drew the reference's (on the device unless its
            # constructor could not run there), so that equal seeds give equal parameters.
            why: list[str] = []
            model, drawn = build_model(cls, init, shape["init_seed"], device,
                                       shape.get("init_on"), why)
            if drawn == "cpu" and why and job["mode"] == "candidate":
                _drawn_apart(prob, init, shape, model, device, why[0])
            model = model.train(bool(job.get("train", False)))
            if shape.get("redraw") and job["mode"] == "candidate":
                _redraw(prob, init, shape, model, device)
            if job["mode"] == "compile":
                # Static per shape, as a user compiling for that shape gets it: with dynamo's
                # automatic dynamic shapes, every shape after the first got generic kernels
                # (off by -26 % to +41 % on an H100), and past the recompile limit, eager.
                import torch._dynamo

                for knob in ("recompile_limit", "cache_size_limit"):
                    if hasattr(torch._dynamo.config, knob):
                        setattr(torch._dynamo.config, knob,
                                max(getattr(torch._dynamo.config, knob), 64))
                model = torch.compile(model, dynamic=False)
            bufs: list[Any] = []
            for i in range(trials):
                phase = f"inputs:{name}:{i}"
                _send(event="need_inputs", shape=name, trial=i)
                req = json.loads(sys.stdin.readline())
                if req.get("skip"):
                    continue  # a perturbation outside the reference's domain
                src = _make_inputs(prob, shape["params"], int(req["seed"]), device)
                mine = checksum(src)
                if mine != req["checksum"]:
                    _send(event="error", phase=phase, kind="harness", message=(
                        "inputs made in the sandbox differ from the verifier's for the same "
                        "seed: the problem's get_inputs() is not deterministic "
                        f"(sandbox {mine[:300]!r}, verifier {req['checksum'][:300]!r})"))
                    return 1
                own = req.get("kind", "own") == "own"
                if not own:
                    src = perturb_inputs(src, req["kind"], int(req["pseed"]),
                                         bool(req["positive"]))
                    mine = checksum(src)
                    if mine != req["pchecksum"]:
                        _send(event="error", phase=phase, kind="harness", message=(
                            "perturbed inputs made in the sandbox differ from the verifier's "
                            f"for the same seed ({req['kind']}, pseed {req['pseed']}, positive "
                            f"{req['positive']}; sandbox {mine[:300]!r}, verifier "
                            f"{req['pchecksum'][:300]!r})"))
                        return 1
                if i == 0:
                    bufs = [x.clone() if isinstance(x, torch.Tensor) else x for x in src]
                    in_bytes = sum(x.numel() * x.element_size() for x in bufs
                                   if isinstance(x, torch.Tensor))
                phase = f"trial:{name}:{i}"
                bufs = _copy_into(bufs, src)
                del src
                if job["mode"] == "candidate":
                    _poison(device, 2 * in_bytes)
                snapshot = [x.clone() if isinstance(x, torch.Tensor) else x for x in bufs]
                if job["mode"] == "candidate":  # every checked call is traced
                    profiled = bool(req.get("profile"))
                    t_call = time.perf_counter()
                    out, ok = _watched_call(model, bufs, watch(profiled), phase)
                    key = "profiled_calls" if profiled and device.startswith("cuda") else "watched_calls"
                    check_spans[key] = check_spans.get(key, 0.0) + time.perf_counter() - t_call
                    if not ok:
                        return 1
                else:
                    with torch.no_grad():
                        out = model(*bufs)
                    if job["mode"] == "ncu":  # warmed up (compiled, autotuned): measure once
                        from sandbox.profile import ncu_window

                        with ncu_window(), torch.no_grad():
                            out = model(*bufs)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                faults = _audit(out, bufs, snapshot) if job["mode"] == "candidate" else []
                if faults or job["mode"] != "candidate":
                    _send(event="trial", shape=name, trial=i, faults=faults)
                else:
                    _hand_over(out, f"out_{name}_{i}.pt", dict(event="trial", shape=name, trial=i))
                del out, snapshot
            if shape.get("timed"):
                models[name] = model
                sets[name] = [bufs, shape["params"]]
            else:
                del model, bufs
        if job["mode"] == "candidate":
            _send(event="seen", **{k: sorted(v)[:200] for k, v in _SEEN.items()})
        if not _precision_held(job, applied, "trials"):
            return 1
        _send(event="checked", spans=check_spans)

        line = sys.stdin.readline().strip()
        cmd = json.loads(line) if line.startswith("{") else {"cmd": line}
        if cmd.get("cmd") != "time":
            return 0
        from sandbox.timing import TimingConfig, time_cuda

        cfg = TimingConfig(**job.get("timing", {}))
        ring_size = int(cmd.get("ring", 4))
        for name, model in models.items():
            phase = f"timing:{name}"
            bufs, params = sets[name]
            free = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else 0

            def make(seed: int, params: dict[str, Any] = params) -> list[Any]:
                return _make_inputs(prob, params, seed, device)

            # Fresh sets from the seeds sent with "time": the checked sets are never timed.
            t_sets = time.perf_counter()
            def warm(sets: list[Any], model: Any = model) -> None:
                with torch.no_grad():
                    model(*sets)

            ts = _TimedSets(make, [int(x) for x in cmd["shapes"][name]["seeds"]], bufs, free,
                            ring_size, warm if cfg.warm_call else None)
            t_sampling = time.perf_counter()

            def call(model: Any = model, ts: _TimedSets = ts) -> Any:
                with torch.no_grad():
                    return model(*ts.args())

            audit = None
            if job["mode"] == "candidate":
                audit = _Auditor(model, ts.args, ts.ready, watch, phase, cfg.min_reps)
            try:
                raw = time_cuda(call, ts.prepare, cfg,
                                ts.keep if job["mode"] == "candidate" else None, audit,
                                on_batch=ts.on_batch, queue=ts.fill)
            except _Refused:
                return 1
            t_traced = time.perf_counter()
            if job["mode"] == "candidate":
                # one more call, traced, after the timed ones: code that switched to a
                # library op once it was being timed is still on that path now
                w = watch(True)
                _, ok = _watched_call(model, ts.slots[0], w, phase)
                if not ok:
                    return 1
                if name == next(iter(models)) and w.events is not None:
                    _send_profile(name, w, own_kernels)  # the main shape's, after its timing
            _send(event="timing", shape=name, event_ms=raw.event_ms, host_ms=raw.host_ms,
                  calls_per_sample=raw.calls_per_sample, launch_ms=raw.launch_ms,
                  spans={"sets": t_sampling - t_sets, "sampling": t_traced - t_sampling,
                         "traced_call": time.perf_counter() - t_traced})
            if job["mode"] == "candidate":
                # The parent names the audited sample only now, among the last few kept.
                _send(event="ring", shape=name, samples=[i for i, _, _, _ in ts.ring])
                wanted = {int(i) for i in json.loads(sys.stdin.readline()).get("audit", [])}
                for i, seed, out, c in ts.ring:
                    if i in wanted:
                        _hand_over(out, f"timed_{name}_{i}.pt",
                                   dict(event="timed_output", shape=name, sample=i, seed=seed,
                                        call=c))
            ts.ring.clear()
            del ts
        _send(event="seen", **{k: sorted(v)[:200] for k, v in _SEEN.items()})
        if not _precision_held(job, applied, "timing"):
            return 1
        _send(event="done")
        return 0
    except BaseException as e:  # noqa: BLE001 - trusted harness reports every failure
        kind = "runtime"
        text = _tail(e)
        if _allocator_lost_its_report(e):
            kind, text = "oom", (
                "CUDA out of memory (PyTorch's allocator failed while writing its report: NVML "
                f"cannot be initialised in the candidate's process): {str(e).splitlines()[0]}")
        elif ("OutOfMemoryError" in type(e).__name__ or isinstance(e, MemoryError)
                or "out of memory" in str(e) or "can't allocate memory" in str(e)):
            kind = "oom"
        elif gap := _cpu_gap(e, str(job.get("device", ""))):
            kind, text = "unsupported", gap
        elif not isinstance(e, Exception):  # SystemExit, KeyboardInterrupt: ending the run
            kind = "exit"
        _send(event="error", phase=phase, kind=kind, message=text)
        return 1


if __name__ == "__main__":
    sys.exit(main())
