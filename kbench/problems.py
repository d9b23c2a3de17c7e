"""Loading KernelBench-format problem files into typed specs.

A problem file defines ``class Model(nn.Module)``, ``get_inputs()``, ``get_init_inputs()`` and
module-level shape constants. It may add ``KBENCH = {...}`` (see :class:`ProblemMeta`).

Selectors accepted by :func:`load`: a file path, a directory path, a suite name (``level1``),
a problem id (``level1/relu``), a glob over ids (``attention/*gqa*``), ``all``, or several of
these separated by commas.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import importlib.resources
import importlib.util
import json
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from kbench.errors import ProblemError

__all__ = [
    "SUITES",
    "DEFAULT_TOLERANCES",
    "ProblemMeta",
    "Shape",
    "ProblemSpec",
    "load",
    "load_file",
    "derive_shapes",
    "CPU_FLOPS_BUDGET",
    "CPU_BYTES_BUDGET",
]

SUITES = ("level1", "level2", "level3", "attention", "quant", "kvcache")

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

# Module constants that are not tensor sizes: never perturbed when deriving shapes (nor are
# integers below 8, which are usually axes, flags or counts rather than sizes).
_NOT_SIZES = {
    "kernel_size", "stride", "padding", "dilation", "groups", "num_groups",
    "n_heads", "num_heads", "n_kv_heads", "num_kv_heads", "head_dim", "top_k", "topk", "k_top",
    "group_size", "bits", "num_bits", "window", "window_size", "block_size", "page_size",
    "seed", "n_layers", "num_layers", "eps", "chunk_size", "num_experts", "vocab_size",
}
_BATCH_NAMES = {"batch", "batch_size", "bs", "b", "n_batch", "num_seqs", "batch_sz"}

# Making inputs sets module constants and seeds torch's global generator: one thread at a time,
# so concurrent verifications (the runner's worker threads) neither race nor lose determinism.
_GEN_LOCK = threading.RLock()

Shape = dict[str, Any]
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
    """Custom comparison ``check(out, ref, inputs) -> None | reason`` (selections, top-k)."""
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

    @property
    def tolerance(self) -> tuple[float, float]:
        atol, rtol = DEFAULT_TOLERANCES.get(self.meta.dtype or "float32", (1e-4, 1e-4))
        return (self.meta.atol if self.meta.atol is not None else atol,
                self.meta.rtol if self.meta.rtol is not None else rtol)

    # -- building inputs and models ---------------------------------------------------
    @contextlib.contextmanager
    def at_shape(self, shape: Shape) -> Iterator[ModuleType]:
        """Temporarily set the module's constants to ``shape`` (holds the generation lock)."""
        with _GEN_LOCK:
            saved = {k: getattr(self.module, k) for k in shape if hasattr(self.module, k)}
            try:
                for k, v in shape.items():
                    setattr(self.module, k, _like(getattr(self.module, k, None), v))
                yield self.module
            finally:
                for k, v in saved.items():
                    setattr(self.module, k, v)

    def make_init_inputs(self, shape: Shape, seed: int | None = None) -> list[Any]:
        """Constructor arguments at ``shape`` (after ``seed``, should they draw anything)."""
        import torch

        with self.at_shape(shape) as m, _cuda_to("cpu"):
            if seed is not None:
                torch.manual_seed(seed)
            return list(m.get_init_inputs())

    def make_inputs(self, shape: Shape, seed: int, device: str) -> list[Any]:
        """Fresh inputs for ``shape`` from ``seed``, created on ``device``."""
        import torch

        with self.at_shape(shape) as m, _cuda_to(device):
            torch.manual_seed(seed)
            with torch.device(device):
                inputs = list(m.get_inputs())
        return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]

    def make_model(self, init_inputs: list[Any], init_seed: int, device: str,
                   shape: Shape | None = None) -> Any:
        """The reference ``Model``, built on CPU after ``init_seed`` (KernelBench's convention).

        With ``shape``, built while the module's constants are at that shape: some KernelBench
        models read one in ``__init__`` (``self.hidden = torch.randn((batch_size, hidden))``).
        """
        import torch

        at = self.at_shape(shape) if shape is not None else contextlib.nullcontext()
        with at, _GEN_LOCK:
            torch.manual_seed(init_seed)
            model = self.module.Model(*init_inputs)
        return model.to(device).train(self.meta.mode == "train")

    # -- roofline ---------------------------------------------------------------------
    def roofline(self, shape: Shape) -> tuple[float | None, float | None]:
        """(FLOPs, minimum bytes) at ``shape``: declared, else estimated on the meta device."""
        flops = _eval(self.meta.flops, shape)
        nbytes = _eval(self.meta.bytes, shape)
        if flops is None or nbytes is None:
            est_flops, est_bytes = _estimate_roofline(self, shape)
            flops = est_flops if flops is None else flops
            nbytes = est_bytes if nbytes is None else nbytes
        return flops, nbytes


