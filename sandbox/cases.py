"""Cases: what the parent checks a candidate on, planned and made here, never in the child.

A :class:`_Case` is one shape (declared, derived, or the smallest one again with the
reference's constant parameters redrawn) with its planned trials: the problem's own input
sets first, perturbed ones after. References are computed lazily, when the child asks for a
trial's inputs, and dropped once compared.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox._child import checksum
from sandbox._inputs import timed_seed
from sandbox.errors import ProblemError
from sandbox.job import Limits
from sandbox.perturb import INPUT_KINDS, describe, perturb_inputs, redraw_constant_tensors
from sandbox.problem import ProblemSpec, Shape, derive_shapes

__all__: list[str] = []  # internal to the verifier; sandbox.verifier re-exports what tests use


@dataclass
class _Case:
    """One shape (or the redrawn-parameter variant of one) and its planned trials: the
    problem's own input sets first, perturbed ones after. Timing never uses these sets: it
    gets ``timed_seeds``, drawn when it begins (:func:`draw_timed`).

    References are computed when the child asks for a trial's inputs and dropped once its
    output is compared (an audited timed output gets the reference of its own seed, made
    then), so the parent holds a bounded number of outputs however large the problem."""

    name: str
    params: Shape
    derived: bool
    timed: bool
    init_seed: int
    model: Any = field(default=None, repr=False)
    init_on: str = "device"  # where the reference's parameters were drawn (build_model)
    kinds: list[str] = field(default_factory=list)  # "own" | "signed" | "scaled", per trial
    seeds: list[int] = field(default_factory=list)
    refs: dict[int, Any] = field(default_factory=dict, repr=False)
    inputs: dict[int, list[Any]] = field(default_factory=dict, repr=False)  # for `check`
    positive: dict[int, bool] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    param_seed: int | None = None  # set for the case whose constant parameters are redrawn
    redrawn: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # redrawn names ModelNew holds no match for
    notes: list[str] = field(default_factory=list)
    profile_trial: int = 0  # the checked call whose device kernels are listed (GPU)
    own_rms: float = 0.0  # RMS of the reference's output on trial 0 (own inputs)
    ref_ms: float | None = None  # the reference's fastest call here (plan and trials)
    # Drawn when timing begins (draw_timed), never before: the child learns them only then.
    timed_seeds: list[int] = field(default_factory=list, repr=False)
    audit_back: int = 0  # which of the child's last AUDIT_RING timed samples is audited
    big: bool = False  # the reference's output is above _KEEP_BYTES: device cache released
    # The plan's trials (own input sets, perturbation kinds), made by complete_case; built:
    # None until then, True once the reference model is made, False when the case is dropped
    # (drop_note says why, where a verdict should say it).
    n_own: int = 1
    perturb: tuple[str, ...] = ()
    built: bool | None = None
    drop_note: str | None = field(default=None, repr=False)

    @property
    def n_run(self) -> int:
        return len(self.kinds) - len(self.skipped)

    def label(self, i: int) -> str:
        what = []
        if self.param_seed is not None:
            what.append(describe("params"))
        if self.kinds[i] != "own":
            what.append(describe(self.kinds[i], self.positive.get(i, False)))
        if self.missing:
            what.append("ModelNew holds no tensor matching the reference's "
                        + ", ".join(self.missing[:6]))
        tag = f" ({'; '.join(what)})" if what else ""
        return f"shape {self.name!r}{' (derived)' if self.derived else ''} trial {i}{tag}"


class _InputSizes:
    """How large a shape's inputs are: elements (what orders a problem's shapes) and bytes
    (whether an optional shape fits the device).

    Counted on the meta device, which allocates nothing. But nearly every meta operation
    (``randn``, ``randint``, arithmetic) runs a ``torch._check``, which imports sympy
    (0.3 s with bytecode, 2.2 s without, in ``kbench eval``'s own process, before its first
    case). The sizes depend only on the problem's file and the shape, so they are kept on
    disk beside the CPU shapes (``$KBENCH_CACHE_DIR/input_sizes``): a warm cache plans the
    cases without running the problem's ``get_inputs``."""

    def __init__(self, spec: ProblemSpec) -> None:
        from sandbox._cachedir import cache_dir

        self.spec = spec
        root = cache_dir()
        self.path = root / "input_sizes" / f"{spec.source_hash}.json" if root else None
        self.known: dict[str, tuple[float, int | None]] = {}
        self.new = False
        if self.path is not None:
            try:
                raw = json.loads(self.path.read_text())
                self.known = {str(k): (float(e), None if b is None else int(b))
                              for k, (e, b) in raw.items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self.known = {}

    def _sizes(self, shape: Shape) -> tuple[float, int | None]:
        key = json.dumps(shape, sort_keys=True, default=repr)
        hit = self.known.get(key)
        if hit is None:
            try:
                xs = self.spec.make_inputs(shape, 0, "meta")
                hit = (float(sum(x.numel() for x in xs if hasattr(x, "numel"))),
                       sum(_nbytes(x) for x in xs))
            except Exception:  # noqa: BLE001 - meta unsupported: the product of the sizes
                hit = (float(math.prod(v for v in shape.values()
                                       if isinstance(v, int) and v > 0)), None)
            self.known[key], self.new = hit, True
        return hit

    def __call__(self, shape: Shape) -> float:
        """The inputs' elements (the product of the sizes where meta cannot make them)."""
        return self._sizes(shape)[0]

    def nbytes(self, shape: Shape) -> int | None:
        """The inputs' bytes, None where meta cannot make them."""
        return self._sizes(shape)[1]

    def save(self) -> None:
        if self.new and self.path is not None:
            from sandbox._cachedir import write_json_atomically

            write_json_atomically(self.path, self.known)
            self.new = False


def _finite(x: Any) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return not x.is_floating_point() or bool(torch.isfinite(x).all())
    if isinstance(x, (list, tuple)):
        return all(_finite(y) for y in x)
    return True


def _reference(spec: ProblemSpec, case: _Case, xs: list[Any]) -> Any:
    """The reference's output on ``xs``; its call time is kept (the fastest one) for the
    hang limit of timing (:func:`timing_limit_s`)."""
    import torch

    keep = spec.meta.check is not None  # a custom check reads the inputs afterwards
    args = [x.clone() if keep and isinstance(x, torch.Tensor) else x for x in xs]
    cuda = any(isinstance(x, torch.Tensor) and x.is_cuda for x in args)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = case.model(*args)
    if cuda:
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    case.ref_ms = ms if case.ref_ms is None else min(case.ref_ms, ms)
    return out


# Timed input sets per shape, at least: more distinct sets than a cache can profitably hold.
MIN_TIMED_SETS = 16
# The child keeps the outputs of its last AUDIT_RING timed samples, whichever is audited.
AUDIT_RING = 4


def draw_timed(case: _Case, n: int) -> list[int]:
    """Fresh timed seeds for ``case`` (``n``, at least :data:`MIN_TIMED_SETS`), disjoint from
    its correctness seeds, and the secret choice of the audited sample among the child's
    last :data:`AUDIT_RING`. Called when the parent sends ``time``, not before."""
    taken = set(case.seeds)
    seeds: list[int] = []
    while len(seeds) < max(MIN_TIMED_SETS, n):
        s = secrets.randbits(62)
        if s not in taken:
            taken.add(s)
            seeds.append(s)
    case.timed_seeds = seeds
    case.audit_back = secrets.randbelow(AUDIT_RING)
    return seeds


def is_timed_seed(case: _Case, seed: int, call: Any) -> bool:
    """Whether ``seed`` is the input seed of timed call ``call`` of ``case``'s timing
    (:func:`sandbox._inputs.timed_seed` of the seeds drawn here) and no correctness seed."""
    if not case.timed_seeds or not isinstance(call, int) or isinstance(call, bool) or call < 0:
        return False
    return timed_seed(case.timed_seeds, call) == seed and seed not in case.seeds


def pick_audited(case: _Case, samples: list[int]) -> list[int]:
    """The sample (among those the child kept, oldest first) whose output is audited: the one
    ``case.audit_back`` places from the end, chosen in secret when timing began."""
    if not samples:
        return []
    return [samples[-1 - case.audit_back % len(samples)]]


def timed_reference(spec: ProblemSpec, case: _Case, seed: int,
                    device: str) -> tuple[Any, list[Any] | None]:
    """The reference's output on the timed input set of ``seed`` (and the inputs, kept only
    for a problem's custom check)."""
    xs = spec.make_inputs(case.params, seed, device)
    ref = _reference(spec, case, xs)
    return ref, (xs if spec.meta.check is not None else None)


def timing_limit_s(cases: list[_Case], limits: Limits) -> tuple[float, bool]:
    """The timing phase's hang limit, and whether it was scaled (else ``limits.timing_s``).

    ``compile_allowance_s + sum over timed shapes of ref_s * calls * hang_factor``, capped
    at ``limits.timing_s``, where ``ref_s`` is the reference's fastest call measured here and
    ``calls`` the most calls the timing rule makes at that speed: ``2 * max_reps`` samples
    (warm-up and measured), 8 more (audited and traced calls), each of ``calls_per_sample``
    calls. A shape whose reference time is unknown leaves the fixed limit."""
    from sandbox.timing import calls_per_sample

    cfg = limits.timing
    total = limits.compile_allowance_s
    for c in cases:
        if not c.timed:
            continue
        if c.ref_ms is None:
            return limits.timing_s, False
        calls = (2 * cfg.max_reps + 8) * calls_per_sample(c.ref_ms, cfg)
        total += c.ref_ms / 1e3 * calls * limits.hang_factor
    if total >= limits.timing_s:
        return limits.timing_s, False
    return total, True


# The check phase's hang limit per trial (on a GPU): a trial runs from the child's request for
# its inputs to its next request. The first trial of a shape may compile and autotune the
# candidate's kernels for that shape: 2 x compile_allowance_s; a later one makes its inputs,
# calls the candidate and hands the output over: TRIAL_ALLOWANCE_S; both plus the reference's
# call time x CALLS_PER_TRIAL x hang_factor. Never above the phase's own limit (check_s).
TRIAL_ALLOWANCE_S = 20.0
CALLS_PER_TRIAL = 4


def check_step_s(case: _Case, first: bool, limits: Limits, device: str) -> float | None:
    """The hang limit of one checked trial of ``case`` (``first``: the shape's first), or
    None where the check phase keeps its fixed limit: off CUDA (the Triton interpreter runs
    a kernel far slower than PyTorch runs the reference) or when the reference's time is
    unknown."""
    if not device.startswith("cuda") or case.ref_ms is None:
        return None
    base = 2 * limits.compile_allowance_s if first else TRIAL_ALLOWANCE_S
    return min(limits.check_s, base + case.ref_ms / 1e3 * CALLS_PER_TRIAL * limits.hang_factor)


def _rms(x: Any) -> float:
    """Root mean square of the floating-point tensors in ``x`` (0.0 if none)."""
    import torch

    ts = [t for t in (x if isinstance(x, (list, tuple)) else [x])
          if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    n = sum(t.numel() for t in ts)
    if not n:
        return 0.0
    sq = sum(float(torch.linalg.vector_norm(t, dtype=torch.float32)) ** 2 for t in ts)
    return math.sqrt(sq / n) if math.isfinite(sq) else 0.0


def atol_for(case: _Case, i: int, atol: float) -> float:
    """The absolute tolerance of trial ``i``: the problem's own, scaled up on a perturbed
    trial by how much larger the reference's output is there than on the problem's own
    inputs (spread magnitudes make larger sums, and rounding errors grow with them). The
    demand relative to the output's scale stays the problem's."""
    if case.kinds[i] == "own" or case.own_rms <= 0 or i not in case.refs:
        return atol
    return atol * max(1.0, _rms(case.refs[i]) / case.own_rms)


def _prepare_trial(spec: ProblemSpec, case: _Case, i: int, device: str) -> dict[str, Any]:
    """Make trial ``i``'s inputs and reference here, and the reply that lets the child make
    the same inputs: the seed, the checksum, and for a perturbed trial how to perturb. A
    perturbed trial on which the reference has no finite output is skipped."""
    kind, seed = case.kinds[i], case.seeds[i]
    xs: list[Any] | None = spec.make_inputs(case.params, seed, device)
    assert xs is not None
    reply: dict[str, Any] = {"seed": seed, "checksum": checksum(xs), "kind": kind,
                             "profile": i == case.profile_trial}
    if kind == "own":
        if i not in case.refs:
            case.refs[i] = _reference(spec, case, xs)
        if spec.meta.check is not None:
            case.inputs[i] = xs
        return reply
    domain = spec.meta.perturb.inputs
    pseed = secrets.randbits(62)
    for positive in {"auto": (False, True), "signed": (False,), "positive": (True,)}[domain]:
        xs = xs if xs is not None else spec.make_inputs(case.params, seed, device)
        px = perturb_inputs(xs, kind, pseed, positive)
        xs = None  # remade if needed: at most one input set and one output alive at a time
        pchecksum = checksum(px)  # before the reference, which may write into its inputs
        ref = _reference(spec, case, px)
        if _finite(ref):
            case.refs[i], case.positive[i] = ref, positive
            if spec.meta.check is not None:
                case.inputs[i] = px
            return {**reply, "pseed": pseed, "positive": positive, "pchecksum": pchecksum}
        del ref
    case.skipped.add(i)
    case.notes.append(f"{kind} inputs skipped on shape {case.name!r}: the reference's output "
                      "is not finite there (outside the op's domain)")
    return {"skip": True}


# References larger than this are not kept on the device between uses: made again when
# needed (plan time) or parked in host memory (the own trials of a timed shape).
_KEEP_BYTES = 256 << 20


def release_device_cache(device: str) -> None:
    """Give the parent's cached free device memory back to the driver, so that the child (a
    separate process, with its own allocator) can use it. Called after large inputs and
    references were made or compared here; a no-op off CUDA."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _nbytes(x: Any) -> int:
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(y) for y in x)
    return x.numel() * x.element_size() if hasattr(x, "element_size") else 0


def _plan(spec: ProblemSpec, case: _Case, n_own: int, perturb: tuple[str, ...],
          device: str) -> bool:
    """Seeds for ``n_own`` own trials and one per perturbation kind; trial 0's reference is
    computed now, which also tells whether the reference runs on this shape at all."""
    case.kinds = ["own"] * n_own
    case.seeds = [secrets.randbits(62) for _ in range(n_own)]
    case.profile_trial = secrets.randbelow(n_own)  # the candidate cannot tell which
    import torch

    xs = spec.make_inputs(case.params, case.seeds[0], device)
    ref = _reference(spec, case, xs)
    finite = _finite(ref)
    case.own_rms = _rms(ref) if finite else 0.0
    if _nbytes(ref) <= _KEEP_BYTES:  # else made again when the child asks for it
        case.refs[0] = ref
        if spec.meta.check is not None:
            case.inputs[0] = xs
    else:
        case.big = True
    floats = any(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs)
    del ref, xs
    if case.big:
        release_device_cache(device)
    if floats and spec.meta.perturb.inputs != "none":
        case.kinds += list(perturb)
        case.seeds += [secrets.randbits(62) for _ in perturb]
    return finite


# A verification holds about this many copies of one input set on the device at once, parent
# and child together (inputs, the mutation snapshot, poison, outputs, the reference's).
_COPIES = 10


def _too_big(sizes: _InputSizes, shape: Shape, device: str) -> str | None:
    """Why an optional shape cannot be checked on ``device`` (None if it can)."""
    if not device.startswith("cuda"):
        return None
    import torch

    need = sizes.nbytes(shape)
    if need is None:
        return None  # unknown size: try it
    try:
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    except Exception:  # noqa: BLE001 - unknown size: try it
        return None
    if _COPIES * need > total:
        return (f"its inputs ({need / 2**30:.1f} GiB) and their checks would not fit in the "
                f"device's {total / 2**30:.1f} GiB")
    return None


def _build_cases(spec: ProblemSpec, device: str, limits: Limits,
                 timed: bool) -> tuple[list[_Case], list[str]]:
    """Every case planned and made (:func:`plan_cases`, then :func:`complete_case` each): the
    kept ones, and why shapes were skipped."""
    cases, dropped = plan_cases(spec, device, limits, timed)
    for case in cases:
        complete_case(spec, case, device)
    dropped += [c.drop_note for c in cases if c.built is False and c.drop_note]
    return [c for c in cases if c.built], dropped


def plan_cases(spec: ProblemSpec, device: str, limits: Limits,
               timed: bool) -> tuple[list[_Case], list[str]]:
    """The cases to check, in order, with their seeds, and nothing built: the declared
    shapes, the derived ones, one unseen shape above the largest declared one, and (where
    the problem's constant parameters may be redrawn) the smallest shape again with them
    redrawn. :func:`complete_case` makes each, and may still drop it. Also why shapes were
    skipped already (too large for the device)."""
    declared = spec.shapes_for(device)
    elems = _InputSizes(spec)
    by_size = sorted(declared, key=lambda n: elems(declared[n]))
    derived = {
        n: s for n, s in derive_shapes(spec, declared[by_size[0]], limits.max_derived).items()
        if s not in declared.values()
    }
    # One unseen shape just above the largest declared one: catches kernels whose grid or
    # constants were fitted to the main shape and still pass every smaller size.
    # The smallest such shape: a size just past the main one, not the largest odd variant
    # (whose inputs and checks may not fit beside the main shape's on the device).
    top = elems(declared[by_size[-1]])
    above = sorted((s for n, s in derive_shapes(spec, declared[by_size[-1]], 8).items()
                    if n != "derived_batch1" and s not in declared.values()
                    and s not in derived.values() and elems(s) > top),
                   key=elems)
    dropped: list[str] = []
    if above:
        why = _too_big(elems, above[0], device)
        if why:
            dropped.append(f"derived shape 'derived_large_odd' skipped: {why}")
        else:
            derived["derived_large_odd"] = above[0]
    elems.save()
    plan = [(n, s, False) for n, s in declared.items()] + [(n, s, True) for n, s in derived.items()]
    cases = [_Case(name, shape, is_derived, timed and not is_derived, secrets.randbits(31),
                   n_own=limits.derived_trials if is_derived else limits.trials,
                   perturb=() if is_derived else INPUT_KINDS)
             for name, shape, is_derived in plan]
    if spec.meta.perturb.params:  # the smallest declared shape, constant parameters redrawn
        cases.append(_Case(f"{by_size[0]}+params", declared[by_size[0]], False, False,
                           secrets.randbits(31), param_seed=secrets.randbits(62),
                           n_own=1, perturb=INPUT_KINDS[:1]))
    return cases, dropped


def complete_case(spec: ProblemSpec, case: _Case, device: str) -> None:
    """Make ``case``, once: the reference model after its ``init_seed``, the redrawn
    parameters of a ``+params`` case, the plan of its trials and trial 0's reference
    (:func:`_plan`). Sets ``built``. A case is dropped (``built`` False) when it is a derived
    shape the reference fails on (``drop_note`` says so), or a ``+params`` case with nothing
    to redraw or no finite output (silently). A declared shape the reference fails on is a
    ProblemError."""
    if case.built is not None:
        return
    try:
        init = spec.make_init_inputs(case.params, seed=case.init_seed)
        case.model, case.init_on = spec.build_model(init, case.init_seed, device,
                                                    shape=case.params)
        if case.param_seed is not None:
            case.redrawn = redraw_constant_tensors(case.model, case.param_seed)
            if not (case.redrawn and _plan(spec, case, case.n_own, case.perturb, device)):
                _drop(case, None)
                return
        else:
            _plan(spec, case, case.n_own, case.perturb, device)
    except Exception as e:  # noqa: BLE001 - a derived shape the reference rejects is dropped
        if case.param_seed is not None:
            raise
        if case.derived:
            _drop(case, f"derived shape {case.name!r} skipped: the reference fails on it "
                        f"({type(e).__name__})")
            return
        raise ProblemError(f"{spec.key}: the reference fails on its own shape {case.name!r}: "
                           f"{type(e).__name__}: {e}") from e
    case.built = True


def _drop(case: _Case, note: str | None) -> None:
    case.built, case.drop_note = False, note
    case.model = None
    case.refs.clear()
    case.inputs.clear()
