"""The problem runtime: one problem file loaded into a typed spec, for parent and child alike.

A problem file defines ``class Model(nn.Module)``, ``get_inputs()``, ``get_init_inputs()`` and
module-level shape constants. It may add ``KBENCH = {...}`` (see :class:`ProblemMeta`).
:func:`load_file` loads one file; a :class:`ProblemSpec` gives its shapes (declared, CPU,
derived), inputs, reference model and roofline. Finding files by suite or selector is the
orchestrator's (:mod:`kbench.problems`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sandbox._inputs import (
    GEN_LOCK,
    Shape,
    build_model,
    cuda_to,
    make_init_inputs,
    make_inputs,
    set_constants,
)
from sandbox._shapes import (
    CPU_BYTES_BUDGET,
    CPU_FLOPS_BUDGET,
    _derived_cpu_shape,
    _int_seq,
    _nbytes,
    derive_shapes,
)
from sandbox.errors import ProblemError
from sandbox.precision import PrecisionMeta

__all__ = [
    "DEFAULT_TOLERANCES",
    "PerturbMeta",
    "ProblemMeta",
    "Shape",
    "ProblemSpec",
    "load_file",
    "derive_shapes",
    "CPU_FLOPS_BUDGET",
    "CPU_BYTES_BUDGET",
]

# (atol, rtol) by dtype. The relative L2 check uses rtol as its bound as well, which is what
# makes zeros fail against a softmax over long rows even where atol would let them through.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-4, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
    "float8_e4m3fn": (1e-1, 1e-1),
    "int8": (0.0, 0.0),
    "int32": (0.0, 0.0),
    "int64": (0.0, 0.0),
    "bool": (0.0, 0.0),
}

ScalarFn = Callable[[Shape], float]


class PerturbMeta(BaseModel):
    """``KBENCH["perturb"]``: how kbench may redraw inputs and parameters for the extra
    correctness cases (see :mod:`sandbox.perturb`). Opting out needs a reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: Literal["auto", "signed", "positive", "none"] = "auto"
    """auto: both signs, kept non-negative where the signed case leaves the reference
    without a finite output; signed / positive: always that; none: no perturbed inputs."""
    params: bool = True
    """Redraw the reference's constant parameters and buffers (norm weights, biases)."""
    reason: str | None = None

    @model_validator(mode="after")
    def _reason_for_opt_out(self) -> PerturbMeta:
        if (self.inputs == "none" or not self.params) and not self.reason:
            raise ValueError("opting out of a perturbation needs a reason: add "
                             "\"reason\": \"...\" (shown by `kbench problems show`)")
        return self