@contextlib.contextmanager
def _cuda_to(device: Any) -> Iterator[None]:
    """While a (trusted) problem file makes its inputs: ``.cuda()`` on a tensor or module, as
    KernelBench's few-shot files write it, places it on ``device`` instead, so the same file
    runs on a machine without a GPU. kbench places every input itself."""
    import torch

    saved = torch.Tensor.cuda, torch.nn.Module.cuda

    def place(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.to(device)

    torch.Tensor.cuda = place  # type: ignore[method-assign]
    torch.nn.Module.cuda = place  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved  # type: ignore[method-assign]


def _eval(v: float | ScalarFn | None, shape: Shape) -> float | None:
    if v is None:
        return None
    return float(v(shape)) if callable(v) else float(v)


def _estimate_roofline(spec: ProblemSpec, shape: Shape) -> tuple[float | None, float | None]:
    """FLOPs from torch's flop counter (matmul/conv/attention only; elementwise counts 0)
    and bytes as inputs + parameters + outputs, all on the meta device (nothing allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with spec.at_shape(shape) as m, torch.device("meta"), _cuda_to("meta"):
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


def _nbytes(x: Any) -> int:
    import torch

    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0


def _int_constants(constants: Shape, fixed: list[str]) -> dict[str, int]:
    return {
        k: v for k, v in constants.items()
        if isinstance(v, int) and not isinstance(v, bool) and v >= 8  # small ints: axes, flags
        and k not in fixed and k.lower() not in _NOT_SIZES
    }


# ---------------------------------------------------------------------------------------
# CPU shapes: a small version of the main shape that keeps the file's divisibility
# ---------------------------------------------------------------------------------------
def _size_classes(constants: Shape, fixed: list[str]) -> dict[int, bool]:
    """Integer values of the non-batch constants (scalars and tuple / list elements), each
    with whether kbench may shrink it. Constants of equal value shrink together (``bias_shape
    = (out_channels, 1, 1)``, ``groups = in_channels``); a value holding a size (>= 8, not in
    ``_NOT_SIZES``) is shrinkable unless a ``fixed`` constant holds it too."""
    classes: dict[int, bool] = {}
    blocked: set[int] = set()
    for k, v in constants.items():
        if _is_int(v) and k.lower() in _BATCH_NAMES and k not in fixed:
            continue
        for x in [v] if _is_int(v) else list(v) if _int_seq(v) else []:
            size = x >= 8 and k not in fixed and k.lower() not in _NOT_SIZES
            classes[x] = classes.get(x, False) or size
            if k in fixed:
                blocked.add(x)
    return {x: ok and x not in blocked for x, ok in classes.items()}


@functools.lru_cache(maxsize=4096)
def _divisors(v: int) -> tuple[int, ...]:
    small, large = [], []
    i = 1
    while i * i <= v:
        if v % i == 0:
            small.append(i)
            if i * i != v:
                large.append(v // i)
        i += 1
    return (*small, *reversed(large))


def _pick(v: int, step: int, cap: int) -> int:
    """A value for size ``v`` at most about ``cap``: the largest divisor of ``v`` that is a
    multiple of ``step`` (so ``channels % groups == 0`` survives), else a multiple of
    ``step`` near ``cap`` (a prime size has no useful divisor)."""
    if v <= cap and v % step == 0:
        return v
    divs = [d for d in _divisors(v) if d % step == 0]
    below = [d for d in divs if d <= cap]
    if below and below[-1] * 4 >= cap:
        return below[-1]
    if step > cap:
        return divs[0] if divs else min(v, step)
    return min(v, step * (cap // step))


def _shrink(constants: Shape, fixed: list[str], limit: int = 64, batch: int = 8,
            caps: dict[int, int] | None = None, scale: int = 0) -> Shape:
    """A small version of a shape for CPU runs.

    Batch-like constants are capped at ``batch``; every other size (scalar or element of a
    tuple / list constant) becomes its largest divisor at most ``limit`` that stays a multiple
    of what the original's divisors among the constants became: ``channels=96, groups=3`` ->
    ``48, 3``; ``n_embd=768, n_head=12`` -> ``48, 12``; ``out_features=8192, num_groups=512``
    -> ``512, 512``. ``caps`` sets a value outright instead (the largest such multiple at
    most the cap). With ``scale``, every size is divided by it instead (where it divides;
    else the nearest such multiple below), which keeps ratios between sizes as well
    (``W_out = 2 * W == out_channels``). Small integers (kernel sizes, strides, axes) and
    ``_NOT_SIZES`` names are kept, as are ``fixed`` constants.
    """
    classes = _size_classes(constants, fixed)
    new: dict[int, int] = {}
    for v in sorted(classes):
        if not classes[v] or v < 2:
            new[v] = v
            continue
        step = math.lcm(1, *(new[w] for w in new if w >= 2 and v % w == 0))
        if caps and v in caps:
            new[v] = max(step, caps[v] // step * step)
        elif scale:
            new[v] = v // scale if v % (scale * step) == 0 else max(step, v // scale // step * step)
        else:
            new[v] = _pick(v, step, limit)
    out = dict(constants)
    for k, v in constants.items():
        if _is_int(v):
            out[k] = min(v, batch) if k.lower() in _BATCH_NAMES and k not in fixed else new[v]
        elif _int_seq(v):
            out[k] = type(v)(new[x] for x in v)
    return out


# ---------------------------------------------------------------------------------------
# CPU shapes: checked against the reference, searched when the first one does not do
# ---------------------------------------------------------------------------------------
CPU_FLOPS_BUDGET = 1e9
CPU_BYTES_BUDGET = 200e6
"""A derived CPU shape is one on which the reference runs on CPU within these FLOPs (torch's
flop counter) and bytes (inputs + parameters + buffers + outputs)."""
CPU_BYTES_TARGET = 2e6
"""Within the budget, the search goes on shrinking (while the reference accepts it) to this
many bytes: Triton's interpreter runs a candidate's kernels about 10^4 times slower than a
GPU, and every candidate is checked on several CPU shapes and trials."""

# (limit, batch) for _shrink, tried in turn while the shape is above the budget.
_LADDER = ((64, 8), (64, 2), (64, 1), (32, 2), (32, 1), (16, 2), (16, 1), (8, 2), (8, 1))
# During the search a shape above the budget is still run (to learn whether the reference
# accepts it) while its FLOPs and bytes are at most these many times the budget.
_PROBE_FLOPS, _PROBE_BYTES = 10.0, 2.5
_CPU_SHAPE_VERSION = 5  # bump when the derivation changes: part of the on-disk cache key


@dataclass(frozen=True)
class _Trial:
    """The reference at one shape: its cost, and its error where it was run and failed."""

    shape: Shape
    flops: float | None
    nbytes: float | None
    ran: bool = False
    error: str | None = None

    @property
    def within(self) -> bool:
        return (self.flops is not None and self.nbytes is not None
                and self.flops <= CPU_FLOPS_BUDGET and self.nbytes <= CPU_BYTES_BUDGET)

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None and self.within

    @property
    def cost(self) -> float:
        if self.flops is None or self.nbytes is None:
            return math.inf
        return max(self.flops / CPU_FLOPS_BUDGET, self.nbytes / CPU_BYTES_BUDGET)


@dataclass(frozen=True)
class _CpuShape:
    shape: Shape
    error: str | None  # None: the reference runs on ``shape`` within the budget


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _probe_ok(flops: float | None, nbytes: float | None) -> bool:
    return (flops is None or flops <= _PROBE_FLOPS * CPU_FLOPS_BUDGET) and (
        nbytes is None or nbytes <= _PROBE_BYTES * CPU_BYTES_BUDGET)


def _try_shape(spec: ProblemSpec, shape: Shape, probe: bool) -> _Trial:
    """Cost on the meta device; then, unless that is above the budget (or, with ``probe``,
    above ``_PROBE_*`` times it), the reference built and run on CPU as the verifier does."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    flops, nbytes = spec.roofline(shape)
    if flops is not None and nbytes is not None and (
            flops > CPU_FLOPS_BUDGET or nbytes > CPU_BYTES_BUDGET):
        if not probe or not _probe_ok(flops, nbytes):
            return _Trial(shape, flops, nbytes)
    counter = FlopCounterMode(display=False) if flops is None else contextlib.nullcontext()
    try:
        init = spec.make_init_inputs(shape, seed=0)
        model = spec.make_model(init, 0, "cpu", shape=shape)
        inputs = spec.make_inputs(shape, 1, "cpu")
        with torch.no_grad(), counter:
            out = model(*inputs)
    except Exception as e:  # noqa: BLE001 - the reference rejects this shape: the search goes on
        return _Trial(shape, flops, nbytes, ran=True, error=_one_line(e))
    if flops is None:
        flops = float(counter.get_total_flops())  # type: ignore[union-attr]
    if nbytes is None:
        outs = out if isinstance(out, (tuple, list)) else [out]
        nbytes = float(sum(_nbytes(t) for t in [*inputs, *outs])
                       + sum(_nbytes(t) for t in [*model.parameters(), *model.buffers()]))
    return _Trial(shape, flops, nbytes, ran=True)


def _search_cpu_shape(spec: ProblemSpec) -> _CpuShape:
    """The CPU shape for a problem that declares none.

    1. ``_shrink`` the main shape, then shrink harder (``_LADDER``: batch, then every size)
       while the reference is above the budget.
    2. Where the reference fails on a shrunk shape (a pooling window, a patch grid or a fixed
       image size needs a larger size), raise every shrunk value back to the file's, lower
       them one at a time keeping raised those the reference needs, bisect each of those to
       the least value it accepts, then shrink the others down the ladder again.
    3. Else divide every size by one factor (2, 4, 8, ...), which keeps their ratios.
    """
    consts, fixed = spec.constants, spec.meta.fixed
    memo: dict[str, _Trial] = {}

    def trial(limit: int, batch: int, caps: dict[int, int] | None = None,
              probe: bool = False, scale: int = 0) -> _Trial:
        shape = _shrink(consts, fixed, limit, batch, caps, scale)
        key = json.dumps(shape, sort_keys=True, default=str)
        t = memo.get(key)
        if t is None or (probe and not t.ran and _probe_ok(t.flops, t.nbytes)):
            t = memo[key] = _try_shape(spec, shape, probe)
        return t

    def fits(limit: int, batch: int) -> dict[int, int] | None:
        """Per-value limits on which the reference runs at (limit, batch), or None."""
        default = _shrink(consts, fixed, limit, batch)
        shrinkable = _size_classes(consts, fixed)
        default_new: dict[int, int] = {}
        for k, v in consts.items():
            if _int_seq(v) or (_is_int(v) and not (k.lower() in _BATCH_NAMES and k not in fixed)):
                pairs = zip(v, default[k]) if _int_seq(v) else [(v, default[k])]
                default_new.update((x, y) for x, y in pairs if shrinkable.get(x) and x != y)
        changed = sorted(default_new, reverse=True)

        def least(caps: dict[int, int]) -> dict[int, int]:
            for v in list(caps):
                lo, hi = default_new[v] - 1, v  # the reference fails with v at lo, runs at hi
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if trial(limit, batch, {**caps, v: mid}, probe=True).error:
                        lo = mid
                    else:
                        hi = mid
                caps[v] = hi
            return caps

        # One value raised alone, the cheapest that works; else all, then lowered in turn.
        singles = [least({v: v}) for v in changed
                   if not trial(limit, batch, {v: v}, probe=True).error]
        if singles:
            return min(singles, key=lambda caps: trial(limit, batch, caps).cost)
        caps = {v: v for v in changed}
        if not changed or trial(limit, batch, caps, probe=True).error:
            return None
        for v in changed:
            fewer = {k: c for k, c in caps.items() if k != v}
            if not trial(limit, batch, fewer, probe=True).error:
                caps = fewer
        return least(caps)

    first = trial(*_LADDER[0])
    failed_at: tuple[int, int] | None = None
    within: _Trial | None = None
    for limit, batch in _LADDER:
        t = trial(limit, batch)
        if t.ok and t.nbytes is not None and t.nbytes <= CPU_BYTES_TARGET:
            return _CpuShape(t.shape, None)
        if t.ok:
            within = within or t  # within the budget; a smaller one runs faster interpreted
            continue
        if t.error and failed_at is None:
            failed_at = (limit, batch)
        if t.error and within is not None:
            break  # smaller still is refused by the reference: keep the one that ran
    if within is not None:
        return _CpuShape(within.shape, None)
    if failed_at is not None:
        limit = failed_at[0]
        for batch in sorted({1, failed_at[1]}):
            caps = fits(limit, batch)
            if caps is None:
                continue
            for lim, b in [(limit, 8), *(step for step in _LADDER if step[0] <= limit)]:
                t = trial(lim, b, caps)
                if t.ok:
                    return _CpuShape(t.shape, None)
    # Sizes tied by more than divisibility (a LayerNorm over out_channels applied to the
    # last spatial axis, 2 * W == out_channels): divide every size by one factor.
    top = max(_size_classes(consts, fixed), default=0)
    for batch in (2, 1):
        factor = 2
        while factor <= top:
            t = trial(0, batch, scale=factor)
            if t.ok:
                return _CpuShape(t.shape, None)
            factor *= 2
    return _CpuShape(*_search_failure(first, list(memo.values())))


def _search_failure(first: _Trial, trials: list[_Trial]) -> tuple[Shape, str]:
    """The closest shape found, and why it is not good enough (one line)."""
    def sizes(shape: Shape) -> str:
        return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}"
                         for k, v in shape.items() if not isinstance(v, float))

    accepted = [t for t in trials if not t.error]
    if not accepted:
        return first.shape, (f"the reference fails on every CPU shape tried ({len(trials)}); "
                             f"at {sizes(first.shape)}: {first.error}")
    least = min(t.cost for t in accepted)
    best = next(t for t in accepted if t.cost <= least * 1.01)  # the first, of near-equals
    budget = f"{_human(CPU_FLOPS_BUDGET)}FLOP and {_human(CPU_BYTES_BUDGET)}B"
    runs = "the reference runs on" if best.ran else "kbench can shrink it to"
    return best.shape, (f"no CPU shape within {budget} found ({len(trials)} tried): the "
                        f"smallest {runs} needs {_human(best.flops)}FLOP and "
                        f"{_human(best.nbytes)}B ({sizes(best.shape)})")


