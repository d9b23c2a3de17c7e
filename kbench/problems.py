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
import hashlib
import importlib.resources
import importlib.util
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

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
        """Shapes small enough for the Triton interpreter on CPU."""
        if self.meta.cpu_shapes:
            return {n: {**self.constants, **o} for n, o in self.meta.cpu_shapes.items()}
        return {"small": _shrink(self.constants, self.meta.fixed)}

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
                    setattr(self.module, k, v)
                yield self.module
            finally:
                for k, v in saved.items():
                    setattr(self.module, k, v)

    def make_init_inputs(self, shape: Shape, seed: int | None = None) -> list[Any]:
        """Constructor arguments at ``shape`` (after ``seed``, should they draw anything)."""
        import torch

        with self.at_shape(shape) as m:
            if seed is not None:
                torch.manual_seed(seed)
            return list(m.get_init_inputs())

    def make_inputs(self, shape: Shape, seed: int, device: str) -> list[Any]:
        """Fresh inputs for ``shape`` from ``seed``, created on ``device``."""
        import torch

        with self.at_shape(shape) as m:
            torch.manual_seed(seed)
            with torch.device(device):
                inputs = list(m.get_inputs())
        return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]

    def make_model(self, init_inputs: list[Any], init_seed: int, device: str) -> Any:
        """The reference ``Model``, built on CPU after ``init_seed`` (KernelBench's convention)."""
        import torch

        with _GEN_LOCK:
            torch.manual_seed(init_seed)
            model = self.module.Model(*init_inputs)
        return model.to(device).eval()

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
        with spec.at_shape(shape) as m, torch.device("meta"):
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


def _shrink(constants: Shape, fixed: list[str], limit: int = 64) -> Shape:
    """A small version of a shape for CPU runs: every size constant capped at ``limit``."""
    out = dict(constants)
    for k, v in _int_constants(constants, fixed).items():
        out[k] = min(v, limit)
    return out


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

    def odd(v: int) -> int:
        return v + 1 if v % 2 == 0 else v + 2

    for k in others[:2]:
        out[f"derived_{k}_odd"] = {**base, k: odd(sizes[k])}
    if len(others) > 1:
        out["derived_all_odd"] = {**base, **{k: odd(sizes[k]) for k in others}}
    # Keep the total work of a derived shape close to the base's (never much larger).
    return dict(list(out.items())[:max_n])


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _packaged_root() -> Path:
    return Path(str(importlib.resources.files("problems")))


def _constants(module: ModuleType) -> Shape:
    return {
        k: v for k, v in vars(module).items()
        if not k.startswith("_") and k != "KBENCH"
        and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


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
