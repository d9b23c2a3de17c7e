"""Runtime shared by the exported ops (copied verbatim into the package as ``_runtime.py``).

Each op module holds an :class:`OpSpec` (what kbench verified at export) and registers an op
whose implementation calls :func:`call`: a ``torch.library.triton_op`` for a Triton kernel
whose launches were rewritten to ``wrap_triton`` (``spec.registration == "triton_op"``), else
a ``torch.library.custom_op`` with :func:`fake` as its ``register_fake``. ``call`` matches the
inputs to a verified shape by their signature (tensor sizes and dtypes, other values as they
are), sets that shape's tuned knobs as the kernel module's globals, and runs the candidate's
``ModelNew`` built after the same seed as the reference ``Model``. Inputs that match no
verified shape run the embedded reference instead, with a warning once per op: the kernel
was never checked there.

Inside a trace (``torch.compile``: fake and functional tensors) a triton op's ``call`` runs
the same Python with the launches recorded, not executed; models are built outside the trace,
and a model's parameters and buffers enter it as the op's ``state`` argument (see
:func:`state`) because real tensors captured from outside cannot mix with fake ones.
Nothing here imports kbench.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

__all__ = ["OpSpec", "call", "fake", "state", "signature", "inputs_at", "init_at",
           "load_kernel", "cuda_unavailable", "reference_model", "model_params",
           "unverified_shapes_allowed", "kernel_unavailable", "output_check",
           "assert_matches", "FALLBACKS"]

_LOCK = threading.RLock()
_STATE = threading.local()
FALLBACKS: dict[str, int] = {}  # qualname -> calls served by the reference (tests read it)
_WARNED: set[str] = set()
_MODELS: dict[tuple[str, str, str], torch.nn.Module] = {}
_DEFAULT_KNOBS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class OpSpec:
    """What kbench exported for one problem. ``verified``: shape name -> {"params": the
    problem's constants, "signature": the inputs' signature, speedups}; ``cpu_shapes``: name
    -> constants of the problem's small CPU shapes, ``cpu_signatures`` their signatures;
    ``tuned``: shape name -> knob values (module globals of the kernel); ``registration``:
    "triton_op" or "custom_op", ``registration_note`` why a Triton kernel is a custom_op;
    ``takes_state``: the triton op takes its model's parameters and buffers (see
    :func:`state`) as its last argument."""

    name: str
    qualname: str
    problem: str
    backend: str  # "triton" or "cuda"
    kernel_module: str
    reference: ModuleType
    verified: dict[str, dict[str, Any]]
    verified_device: str
    cpu_shapes: dict[str, dict[str, Any]]
    cpu_signatures: dict[str, str] = field(default_factory=dict)
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    registration: str = "custom_op"
    registration_note: str = ""
    takes_state: bool = False  # a triton op whose last argument is its model's tensors
    atol: float = 1e-4
    rtol: float = 1e-4
    seed: int = 0

    @property
    def by_signature(self) -> dict[str, str]:
        """Input signature -> the first verified shape with it (a parameterized problem may
        verify several models on inputs of one signature, e.g. two hidden sizes)."""
        out: dict[str, str] = {}
        for k, v in self.verified.items():
            out.setdefault(v["signature"], k)
        return out

    def shapes_for(self, sig: str, allow_unverified: bool = False
                   ) -> list[tuple[str | None, dict[str, Any] | None]]:
        """(verified shape name or None, constants) of the models that may serve inputs of
        signature ``sig``: the verified shapes with it, in order; with ``allow_unverified``
        then a CPU shape with it, then the file's main shape (constants None)."""
        out: list[tuple[str | None, dict[str, Any] | None]] = [
            (k, v["params"]) for k, v in self.verified.items() if v["signature"] == sig]
        if allow_unverified:
            out += [(None, self.cpu_shapes[k]) for k, v in self.cpu_signatures.items()
                    if v == sig]
            out.append((None, None))
        return out