def _cache_path(spec: ProblemSpec) -> Path | None:
    import torch

    root = os.environ.get("KBENCH_CACHE_DIR", "")
    if root.lower() in ("off", "none", "0"):
        return None
    base = Path(root) if root else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kbench"
    return (base / "cpu_shapes" /
            f"{spec.source_hash}-v{_CPU_SHAPE_VERSION}-torch{torch.__version__}.json")


_CPU_SHAPES: dict[str, _CpuShape] = {}


def _derived_cpu_shape(spec: ProblemSpec) -> _CpuShape:
    """:func:`_search_cpu_shape`, once per file content: kept in memory and on disk under
    ``$KBENCH_CACHE_DIR`` (default ``~/.cache/kbench``; ``off`` keeps it in memory only)."""
    hit = _CPU_SHAPES.get(spec.source_hash)
    if hit is not None:
        return hit
    with _GEN_LOCK:  # the search sets module constants too: one search, one thread
        hit = _CPU_SHAPES.get(spec.source_hash)
        if hit is not None:
            return hit
        path = _cache_path(spec)
        try:
            raw = json.loads(path.read_text()) if path else None
            if raw is not None and set(raw["shape"]) == set(spec.constants):
                shape = {k: _like(spec.constants[k], v) for k, v in raw["shape"].items()}
                hit = _CpuShape(shape, raw["error"])
        except (OSError, ValueError, KeyError, TypeError):
            hit = None
        if hit is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constructors' warnings, once per trial
                hit = _search_cpu_shape(spec)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps({"shape": hit.shape, "error": hit.error}))
                    os.replace(tmp, path)
        _CPU_SHAPES[spec.source_hash] = hit
    return hit


