"""Runtime shared by the exported ops (copied verbatim into the package as ``_runtime.py``).

Each op module holds an :class:`OpSpec` (what kbench verified at export) and registers a
``torch.library.custom_op`` whose implementation calls :func:`call`. ``call`` matches the
inputs to a verified shape by their signature (tensor sizes and dtypes, other values as they
are), sets that shape's tuned knobs as the kernel module's globals, and runs the candidate's
``ModelNew`` built after the same seed as the reference ``Model``. Inputs that match no
verified shape run the embedded reference instead, with a warning once per op: the kernel
was never checked there. Nothing here imports kbench.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

__all__ = ["OpSpec", "call", "fake", "signature", "inputs_at", "reference_model",
           "unverified_shapes_allowed", "kernel_unavailable", "FALLBACKS"]

_LOCK = threading.RLock()
_STATE = threading.local()
FALLBACKS: dict[str, int] = {}  # qualname -> calls served by the reference (tests read it)
_WARNED: set[str] = set()
_MODELS: dict[tuple[str, str, str], torch.nn.Module] = {}
_DEFAULT_KNOBS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class OpSpec:
    """What kbench exported for one problem. ``verified``: shape name -> {"params": the
    problem's constants, "signature": the inputs' signature, "init": constructor inputs};
    ``tuned``: shape name -> knob values (module globals of the kernel)."""

    name: str
    qualname: str
    problem: str
    backend: str  # "triton" or "cuda"
    kernel_module: str
    reference: ModuleType
    default_init: list[Any]
    verified: dict[str, dict[str, Any]]
    verified_device: str
    cpu_shapes: dict[str, dict[str, Any]]
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    atol: float = 1e-4
    rtol: float = 1e-4
    seed: int = 0

    @property
    def by_signature(self) -> dict[str, str]:
        return {v["signature"]: k for k, v in self.verified.items()}


def signature(args: Sequence[Any]) -> str:
    """Sizes and dtypes of tensors, ``repr`` of anything else: what picks a verified shape."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}")
        else:
            parts.append(repr(a))
    return "(" + ", ".join(parts) + ")"


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


def kernel_unavailable(spec: OpSpec, device: torch.device) -> str | None:
    """Why the kernel cannot run on ``device`` here, or None."""
    if spec.backend == "cuda" and device.type != "cuda":
        return "a CUDA kernel needs CUDA tensors"
    if spec.backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "a Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 to run on CPU"
    return None


def _kernel(spec: OpSpec) -> ModuleType:
    if spec.backend == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            raise RuntimeError(
                f"{spec.qualname}: its CUDA source is built at first use with "
                "torch.utils.cpp_extension.load_inline, and no CUDA toolkit was found (set "
                "CUDA_HOME or put nvcc on PATH; a C++ compiler is needed too)")
        try:
            return importlib.import_module(spec.kernel_module)
        except Exception as e:
            raise RuntimeError(
                f"{spec.qualname}: building its CUDA source with load_inline failed "
                f"({type(e).__name__}: {e}); it needs nvcc (CUDA_HOME={CUDA_HOME}) and a C++ "
                "compiler matching this torch build") from e
    return importlib.import_module(spec.kernel_module)


def _set_constants(module: ModuleType, params: dict[str, Any]) -> dict[str, Any]:
    saved = {k: getattr(module, k) for k in params if hasattr(module, k)}
    for k, v in params.items():
        cur = getattr(module, k, None)
        setattr(module, k, tuple(v) if isinstance(v, list) and isinstance(cur, tuple) else v)
    return saved


def inputs_at(spec: OpSpec, params: dict[str, Any], seed: int, device: str) -> list[Any]:
    """The reference's ``get_inputs()`` at the constants ``params``, after ``seed``."""
    with _LOCK:
        saved = _set_constants(spec.reference, params)
        try:
            torch.manual_seed(seed)
            inputs = list(spec.reference.get_inputs())
        finally:
            _set_constants(spec.reference, saved)
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]


def _build(cls: type, spec: OpSpec, init: list[Any], device: torch.device) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # the reference's convention: built on CPU after the seed
        model = cls(*init)
    return model.to(device).eval()


def reference_model(spec: OpSpec, device: torch.device | str, init: list[Any] | None = None
                    ) -> torch.nn.Module:
    """The embedded reference ``Model`` with the same parameters as the exported kernel's."""
    return _build(spec.reference.Model, spec, spec.default_init if init is None else init,
                  torch.device(device))


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
    with torch.no_grad():
        return _own(model(*args), args)


def _own(out: Any, args: Sequence[Any]) -> Any:
    """A custom op may not return its inputs or views of them: such outputs are copied."""
    ptrs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}

    def one(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in ptrs:
            return t.clone()
        return t

    return tuple(one(t) for t in out) if isinstance(out, (tuple, list)) else one(out)


def call(spec: OpSpec, args: Sequence[Any]) -> Any:
    """The op's implementation: the kernel on a verified shape (its tuned knobs set), else the
    reference with a warning once."""
    sig = signature(args)
    shape = spec.by_signature.get(sig)
    allowed = getattr(_STATE, "allow", False)
    if shape is None and not allowed:
        return _fallback(spec, args, f"inputs {sig} match no verified shape "
                                     f"({', '.join(spec.verified) or 'none'})")
    dev = _device(args)
    why = kernel_unavailable(spec, dev)
    if why is not None:
        return _fallback(spec, args, why)
    with _LOCK:
        mod = _kernel(spec)
        knobs_used = {k for knobs in spec.tuned.values() for k in knobs}
        defaults = _DEFAULT_KNOBS.setdefault(
            spec.qualname, {k: getattr(mod, k) for k in knobs_used if hasattr(mod, k)})
        for k, v in {**defaults, **spec.tuned.get(shape or "", {})}.items():
            setattr(mod, k, v)
        init = spec.verified[shape]["init"] if shape is not None else spec.default_init
        key = (spec.qualname, shape or "default", str(dev))
        if key not in _MODELS:
            _MODELS[key] = _build(mod.ModelNew, spec, init, dev)
        model = _MODELS[key]
        with torch.no_grad():
            return _own(model(*args), args)


def fake(spec: OpSpec, args: Sequence[Any]) -> Any:
    """``register_fake``: the reference run on the fake inputs gives the output's metadata
    (its parameters are made under the same fake mode, so no real memory is touched)."""
    dev = _device(args)
    with torch.device(dev):
        model = spec.reference.Model(*spec.default_init)
    out = model(*args)
    if isinstance(out, (tuple, list)):
        return tuple(torch.empty_like(t) for t in out)
    return torch.empty_like(out)
