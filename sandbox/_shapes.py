"""Shapes a problem's file does not declare: CPU shapes (shrunk, checked against the
reference, searched, cached per file content) and derived shapes the candidate never saw.
Part of the problem runtime; the public names are re-exported by :mod:`sandbox.problem`."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox._cachedir import cache_dir, write_json_atomically
from sandbox._inputs import GEN_LOCK, Shape, like

if TYPE_CHECKING:
    from sandbox.problem import ProblemSpec

__all__ = ["CPU_FLOPS_BUDGET", "CPU_BYTES_BUDGET", "CPU_BYTES_TARGET", "derive_shapes"]

# Module constants that are not tensor sizes: never perturbed when deriving shapes (nor are
# integers below 8, which are usually axes, flags or counts rather than sizes).
_NOT_SIZES = {
    "kernel_size", "stride", "padding", "dilation", "groups", "num_groups",
    "n_heads", "num_heads", "n_kv_heads", "num_kv_heads", "head_dim", "top_k", "topk", "k_top",
    "group_size", "bits", "num_bits", "window", "window_size", "block_size", "page_size",
    "seed", "n_layers", "num_layers", "eps", "chunk_size", "num_experts", "vocab_size",
}
_BATCH_NAMES = {"batch", "batch_size", "bs", "b", "n_batch", "num_seqs", "batch_sz"}


def _nbytes(x: Any) -> int:
    import torch

    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0


def _int_constants(constants: Shape, fixed: list[str]) -> dict[str, int]:
    return {
        k: v for k, v in constants.items()
        if isinstance(v, int) and not isinstance(v, bool) and v >= 8  # small ints: axes, flags
        and k not in fixed and k.lower() not in _NOT_SIZES
    }


def _int_seq(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and bool(v) and all(_is_int(x) for x in v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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

    base = cache_dir()
    if base is None:
        return None
    return (base / "cpu_shapes" /
            f"{spec.source_hash}-v{_CPU_SHAPE_VERSION}-torch{torch.__version__}.json")


_CPU_SHAPES: dict[str, _CpuShape] = {}


def _derived_cpu_shape(spec: ProblemSpec) -> _CpuShape:
    """:func:`_search_cpu_shape`, once per file content: kept in memory and on disk under
    ``$KBENCH_CACHE_DIR`` (default ``~/.cache/kbench``; ``off`` keeps it in memory only)."""
    hit = _CPU_SHAPES.get(spec.source_hash)
    if hit is not None:
        return hit
    with GEN_LOCK:  # the search sets module constants too: one search, one thread
        hit = _CPU_SHAPES.get(spec.source_hash)
        if hit is not None:
            return hit
        path = _cache_path(spec)
        try:
            raw = json.loads(path.read_text()) if path else None
            if raw is not None and set(raw["shape"]) == set(spec.constants):
                shape = {k: like(spec.constants[k], v) for k, v in raw["shape"].items()}
                hit = _CpuShape(shape, raw["error"])
        except (OSError, ValueError, KeyError, TypeError):
            hit = None
        if hit is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constructors' warnings, once per trial
                hit = _search_cpu_shape(spec)
            if path is not None:
                write_json_atomically(path, {"shape": hit.shape, "error": hit.error})
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


def _human(n: float | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    exp = min(int(math.log10(abs(n)) // 3), 4)
    return f"{n / 10 ** (3 * exp):.3g}{['', 'K', 'M', 'G', 'T'][exp]}"