def signature(args: Sequence[Any]) -> str:
    """Sizes and dtypes of tensors, ``repr`` of anything else: what picks a verified shape."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            # int(): a trace with symbolic sizes specializes here (a guard per shape, so
            # each verified shape compiles with its own model and knobs)
            parts.append(f"{str(a.dtype).removeprefix('torch.')}{[int(d) for d in a.shape]}")
        else:
            parts.append(repr(a))
    return "(" + ", ".join(parts) + ")"


def _traced(args: Sequence[Any]) -> bool:
    """Whether ``args`` are a trace's fake (or functional) tensors rather than real ones."""
    flat = _flat(args)
    if all(type(a) is torch.Tensor for a in flat if isinstance(a, torch.Tensor)):
        return False  # plain tensors (fake and functional ones are subclasses): no trace
    from torch._subclasses.fake_tensor import is_fake

    return any(isinstance(a, torch.Tensor) and is_fake(a) for a in flat)


def _flat(args: Sequence[Any]) -> list[Any]:
    return [x for a in args for x in (a if isinstance(a, (list, tuple)) else [a])]


def _device(args: Sequence[Any]) -> torch.device:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


@contextlib.contextmanager
def unverified_shapes_allowed() -> Iterator[None]:
    """Run the kernel (default knobs) on shapes it was not verified on, e.g. small CPU shapes
    in tests under Triton's interpreter; never for production use."""
    old = getattr(_STATE, "allow", False)
    _STATE.allow = True
    try:
        yield
    finally:
        _STATE.allow = old


def cuda_unavailable() -> str | None:
    """Why a CUDA (load_inline) kernel cannot be built and run in this process, or None:
    the first missing piece of a CUDA build of torch, a visible GPU, a CUDA toolkit."""
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is built without CUDA; a CUDA kernel needs "
                "a CUDA build of torch and a GPU")
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    if CUDA_HOME is None:
        return ("no CUDA toolkit was found to build its source (set CUDA_HOME or put nvcc on "
                "PATH; a C++ compiler is needed too)")
    return None


def kernel_unavailable(spec: OpSpec, device: torch.device) -> str | None:
    """Why the kernel cannot run on ``device`` here, or None."""
    if spec.backend == "cuda":
        why = cuda_unavailable()
        if why is not None:
            return why
        if device.type != "cuda":
            return "a CUDA kernel needs CUDA tensors"
    if spec.backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "a Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 to run on CPU"
    return None


def load_kernel(spec: OpSpec) -> ModuleType:
    """The kernel's module, imported (a CUDA source is compiled by ``load_inline`` then, once
    per machine: torch caches the build). Raises RuntimeError, one line saying what is
    missing, where a CUDA kernel cannot be built or run here."""
    if spec.backend == "cuda":
        why = cuda_unavailable()
        if why is not None:
            raise RuntimeError(f"{spec.qualname}: its CUDA source is built at first use with "
                               f"torch.utils.cpp_extension.load_inline, and {why}")
        from torch.utils.cpp_extension import CUDA_HOME

        try:
            return importlib.import_module(spec.kernel_module)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise RuntimeError(
                f"{spec.qualname}: building its CUDA source with load_inline failed "
                f"({type(e).__name__}: {first}); it needs nvcc (CUDA_HOME={CUDA_HOME}) and a "
                "C++ compiler matching this torch build") from e
    return importlib.import_module(spec.kernel_module)



def _set_constants(module: ModuleType, params: dict[str, Any]) -> dict[str, Any]:
    saved = {k: getattr(module, k) for k in params if hasattr(module, k)}
    for k, v in params.items():
        cur = getattr(module, k, None)
        setattr(module, k, tuple(v) if isinstance(v, list) and isinstance(cur, tuple) else v)
    return saved


@contextlib.contextmanager
def _at(module: ModuleType, params: dict[str, Any] | None) -> Iterator[ModuleType]:
    """The reference module with its constants at ``params`` (None: as the file sets them)."""
    with _LOCK:
        saved = _set_constants(module, params or {})
        try:
            yield module
        finally:
            _set_constants(module, saved)


def inputs_at(spec: OpSpec, params: dict[str, Any], seed: int, device: str) -> list[Any]:
    """The reference's ``get_inputs()`` at the constants ``params``, after ``seed``."""
    with _at(spec.reference, params) as ref:
        torch.manual_seed(seed)
        inputs = list(ref.get_inputs())
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]


