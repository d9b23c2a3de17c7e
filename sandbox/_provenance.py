"""Kernel provenance, in the sandbox child: which kernels did the candidate's forward run?

Every kernel a candidate's forward launches must be its own: a Triton function defined in the
candidate's source, or a ``__global__`` function of its own ``load_inline`` extension. Two
kinds of evidence, both taken at run time:

* **Triton launches** (CPU and GPU): ``JITFunction.run`` (and the interpreter's
  ``InterpretedFunction.run``) are wrapped while a call is watched, so every Triton launch is
  recorded with the Python module that defined the kernel. A kernel from another module (an
  installed library's Triton kernel reached through an import) is foreign.
* **Device kernels** (GPU, one chosen checked call per shape): the profiler's activity records
  (CUPTI) list every kernel that ran on the device. A kernel is accounted for if an allowed
  ATen op launched it (allocation, fills, copies: ``torch.zeros``, ``.contiguous()``), or
  if its name is one of the candidate's own Triton or CUDA kernels. Anything else — cuBLAS
  through ctypes, a library's kernels, cuDNN — is foreign and named.

* **Streams** (GPU): the timed region is the current stream's, so work elsewhere escapes
  timing (and the host's launch cost that timing covers with a device spin is time a side
  stream could use). While a call is watched, these are recorded and refused: a Triton launch
  on any stream but the one the call started on (however the stream was made current); a
  switch of the current stream to another through ``torch.cuda.set_stream`` /
  ``torch.cuda.stream`` or ``with s:`` on a ``torch.cuda.Stream`` (however the object was
  made); a call into a function of a candidate's ``load_inline``/``load`` extension module
  while another stream is current (``with torch.Stream(...)``, whose C++ ``__enter__``
  bypasses the setter: the extension would launch on ``getCurrentCUDAStream()``, the side
  stream); and a call that returns with another stream current. Triton's own benchmarking
  (``triton.testing``, which an autotuner's ``use_cuda_graph`` runs on a side stream) is
  excused. Not seen: a stream made current by C++ inside an extension (the static CUDA
  policy refuses the stream APIs by name), and extension ops reached through ``torch.ops``
  (``is_python_module=False``) under ``torch.Stream`` (the profiler's per-kernel stream
  would show it; not checked yet).

Libraries a problem or a run allows (``--allow-library NAME``) are excused: Triton kernels of
a module under that name, device kernels whose name contains it; the verdict says so.
"""

from __future__ import annotations

import re
import types
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Watch", "own_cuda_kernels", "own_triton_kernels", "base_name", "watch_extensions"]

_BOUNDS = re.compile(r"__launch_bounds__\s*\([^)]*\)")
_KERNEL = re.compile(r"__global__\s+([^;{(]*?)\s*\(")
_IDENT = re.compile(r"[A-Za-z_]\w*")
# Device activity that is data movement, not computation.
_MOVES = ("Memcpy", "Memset", "memcpy", "memset")


def own_cuda_kernels(source: str) -> set[str]:
    """Names of the ``__global__`` functions in a candidate's source (its CUDA strings)."""
    src = _BOUNDS.sub(" ", source)
    return {ids[-1] for m in _KERNEL.finditer(src) if (ids := _IDENT.findall(m.group(1)))}


def _unwrap(obj: Any) -> Any:
    seen = 0
    while hasattr(obj, "fn") and seen < 8:  # Autotuner -> Heuristics -> JITFunction -> def
        obj = obj.fn
        seen += 1
    return obj


def own_triton_kernels(module: Any, module_name: str) -> set[str]:
    """Names of the Triton kernels defined in the candidate's module (at module level or as
    class attributes)."""
    names = set()
    items = list(vars(module).values())
    for v in list(items):
        if isinstance(v, type):
            items += list(vars(v).values())
    for v in items:
        f = _unwrap(v)
        if f is not v and callable(f) and getattr(f, "__module__", None) == module_name:
            names.add(getattr(f, "__name__", ""))
    return names


def base_name(kernel: str) -> str:
    """``void ns::relu_kernel<128>(float const*, float*, long)`` -> ``relu_kernel``."""
    k = kernel.split("(")[0]
    depth, out = 0, []
    for ch in k:  # drop template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    ids = _IDENT.findall("".join(out).split("::")[-1])
    return ids[-1] if ids else kernel