def derive_shapes(spec: ProblemSpec, base: Shape, max_n: int = 3) -> dict[str, Shape]:
    """Shapes the candidate was never shown, made by perturbing ``base``'s size constants:
    batch-like constants to 1, the largest sizes to an odd neighbour. Callers keep only those
    on which the reference runs."""
    if not spec.meta.derive:
        return {}
    sizes = _int_constants(base, spec.meta.fixed)
    batch = [k for k, v in base.items() if k.lower() in _BATCH_NAMES and k not in spec.meta.fixed
             and isinstance(v, int) and not isinstance(v, bool) and v > 1]
    if not sizes and not batch:
        return {}
    out: dict[str, Shape] = {}
    if batch:
        out["derived_batch1"] = {**base, **{k: 1 for k in batch}}
    others = sorted((k for k in sizes if k not in batch), key=lambda k: -sizes[k])

    # Sizes that a group or head count divides stay multiples of it (an odd multiple).
    counts = [v for k, v in base.items() if _is_int(v) and v >= 2 and k not in sizes
              and any(w in k.lower() for w in ("group", "head"))]

    def odd(k: str) -> int:
        v = sizes[k]
        step = math.lcm(1, *(d for d in counts if v % d == 0 and d < v))
        q = v // step
        return step * (q + 1 if q % 2 == 0 else q + 2)

    for k in others[:2]:
        out[f"derived_{k}_odd"] = {**base, k: odd(k)}
    if len(others) > 1:
        out["derived_all_odd"] = {**base, **{k: odd(k) for k in others}}
    # Keep the total work of a derived shape close to the base's (never much larger).
    return dict(list(out.items())[:max_n])


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _packaged_root() -> Path:
    return Path(str(importlib.resources.files("problems")))