def init_at(spec: OpSpec, params: dict[str, Any] | None) -> list[Any]:
    """The reference's ``get_init_inputs()`` at ``params`` (None: the file's own constants),
    made on CPU after the model seed, as kbench's verifier makes them; tensors included."""
    with _at(spec.reference, params) as ref, torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return list(ref.get_init_inputs())


def _build(cls: type, spec: OpSpec, params: dict[str, Any] | None, device: torch.device
           ) -> torch.nn.Module:
    """``cls(*init)`` built on CPU after the seed (the reference's convention), while the
    reference's constants are at ``params``; never inside a trace (its parameters would be
    fake), so tracing modes are switched off while it is built."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), _at(spec.reference, params), \
            torch.random.fork_rng(devices=[]):
        init = init_at(spec, params)
        torch.manual_seed(spec.seed)
        model = cls(*init)
        return model.to(device).eval()


def reference_model(spec: OpSpec, device: torch.device | str,
                    params: dict[str, Any] | None = None) -> torch.nn.Module:
    """The embedded reference ``Model`` at the constants ``params`` (None: the file's main
    shape), with the same parameters as the exported kernel's."""
    return _build(spec.reference.Model, spec, params, torch.device(device))


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _run(spec: OpSpec, model: torch.nn.Module, args: Sequence[Any],
         given: Sequence[torch.Tensor] | None,
         own: dict[str, torch.Tensor] | None = None) -> Any:
    """``model(*args)``; with ``given``, the model's parameters and buffers replaced by them
    for the call (how fake ones enter a trace). ``own``: the model's tensors, if known."""
    own = _tensors(model) if own is None else own
    if given is None:
        if own and _traced(args):
            raise RuntimeError(
                f"{spec.qualname}: its kernel's model holds {len(own)} parameter/buffer "
                f"tensor(s) ({', '.join(own)}) though the reference holds none, so the op "
                "takes no state argument and cannot be traced (real tensors captured inside "
                "cannot mix with a trace's fake ones); call it outside torch.compile")
        return model(*args)
    if len(given) != len(own):
        raise ValueError(f"{spec.qualname}: state has {len(given)} tensors, the model "
                         f"{len(own)} ({', '.join(own)})")
    for (n, t), g in zip(own.items(), given):
        if tuple(g.shape) != tuple(t.shape) or g.dtype != t.dtype:
            raise ValueError(f"{spec.qualname}: state tensor {n} is {g.dtype}{list(g.shape)}, "
                             f"the model's {t.dtype}{list(t.shape)}")
    return torch.func.functional_call(model, dict(zip(own, given)), tuple(args))


def _fallback(spec: OpSpec, args: Sequence[Any], why: str) -> Any:
    with _LOCK:
        FALLBACKS[spec.qualname] = FALLBACKS.get(spec.qualname, 0) + 1
        if spec.qualname not in _WARNED:
            _WARNED.add(spec.qualname)
            warnings.warn(f"{spec.qualname}: {why}; running the reference implementation "
                          "(warned once)", RuntimeWarning, stacklevel=3)
        dev = _device(args)
        key = (spec.qualname, "reference", str(dev))
        if key not in _MODELS:
            _MODELS[key] = reference_model(spec, dev)
        model = _MODELS[key]
    if _traced(args) and _tensors(model):
        raise RuntimeError(f"{spec.qualname}: {why}, and the reference that would serve them "
                           "holds parameters, which cannot enter a trace; call the op on a "
                           "verified shape inside torch.compile")
    with torch.no_grad():
        return _own(model(*args), args)