@dataclass
class Watch:
    """Watch one forward call. ``profile`` adds the device kernels (GPU only)."""

    module_name: str
    own: set[str]
    allowed_aten: frozenset[str]
    allow_libraries: tuple[str, ...] = ()
    profile: bool = False
    cuda: bool = False  # watch streams (a GPU run)
    launches: list[tuple[str, str]] = field(default_factory=list)  # (module, kernel)
    side_streams: list[str] = field(default_factory=list)  # work put on another stream
    kernels: list[str] = field(default_factory=list)  # device kernels not by an allowed op
    all_kernels: list[str] = field(default_factory=list)  # every device kernel that ran
    excused: list[str] = field(default_factory=list)
    events: Any = None  # the profiler's events of the call (sandbox.profile reads them)
    _saved: list[tuple[Any, str, Any]] = field(default_factory=list)  # (owner, attribute, orig)
    _prof: Any = None
    _stream: Any = None  # (stream_id, device_index) the call started on

    def __enter__(self) -> Watch:
        if self.cuda:
            self._watch_streams()
        for cls in _launch_classes():
            orig = cls.run
            self._saved.append((cls, "run", orig))
            cls.run = _recording(orig, self.launches, self._launch_stream)
        if self.profile:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self._prof.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, orig in reversed(self._saved):
            if orig is _INHERITED:
                delattr(owner, attr)
            else:
                setattr(owner, attr, orig)
        self._saved.clear()
        _ACTIVE[:] = [w for w in _ACTIVE if w is not self]
        if self._stream is not None and _current_stream() != self._stream:
            self.side_streams.append("the call returned with another stream current")
        if self._prof is not None:
            import torch

            prof, self._prof = self._prof, None
            try:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                prof.__exit__(None, None, None)
                self.events = prof.events()
                self.kernels, self.all_kernels = _unaccounted(self.events, self.allowed_aten)
            except Exception:
                if exc[0] is None:
                    raise
                # the call itself failed (out of memory, an illegal address): its own error
                # is the verdict's; a profiler that cannot finish after it must not replace it

    def _watch_streams(self) -> None:
        """Remember the current stream; record switches away from it: through torch's
        setter ``torch._C._cuda_setStream`` (``torch.cuda.set_stream``, ``torch.cuda.stream``)
        and through ``with stream:`` on a ``torch.cuda.Stream`` (whose ``__enter__`` is C++
        code that bypasses the setter)."""
        import torch

        self._stream = _current_stream()
        if self._stream is None:
            return
        _ACTIVE.append(self)  # extension functions report their stream to it (__exit__ pops)
        watch = self

        def away(sid: Any, dev: Any) -> None:
            if (sid, dev) != watch._stream and not _in_triton_bench():
                watch.side_streams.append(f"switched the current stream to stream {sid}")

        orig_set = getattr(torch._C, "_cuda_setStream", None)
        if orig_set is not None:
            def set_stream(*args: Any, **kwargs: Any) -> Any:
                away(kwargs.get("stream_id", args[0] if args else None),
                     kwargs.get("device_index", args[1] if len(args) > 1 else None))
                return orig_set(*args, **kwargs)

            self._saved.append((torch._C, "_cuda_setStream", orig_set))
            torch._C._cuda_setStream = set_stream
        cls = getattr(torch.cuda, "Stream", None)
        orig_enter = getattr(cls, "__enter__", None)
        if cls is not None and orig_enter is not None:
            def enter(stream: Any, *args: Any, **kwargs: Any) -> Any:
                away(getattr(stream, "stream_id", None), getattr(stream, "device_index", None))
                return orig_enter(stream, *args, **kwargs)

            self._saved.append((cls, "__enter__", cls.__dict__.get("__enter__", _INHERITED)))
            cls.__enter__ = enter

    def _launch_stream(self, name: str, what: str = "launched Triton kernel") -> None:
        """Before a Triton launch (or an extension call): refused if another stream than the
        call's is current."""
        if self._stream is not None and _current_stream() != self._stream \
                and not _in_triton_bench():
            self.side_streams.append(f"{what} {name} on a side stream")

    def _allowed(self, module: str = "", kernel: str = "") -> bool:
        for lib in self.allow_libraries:
            if module == lib or module.startswith(lib + ".") or (kernel and lib in kernel):
                self.excused.append(f"{module or kernel} (allowed library {lib})")
                return True
        return False

    def foreign(self) -> list[str]:
        """What ran that is not the candidate's own, each named once."""
        out: list[str] = []
        for module, name in self.launches:
            if module != self.module_name and not self._allowed(module=module):
                out.append(f"Triton kernel {name} from {module}")
        own = self.own | {n for m, n in self.launches if m == self.module_name}
        for k in self.kernels:
            if base_name(k) not in own and not self._allowed(kernel=k):
                out.append(f"device kernel {k}")
        return list(dict.fromkeys(out))