class ProblemMeta(BaseModel):
    """The optional ``KBENCH`` dict of a problem file. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    dtype: str | None = None
    atol: float | None = None
    rtol: float | None = None
    shapes: dict[str, dict[str, Any]] = {}
    """Extra named shapes (overrides of the module constants) checked and timed on a GPU."""
    cpu_shapes: dict[str, dict[str, Any]] = {}
    """Small shapes for CPU checks (Triton interpreter). Derived from the main shape if absent."""
    flops: float | Callable[[Shape], float] | None = None
    bytes: float | Callable[[Shape], float] | None = None
    """Roofline: FLOPs and minimum bytes moved, as numbers or callables of the shape dict."""
    check: Callable[..., str | None] | None = None
    """Custom comparison ``check(out, ref, inputs) -> None | reason`` (selections, top-k);
    a parameter named ``model`` gets the reference model (a quantized linear's weights)."""
    fixed: list[str] = []
    """Constants that must not be perturbed when kbench derives unseen shapes."""
    derive: bool = True
    mode: Literal["train", "eval"] = "train"
    """The mode Model and ModelNew run in: ``train`` is nn.Module's default and what
    KernelBench's harness uses (BatchNorm on batch statistics); ``eval`` for inference
    problems (BatchNorm on running statistics). Both always run under ``torch.no_grad``."""
    allow_libraries: list[str] = []
    """Libraries whose kernels a candidate may run (Python module or kernel-name prefixes)."""
    perturb: PerturbMeta = PerturbMeta()
    """Extra correctness cases: perturbed inputs and redrawn constant parameters."""
    precision: PrecisionMeta = PrecisionMeta()
    """Matmul / cuDNN precision the candidate and the baselines run under (default: PyTorch's
    defaults, fp32 matmuls at "highest"); see :mod:`sandbox.precision`."""
    tags: list[str] = []
    description: str | None = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DEFAULT_TOLERANCES:
            raise ValueError(f"unknown dtype {v!r}; use one of {sorted(DEFAULT_TOLERANCES)}")
        return v


@dataclass(frozen=True)
class ProblemSpec:
    """One loaded problem. ``shapes`` maps shape name to the full constants dict."""

    key: str  # "level1/relu" for packaged problems, the file stem's path otherwise
    suite: str
    name: str
    path: Path
    source: str
    source_hash: str
    constants: Shape  # module-level constants as written in the file
    meta: ProblemMeta
    module: ModuleType = field(repr=False, compare=False)

    # -- shapes -----------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, Shape]:
        """Shapes for GPU checks and timing: ``main`` (the module constants) + declared ones."""
        out = {"main": dict(self.constants)}
        for name, over in self.meta.shapes.items():
            out[name] = {**self.constants, **over}
        return out

    @property
    def cpu_shapes(self) -> dict[str, Shape]:
        """Shapes small enough for the Triton interpreter on CPU: those the file declares,
        else one derived from the main shape and checked against the reference (see
        :meth:`cpu_shape_error`; the search runs once per file content and is cached)."""
        if self.meta.cpu_shapes:
            return {n: {**self.constants, **o} for n, o in self.meta.cpu_shapes.items()}
        return {"small": dict(_derived_cpu_shape(self).shape)}

    @property
    def cpu_shape_error(self) -> str | None:
        """Why no CPU shape could be derived on which the reference runs within the CPU
        budget (``CPU_FLOPS_BUDGET``, ``CPU_BYTES_BUDGET``), or None. ``cpu_shapes`` then
        holds the closest shape found. Declared CPU shapes are taken as they are."""
        if self.meta.cpu_shapes:
            return None
        return _derived_cpu_shape(self).error

    def shapes_for(self, device: str) -> dict[str, Shape]:
        return self.shapes if device.startswith("cuda") else self.cpu_shapes

    def only(self, names: Sequence[str]) -> ProblemSpec:
        """This problem checked on some of its declared shapes only (a tuning step, a
        re-timing of finalists): the same problem, its other shapes left out."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(ProblemSpec)}
        return _Only(**kw, names=tuple(names))

    @property
    def precision(self) -> dict[str, Any]:
        """The precision settings every child of this problem runs under."""
        return self.meta.precision.settings()

    @property
    def tolerance(self) -> tuple[float, float]:
        atol, rtol = DEFAULT_TOLERANCES.get(self.meta.dtype or "float32", (1e-4, 1e-4))
        return (self.meta.atol if self.meta.atol is not None else atol,
                self.meta.rtol if self.meta.rtol is not None else rtol)

    # -- building inputs and models ---------------------------------------------------
    @contextlib.contextmanager
    def at_shape(self, shape: Shape) -> Iterator[ModuleType]:
        """Temporarily set the module's constants to ``shape`` (holds the generation lock)."""
        with GEN_LOCK:
            saved = {k: getattr(self.module, k) for k in shape if hasattr(self.module, k)}
            try:
                set_constants(self.module, shape)
                yield self.module
            finally:
                for k, v in saved.items():
                    setattr(self.module, k, v)

    def make_init_inputs(self, shape: Shape, seed: int | None = None) -> list[Any]:
        """Constructor arguments at ``shape`` (after ``seed``, should they draw anything)."""
        with self.at_shape(shape) as m:
            return make_init_inputs(m, seed)

    def make_inputs(self, shape: Shape, seed: int, device: str) -> list[Any]:
        """Fresh inputs for ``shape`` from ``seed``, created on ``device``."""
        with self.at_shape(shape) as m:
            return make_inputs(m, seed, device)

    def make_model(self, init_inputs: list[Any], init_seed: int, device: str,
                   shape: Shape | None = None) -> Any:
        """The reference ``Model`` after ``init_seed``, on ``device`` (:meth:`build_model`)."""
        return self.build_model(init_inputs, init_seed, device, shape)[0]

    def build_model(self, init_inputs: list[Any], init_seed: int, device: str,
                    shape: Shape | None = None) -> tuple[Any, str]:
        """The reference ``Model`` after ``init_seed``, and where its parameters were drawn
        (``"device"`` or ``"cpu"``: :func:`sandbox._inputs.build_model`).

        With ``shape``, built while the module's constants are at that shape: some KernelBench
        models read one in ``__init__`` (``self.hidden = torch.randn((batch_size, hidden))``).
        """
        at = self.at_shape(shape) if shape is not None else contextlib.nullcontext()
        with at, GEN_LOCK:
            model, on = build_model(self.module.Model, init_inputs, init_seed, device)
        return model.train(self.meta.mode == "train"), on

    # -- roofline ---------------------------------------------------------------------
    def roofline(self, shape: Shape, name: str | None = None) -> tuple[float | None, float | None]:
        """(FLOPs, minimum bytes) at ``shape``: declared, else estimated on the meta device.

        Raises:
            ProblemError: ``KBENCH["flops"]`` or ``["bytes"]`` raises on ``shape`` or gives no
                finite, non-negative number; the message names the key and the shape
                (``name``, else the declared shape equal to ``shape``, else its sizes).
        """
        try:
            flops = self._declared("flops", shape, name)
            nbytes = self._declared("bytes", shape, name)
        except ProblemError as e:
            raise ProblemError(f"{self.key}: {e}") from None
        if flops is None or nbytes is None:
            est_flops, est_bytes = _estimate_roofline(self, shape)
            flops = est_flops if flops is None else flops
            nbytes = est_bytes if nbytes is None else nbytes
        return flops, nbytes

    def _declared(self, key: str, shape: Shape, name: str | None) -> float | None:
        """``KBENCH[key]`` (``flops`` or ``bytes``) at ``shape``, checked: one
        :class:`ProblemError` naming the key and the shape (not the file) rather than a
        traceback."""
        v = getattr(self.meta, key)
        if v is None:
            return None
        try:
            x = v(shape) if callable(v) else v
        except Exception as e:  # noqa: BLE001 - a user's lambda fails as one line
            detail = str(e).strip().splitlines()
            raise ProblemError(
                f"KBENCH[{key!r}] failed on shape {self._shape_label(shape, name)}: "
                f"{type(e).__name__} {detail[0][:200] if detail else ''}".rstrip()) from None
        try:
            ok = not isinstance(x, (bool, str, bytes)) and math.isfinite(float(x)) \
                and float(x) >= 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ProblemError(
                f"KBENCH[{key!r}] gave {x!r:.80} on shape "
                f"{self._shape_label(shape, name)}; it must be a finite number >= 0")
        return float(x)

    def _shape_label(self, shape: Shape, name: str | None) -> str:
        """``'small' (batch_size=4, dim=100)``: the shape's name where known, and its sizes."""
        if name is None:  # only declared shapes: a derived CPU shape would run a search
            declared = {**self.shapes, **{n: {**self.constants, **o}
                                          for n, o in self.meta.cpu_shapes.items()}}
            name = next((n for n, s in declared.items() if s == shape), None)
        sizes = ", ".join(f"{k}={v}" for k, v in shape.items()
                          if not isinstance(v, bool) and isinstance(v, (int, tuple, list)))
        return (f"{name!r} " if name else "") + f"({sizes})"

    def check_roofline(self) -> None:
        """Evaluate ``KBENCH["flops"]`` / ``["bytes"]`` on every declared shape (GPU and
        CPU), so that a broken lambda fails when the file loads, as one line.

        Raises:
            ProblemError: Naming the key and the shape (not the file).
        """
        if self.meta.flops is None and self.meta.bytes is None:
            return
        groups = (self.shapes, {n: {**self.constants, **o}
                                for n, o in self.meta.cpu_shapes.items()})
        for group in groups:
            for name, shape in group.items():
                for key in ("flops", "bytes"):
                    self._declared(key, shape, name)

    def reference_error(self, shape: Shape, device: str = "cpu") -> str | None:
        """Why the reference cannot run at ``shape`` (built and called once on ``device``, as
        the verifier does), or None when it runs."""
        import torch

        try:
            init = self.make_init_inputs(shape, seed=0)
            model = self.make_model(init, 0, device, shape=shape)
            inputs = self.make_inputs(shape, 1, device)
            with torch.no_grad():
                model(*inputs)
        except Exception as e:  # noqa: BLE001 - reported as one line by the caller
            return f"{type(e).__name__}: {e}"
        return None


def _estimate_roofline(spec: ProblemSpec, shape: Shape) -> tuple[float | None, float | None]:
    """FLOPs from torch's flop counter (matmul/conv/attention only; elementwise counts 0)
    and bytes as inputs + parameters + outputs, all on the meta device (nothing allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with spec.at_shape(shape) as m, torch.device("meta"), cuda_to("meta"):
            init = list(m.get_init_inputs())
            model = m.Model(*init)
            inputs = list(m.get_inputs())
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                out = model(*inputs)
    except Exception:  # noqa: BLE001 - an op without a meta kernel: roofline unknown
        return None, None
    outs = out if isinstance(out, (tuple, list)) else [out]
    nbytes = sum(_nbytes(t) for t in [*inputs, *outs])
    nbytes += sum(p.numel() * p.element_size() for p in model.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in model.buffers())
    return float(counter.get_total_flops()), float(nbytes)


def _constants(module: ModuleType) -> Shape:
    """Module-level numbers, and tuples / lists of ints (``input_shape = (4096,)``,
    ``layer_sizes = [400, 800]``), as written in the file."""
    return {
        k: v for k, v in vars(module).items()
        if not k.startswith("_") and k != "KBENCH"
        and ((isinstance(v, (int, float)) and not isinstance(v, bool)) or _int_seq(v))
    }


def load_file(path: str | Path, key: str | None = None, suite: str | None = None) -> ProblemSpec:
    """Load one problem file. Raises :class:`ProblemError` naming the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such problem file")
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProblemError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                           f"{e.start})") from None
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    mod_name = f"kbench_problem_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a user's file fails as one line
        sys.modules.pop(mod_name, None)
        raise ProblemError(f"{path}: fails to import: {type(e).__name__}: {e}") from e
    missing = [n for n in ("Model", "get_inputs", "get_init_inputs") if not hasattr(module, n)]
    if missing:
        raise ProblemError(
            f"{path}: missing {', '.join(missing)} (a problem file defines class Model, "
            "get_inputs() and get_init_inputs())"
        )
    import torch

    if not (isinstance(module.Model, type) and issubclass(module.Model, torch.nn.Module)):
        raise ProblemError(f"{path}: Model must be a subclass of torch.nn.Module")
    raw = getattr(module, "KBENCH", {})
    if not isinstance(raw, dict):
        raise ProblemError(f"{path}: KBENCH must be a dict, got {type(raw).__name__}")
    try:
        meta = ProblemMeta(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProblemError(f"{path}: KBENCH.{where}: {first['msg']}") from None
    constants = _constants(module)
    for group in (meta.shapes, meta.cpu_shapes):
        for sname, over in group.items():
            unknown = [k for k in over if k not in constants]
            if unknown:
                raise ProblemError(
                    f"{path}: KBENCH shape {sname!r} overrides {unknown}, which are not "
                    "module-level constants of the file"
                )
    spec = ProblemSpec(
        key=key or path.stem,
        suite=suite or path.parent.name,
        name=path.stem,
        path=path.resolve(),
        source=source,
        source_hash=digest,
        constants=constants,
        meta=meta,
        module=module,
    )
    try:
        spec.check_roofline()
    except ProblemError as e:
        raise ProblemError(f"{path}: {e}") from None
    return spec


@dataclass(frozen=True)
class _Only(ProblemSpec):
    """A :class:`ProblemSpec` restricted to some of its declared shapes (:meth:`only`)."""

    names: tuple[str, ...] = ()

    def shapes_for(self, device: str) -> dict[str, Shape]:
        every = super().shapes_for(device)
        return {n: every[n] for n in self.names if n in every}