def _constants(module: ModuleType) -> Shape:
    """Module-level numbers, and tuples / lists of ints (``input_shape = (4096,)``,
    ``layer_sizes = [400, 800]``), as written in the file."""
    return {
        k: v for k, v in vars(module).items()
        if not k.startswith("_") and k != "KBENCH"
        and ((isinstance(v, (int, float)) and not isinstance(v, bool)) or _int_seq(v))
    }


def _int_seq(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and bool(v) and all(_is_int(x) for x in v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _like(current: Any, v: Any) -> Any:
    """``v`` in the container type of ``current``: shapes travel as JSON, so a tuple
    constant comes back as a list and is turned back into a tuple here."""
    if isinstance(v, list) and isinstance(current, tuple):
        return tuple(v)
    if isinstance(v, tuple) and isinstance(current, list):
        return list(v)
    return v


def load_file(path: str | Path, key: str | None = None, suite: str | None = None) -> ProblemSpec:
    """Load one problem file. Raises :class:`ProblemError` naming the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such problem file")
    source = path.read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    mod_name = f"kbench_problem_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure of a user's file is reported as one line
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
    return ProblemSpec(
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


def _problem_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def _all_packaged() -> list[tuple[str, Path]]:
    root = _packaged_root()
    out = []
    for suite in SUITES:
        for p in _problem_files(root / suite):
            out.append((f"{suite}/{p.stem}", p))
    return out


def _resolve_one(sel: str) -> list[tuple[str | None, Path]]:
    path = Path(sel).expanduser()
    if path.is_file():
        return [(None, path)]
    if path.is_dir():
        files = _problem_files(path)
        if not files:
            raise ProblemError(f"{path}: directory holds no problem files (*.py)")
        return [(None, p) for p in files]
    packaged = _all_packaged()
    if sel == "all":
        return list(packaged)
    if sel in SUITES:
        return [(k, p) for k, p in packaged if k.startswith(sel + "/")]
    pattern = sel[:-3] if sel.endswith(".py") else sel
    if any(c in pattern for c in "*?["):
        return [(k, p) for k, p in packaged if fnmatch.fnmatch(k, pattern)]
    return [(k, p) for k, p in packaged if k == pattern]


def load(selector: str) -> list[ProblemSpec]:
    """Load every problem named by ``selector`` (see the module docstring)."""
    parts = [s.strip() for s in selector.split(",") if s.strip()]
    if not parts:
        raise ProblemError("empty problem selector; try a suite (level1), an id (level1/relu) or a path")
    seen: dict[Path, ProblemSpec] = {}
    for part in parts:
        found = _resolve_one(part)
        if not found:
            raise ProblemError(
                f"no problem matches {part!r}; suites are {', '.join(SUITES)} "
                "(see `kbench problems list`), or pass a file or directory path"
            )
        for key, p in found:
            rp = p.resolve()
            if rp not in seen:
                suite = key.split("/")[0] if key else None
                seen[rp] = load_file(p, key=key, suite=suite)
    return list(seen.values())


def _human(n: float | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    exp = min(int(math.log10(abs(n)) // 3), 4)
    return f"{n / 10 ** (3 * exp):.3g}{['', 'K', 'M', 'G', 'T'][exp]}"


# -- Loading with a report: one bad file does not hide the others ----------------------
@dataclass(frozen=True)
class LoadFailure:
    """A problem file that could not be loaded, and why (one line, without the path)."""

    path: Path
    key: str | None
    error: str

    @property
    def id(self) -> str:
        return self.key or self.path.stem

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "path": str(self.path), "error": self.error}


def load_report(selector: str) -> tuple[list[ProblemSpec], list[LoadFailure]]:
    """Like :func:`load`, but a file that fails to load is reported, not raised.

    Returns the problems that loaded and one :class:`LoadFailure` per file that did not
    (bad Python, missing ``Model``, a malformed ``KBENCH``, bytes that are not UTF-8, ...).
    A selector that matches nothing is still a :class:`ProblemError`.

    Example:
        >>> specs, failures = load_report("level1/relu")
        >>> [s.key for s in specs], failures
        (['level1/relu'], [])
    """
    parts = [s.strip() for s in selector.split(",") if s.strip()]
    if not parts:
        raise ProblemError("empty problem selector; try a suite (level1), an id (level1/relu) or a path")
    specs: dict[Path, ProblemSpec] = {}
    failures: dict[Path, LoadFailure] = {}
    for part in parts:
        found = _resolve_one(part)
        if not found:
            raise ProblemError(
                f"no problem matches {part!r}; suites are {', '.join(SUITES)} "
                "(see `kbench problems list`), or pass a file or directory path"
            )
        for key, p in found:
            rp = p.resolve()
            if rp in specs or rp in failures:
                continue
            try:
                specs[rp] = load_file(p, key=key, suite=key.split("/")[0] if key else None)
            except ProblemError as e:
                msg = str(e)
                failures[rp] = LoadFailure(p, key, msg.removeprefix(f"{p}: "))
            except UnicodeDecodeError as e:
                failures[rp] = LoadFailure(
                    p, key, f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})")
            except Exception as e:  # noqa: BLE001 - the reason is kept and shown per file
                failures[rp] = LoadFailure(p, key, f"{type(e).__name__}: {e}")
    return list(specs.values()), list(failures.values())