def _own(out: Any, args: Sequence[Any], traced: bool | None = None) -> Any:
    """A custom op may not return its inputs or views of them: such outputs are copied."""
    if _traced(args) if traced is None else traced:
        return out  # fake tensors have no storage to compare; the eager call checks
    ptrs = {a.untyped_storage().data_ptr() for a in _flat(args) if isinstance(a, torch.Tensor)}

    def one(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in ptrs:
            return t.clone()
        return t

    return tuple(one(t) for t in out) if isinstance(out, (tuple, list)) else one(out)


def _model_at(spec: OpSpec, params: dict[str, Any] | None, dev: torch.device
              ) -> torch.nn.Module:
    key = (spec.qualname, repr(sorted((params or {}).items())), str(dev))
    if key not in _MODELS:
        _MODELS[key] = _build(load_kernel(spec).ModelNew, spec, params, dev)
    return _MODELS[key]


def _fits(model: torch.nn.Module, given: Sequence[torch.Tensor] | None) -> bool:
    if given is None:
        return True
    own = list(_tensors(model).values())
    return len(own) == len(given) and all(
        tuple(t.shape) == tuple(g.shape) and t.dtype == g.dtype for t, g in zip(own, given))


def _pick(spec: OpSpec, args: Sequence[Any], given: Sequence[torch.Tensor] | None,
          allowed: bool) -> tuple[str | None, torch.nn.Module]:
    """The shape and model serving ``args``: the first candidate model (see
    :meth:`OpSpec.shapes_for`) whose parameters and buffers match ``given`` in shape and
    dtype (the first, without ``given``). Caller holds the lock."""
    options = spec.shapes_for(signature(args), allowed)
    dev = _device(args)
    for name, params in options:
        model = _model_at(spec, params, dev)
        if _fits(model, given):
            return name, model
    name, params = options[0]
    return name, _model_at(spec, params, dev)  # _run names the mismatch


def _set_knobs(spec: OpSpec, shape: str | None) -> None:
    """The kernel module's knob globals: ``shape``'s tuned values, the module's own else."""
    mod = load_kernel(spec)
    knobs_used = {k for knobs in spec.tuned.values() for k in knobs}
    defaults = _DEFAULT_KNOBS.setdefault(
        spec.qualname, {k: getattr(mod, k) for k in knobs_used if hasattr(mod, k)})
    for k, v in {**defaults, **spec.tuned.get(shape or "", {})}.items():
        setattr(mod, k, v)


@dataclass(frozen=True)
class _Plan:
    """What :func:`call` decided for one key (inputs' sizes, dtypes and other values, device,
    ``given``'s sizes, whether unverified shapes are allowed, TRITON_INTERPRET): the fallback
    reason, or the model, its own tensors and the knob values to set. Made once per key, so
    an eager call pays only a dictionary lookup beside the launch."""

    spec: OpSpec
    why: str | None  # not None: the reference serves (with this reason)
    model: torch.nn.Module | None = None
    own: dict[str, torch.Tensor] | None = None
    knobs: dict[str, Any] | None = None
    module: ModuleType | None = None


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _key(spec: OpSpec, args: Sequence[Any], given: Sequence[torch.Tensor] | None,
         allowed: bool) -> tuple[Any, ...]:
    """Raises TypeError for an argument that cannot be a key (an unhashable value)."""
    parts: list[Any] = [spec.qualname, allowed, os.environ.get("TRITON_INTERPRET")]
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append((a.dtype, a.shape, a.device))
        else:
            parts.append((type(a), a))
    if given is not None:
        parts.append(tuple((g.dtype, g.shape) for g in given))
    key = tuple(parts)
    hash(key)
    return key


def _plan(spec: OpSpec, args: Sequence[Any], given: Sequence[torch.Tensor] | None,
          allowed: bool) -> _Plan:
    """:func:`call`'s decision for real (not traced) inputs, as it makes it every time."""
    sig = signature(args)
    if not spec.shapes_for(sig) and not allowed:
        return _Plan(spec, f"inputs {sig} match no verified shape "
                           f"({', '.join(spec.verified) or 'none'})")
    why = kernel_unavailable(spec, _device(args))
    if why is not None:
        return _Plan(spec, why)
    with _LOCK:
        shape, model = _pick(spec, args, given, allowed)
        mod = load_kernel(spec)
        _set_knobs(spec, shape)
        knobs = {**_DEFAULT_KNOBS[spec.qualname], **spec.tuned.get(shape or "", {})}
    return _Plan(spec, None, model, _tensors(model), knobs, mod)


def call(spec: OpSpec, args: Sequence[Any], given: Sequence[torch.Tensor] | None = None
         ) -> Any:
    """The op's implementation: the kernel on a verified shape (its tuned knobs set), else the
    reference with a warning once. ``given``: the model's parameters and buffers to use (a
    triton op's ``state`` argument), else its own. Outside a trace the decision is cached
    per key (see :class:`_Plan`)."""
    allowed = getattr(_STATE, "allow", False)
    if not _traced(args):
        try:
            key = _key(spec, args, given, allowed)
        except TypeError:
            key = None
        plan = _PLANS.get(key) if key is not None else None
        if plan is None or plan.spec is not spec:
            plan = _plan(spec, args, given, allowed)
            if key is not None:
                _PLANS[key] = plan
        if plan.why is not None:
            return _fallback(spec, args, plan.why)
        with _LOCK:
            for k, v in plan.knobs.items():
                setattr(plan.module, k, v)
            with torch.no_grad():
                return _own(_run(spec, plan.model, args, given, plan.own), args, False)
    sig = signature(args)
    allowed = getattr(_STATE, "allow", False)
    if not spec.shapes_for(sig) and not allowed:
        return _fallback(spec, args, f"inputs {sig} match no verified shape "
                                     f"({', '.join(spec.verified) or 'none'})")
    traced = _traced(args)
    why = None if traced else kernel_unavailable(spec, _device(args))  # a trace runs nothing
    if why is not None:
        return _fallback(spec, args, why)
    with _LOCK:
        shape, model = _pick(spec, args, given, allowed)
        _set_knobs(spec, shape)
        with torch.no_grad():
            return _own(_run(spec, model, args, given), args)


def state(spec: OpSpec, args: Sequence[Any]) -> list[torch.Tensor]:
    """The parameters and buffers of the kernel's model for inputs ``args`` (empty if it has
    none): the ``state`` a triton op takes inside ``torch.compile``. Call it outside the
    compiled function; the tensors are the model's own (seeded as the reference's)."""
    if not spec.takes_state:
        return []
    with _LOCK:
        _, model = _pick(spec, args, None, True)
        return list(_tensors(model).values())


def model_params(spec: OpSpec, args: Sequence[Any]) -> dict[str, Any] | None:
    """The constants of the model that serves ``args`` when no state is given (None: the
    file's main shape): the reference to compare the op with is built at them."""
    return spec.shapes_for(signature(args), True)[0][1]


def output_check(spec: OpSpec) -> Callable[[Any, Any, list[Any]], str | None] | None:
    """The problem's own output check, ``check(out, ref, inputs) -> None | reason`` (its
    ``KBENCH["check"]``, shipped in the embedded reference), which kbench's verifier judged the
    kernel by instead of ``atol``/``rtol`` (top-k ties, int8 codes at rounding ties); None
    when the problem has none."""
    meta = getattr(spec.reference, "KBENCH", None)
    check = meta.get("check") if isinstance(meta, dict) else None
    return check if callable(check) else None


def _takes_model(check: Callable[..., Any]) -> bool:
    """Whether a problem's check takes the reference model: a parameter named ``model``
    (given by keyword; a fourth positional one may be a tolerance, as top-k routing's
    ``atol``). The verifier's rule (``sandbox.compare._takes_model``), restated here because
    this file is copied into packages that do not have kbench."""
    try:
        return "model" in inspect.signature(check).parameters
    except (TypeError, ValueError):
        return False


def assert_matches(spec: OpSpec, out: Any, ref: Any, inputs: Sequence[Any],
                   model: Any = None) -> None:
    """Raise AssertionError unless ``out`` passes as kbench's verifier judged it against the
    reference's ``ref`` on ``inputs`` (unmodified: the op and the reference ran on copies or
    left them alone): the problem's own check where it has one (given the reference
    ``model`` too where it takes one), else ``atol``/``rtol``."""
    check = output_check(spec)
    if check is None:
        torch.testing.assert_close(out, ref, atol=spec.atol, rtol=spec.rtol)
        return
    reason = (check(out, ref, list(inputs), model=model) if _takes_model(check)
              else check(out, ref, list(inputs)))
    assert not reason, f"{spec.qualname}: the problem's own check fails: {reason}"


def fake(spec: OpSpec, args: Sequence[Any]) -> Any:
    """``register_fake`` of a custom op: the reference run on the fake inputs gives the
    output's metadata (its parameters are made under the same fake mode, so no real memory
    is touched)."""
    dev = _device(args)
    params = model_params(spec, args)
    with _at(spec.reference, params), torch.device(dev):
        model = spec.reference.Model(*init_at(spec, params))
    out = model(*args)
    if isinstance(out, (tuple, list)):
        return tuple(torch.empty_like(t) for t in out)
    return torch.empty_like(out)