def _launch_classes() -> list[Any]:
    classes = []
    try:
        from triton.runtime.jit import JITFunction

        classes.append(JITFunction)
    except ImportError:
        pass
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:
        pass
    return classes


def _recording(orig: Any, launches: list[tuple[str, str]],
               before: Any = None) -> Any:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("warmup", False):
            f = _unwrap(self)
            launches.append((getattr(f, "__module__", "?") or "?", getattr(f, "__name__", "?")))
            if before is not None:
                before(launches[-1][1])
        return orig(self, *args, **kwargs)

    return run


_INHERITED = object()  # a patched attribute that the class inherited: deleted on restore
_ACTIVE: list[Watch] = []  # the watch of the call in progress, if it watches streams


def watch_extensions(cpp_extension: Any) -> None:
    """Wrap ``load_inline`` and ``load`` of ``torch.utils.cpp_extension`` (in the child, before
    the candidate is imported) so that every public function of the extension modules they
    return reports the current stream to the active watch before it runs. The wrappers stay
    for the child's whole life, so checked and timed calls run the same code."""
    for attr in ("load_inline", "load"):
        orig = getattr(cpp_extension, attr, None)
        if orig is None or getattr(orig, "_kbench_watched", False):
            continue

        def loader(*args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
            return _wrap_extension(_orig(*args, **kwargs))

        _named(loader, orig).__dict__["_kbench_watched"] = True
        setattr(cpp_extension, attr, loader)


def _wrap_extension(mod: Any) -> Any:
    if isinstance(mod, types.ModuleType):
        for name, fn in list(vars(mod).items()):
            if not name.startswith("_") and isinstance(fn, types.BuiltinFunctionType):
                setattr(mod, name, _reporting(fn, name))
    return mod


def _reporting(fn: Any, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if _ACTIVE:
            _ACTIVE[-1]._launch_stream(name, "called CUDA extension function")
        return fn(*args, **kwargs)

    return _named(call, fn)


def _named(wrapper: Any, orig: Any) -> Any:
    """The wrapper under the original's name and doc; unlike ``functools.wraps`` it keeps no
    ``__wrapped__``, which would hand candidate code the unwatched original."""
    wrapper.__name__ = wrapper.__qualname__ = orig.__name__
    wrapper.__doc__ = orig.__doc__
    return wrapper


def _current_stream() -> tuple[int, int] | None:
    """(stream_id, device_index) of the current CUDA stream, or None without CUDA."""
    import torch

    try:
        s = torch.cuda.current_stream()
    except Exception:  # noqa: BLE001 - no CUDA here: nothing to watch
        return None
    return (int(s.stream_id), int(s.device_index))


# Triton's benchmarking, which may run on a side stream of its own (do_bench_cudagraph)
_TRITON_TESTING = ("triton/testing.py", "triton\\testing.py")


def _in_triton_bench() -> bool:
    """True if a frame of ``triton.testing`` is on the stack (an autotuner benchmarking)."""
    import sys

    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename.endswith(_TRITON_TESTING):
            return True
        f = f.f_back
    return False


def _unaccounted(events: Iterable[Any],
                 allowed_aten: frozenset[str]) -> tuple[list[str], list[str]]:
    """Device kernels minus those an allowed ATen op launched (matched by name and count),
    and every device kernel that ran."""
    from torch.autograd import DeviceType

    ran: Counter[str] = Counter()
    by_ops: Counter[str] = Counter()
    for e in events:
        if e.device_type == DeviceType.CUDA:
            if not e.name.startswith(_MOVES):
                ran[e.name] += 1
        elif e.name.startswith("aten::") and e.name[6:] in allowed_aten:
            for k in getattr(e, "kernels", ()):
                by_ops[k.name] += 1
    left = ran - by_ops
    return sorted(left), sorted(ran)
