"""The trusted parent of verification: it owns seeds, inputs, reference outputs and the verdict.

``verify(spec, source)`` runs the static policy, builds inputs for every declared shape and
for shapes derived from them (the candidate never sees which), computes reference outputs in
this process, runs the candidate in a child (``sandbox._child``), compares every output it
returns, and — on a GPU — times it against eager and ``torch.compile`` baselines measured by
the same protocol, with SOL% against measured device ceilings.
"""

from __future__ import annotations

import ast
import json
import math
import secrets
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sandbox._child import checksum
from sandbox._process import ChildError
from sandbox.backends import Backend, RunningChild, default_backend
from sandbox.compare import compare_outputs
from sandbox.errors import ProblemError
from sandbox.fingerprint import DATASHEET, fingerprint, fingerprint_hash, measure_device_facts
from sandbox.job import Limits
from sandbox.perturb import INPUT_KINDS, describe, perturb_inputs, redraw_constant_tensors
from sandbox.policy import check_source
from sandbox.problem import ProblemSpec, Shape, derive_shapes
from sandbox.stats import geomean
from sandbox.timing import RawTimes, TimingConfig, hidden_work, summarize
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

__all__ = ["Limits", "Cache", "MemoryCache", "verify", "default_device", "roofline_ms"]


class Cache(Protocol):
    """Where baselines and device facts persist; :class:`kbench.store.Store` implements it.

    A baseline that could not be measured (e.g. ``torch.compile`` fails on the problem) is
    kept as a ``Timing`` with ``count == 0`` and the reason in ``payload["error"]``, so that
    it is not re-attempted on every verification.
    """

    def get_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str) -> Any | None: ...  # a record with .timing

    def put_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str, timing: Timing, *, shape: Shape | None = None,
                     fingerprint: dict[str, Any] | None = None,
                     payload: dict[str, Any] | None = None) -> Any: ...

    def get_device_facts(self, fingerprint_hash: str) -> Any | None: ...  # a record with .facts

    def put_device_facts(self, fingerprint_hash: str, fingerprint: dict[str, Any],
                         facts: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class _Rec:
    timing: Timing | None = None
    facts: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


class MemoryCache:
    """A process-local :class:`Cache` (tests, one-off runs)."""

    def __init__(self) -> None:
        self.baselines: dict[tuple[str, ...], _Rec] = {}
        self.facts: dict[str, _Rec] = {}

    def get_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str) -> _Rec | None:
        return self.baselines.get((problem_key, source_hash, shape_name, mode, fingerprint_hash))

    def put_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str, timing: Timing, *, shape: Shape | None = None,
                     fingerprint: dict[str, Any] | None = None,
                     payload: dict[str, Any] | None = None) -> None:
        key = (problem_key, source_hash, shape_name, mode, fingerprint_hash)
        self.baselines[key] = _Rec(timing=timing, payload=payload)

    def get_device_facts(self, fingerprint_hash: str) -> _Rec | None:
        return self.facts.get(fingerprint_hash)

    def put_device_facts(self, fingerprint_hash: str, fingerprint: dict[str, Any],
                         facts: dict[str, Any]) -> None:
        self.facts[fingerprint_hash] = _Rec(facts=facts)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------
# Inputs and references, made here and never in the child
# ---------------------------------------------------------------------------------------
@dataclass
class _Case:
    """One shape (or the redrawn-parameter variant of one) and its planned trials: the
    problem's own input sets first (timing rotates those), perturbed ones after.

    References are computed when the child asks for a trial's inputs and dropped once its
    output is compared (kept only for the own trials of a timed shape, which timed outputs
    are checked against again), so the parent holds a bounded number of outputs however
    large the problem."""

    name: str
    params: Shape
    derived: bool
    timed: bool
    init_seed: int
    model: Any = field(default=None, repr=False)
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


def _input_elems(spec: ProblemSpec, shape: Shape) -> float:
    try:
        xs = spec.make_inputs(shape, 0, "meta")
        return float(sum(x.numel() for x in xs if hasattr(x, "numel")))
    except Exception:  # noqa: BLE001 - meta unsupported: fall back to the product of sizes
        return float(math.prod(v for v in shape.values() if isinstance(v, int) and v > 0))


def _finite(x: Any) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return not x.is_floating_point() or bool(torch.isfinite(x).all())
    if isinstance(x, (list, tuple)):
        return all(_finite(y) for y in x)
    return True


def _reference(spec: ProblemSpec, case: _Case, xs: list[Any]) -> Any:
    import torch

    keep = spec.meta.check is not None  # a custom check reads the inputs afterwards
    args = [x.clone() if keep and isinstance(x, torch.Tensor) else x for x in xs]
    with torch.no_grad():
        return case.model(*args)


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
        ref = _reference(spec, case, px)
        if _finite(ref):
            case.refs[i], case.positive[i] = ref, positive
            if spec.meta.check is not None:
                case.inputs[i] = px
            return {**reply, "pseed": pseed, "positive": positive, "pchecksum": checksum(px)}
        del ref
    case.skipped.add(i)
    case.notes.append(f"{kind} inputs skipped on shape {case.name!r}: the reference's output "
                      "is not finite there (outside the op's domain)")
    return {"skip": True}


# References larger than this are not kept on the device between uses: made again when
# needed (plan time) or parked in host memory (the own trials of a timed shape).
_KEEP_BYTES = 256 << 20


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
    if _nbytes(ref) <= _KEEP_BYTES:  # else made again when the child asks for it
        case.refs[0] = ref
        if spec.meta.check is not None:
            case.inputs[0] = xs
    del ref
    floats = any(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs)
    if floats and spec.meta.perturb.inputs != "none":
        case.kinds += list(perturb)
        case.seeds += [secrets.randbits(62) for _ in perturb]
    return finite


def _build_cases(spec: ProblemSpec, device: str, limits: Limits,
                 timed: bool) -> tuple[list[_Case], list[str]]:
    declared = spec.shapes_for(device)
    by_size = sorted(declared, key=lambda n: _input_elems(spec, declared[n]))
    derived = {
        n: s for n, s in derive_shapes(spec, declared[by_size[0]], limits.max_derived).items()
        if s not in declared.values()
    }
    # One unseen shape just above the largest declared one: catches kernels whose grid or
    # constants were fitted to the main shape and still pass every smaller size.
    above = [s for n, s in derive_shapes(spec, declared[by_size[-1]], 8).items()
             if n != "derived_batch1" and s not in declared.values() and s not in derived.values()]
    if above:
        derived["derived_large_odd"] = above[-1]
    plan = [(n, s, False) for n, s in declared.items()] + [(n, s, True) for n, s in derived.items()]
    cases: list[_Case] = []
    dropped: list[str] = []
    for name, shape, is_derived in plan:
        case = _Case(name, shape, is_derived, timed and not is_derived, secrets.randbits(31))
        try:
            init = spec.make_init_inputs(shape, seed=case.init_seed)
            case.model = spec.make_model(init, case.init_seed, device, shape=shape)
            _plan(spec, case, limits.derived_trials if is_derived else limits.trials,
                  () if is_derived else INPUT_KINDS, device)
        except Exception as e:  # noqa: BLE001 - a derived shape the reference rejects is dropped
            if is_derived:
                dropped.append(f"derived shape {name!r} skipped: the reference fails on it "
                               f"({type(e).__name__})")
                continue
            raise ProblemError(f"{spec.key}: the reference fails on its own shape {name!r}: "
                               f"{type(e).__name__}: {e}") from e
        cases.append(case)
    if spec.meta.perturb.params:
        pc = _params_case(spec, device, by_size[0], declared[by_size[0]])
        if pc is not None:
            cases.append(pc)
    return cases, dropped


def _params_case(spec: ProblemSpec, device: str, base: str, shape: Shape) -> _Case | None:
    """The smallest declared shape again, with the reference's constant parameters and
    buffers redrawn (handed to ModelNew in the child): None if the model has none."""
    case = _Case(f"{base}+params", shape, False, False, secrets.randbits(31),
                 param_seed=secrets.randbits(62))
    init = spec.make_init_inputs(shape, seed=case.init_seed)
    case.model = spec.make_model(init, case.init_seed, device, shape=shape)
    case.redrawn = redraw_constant_tensors(case.model, case.param_seed)
    if not case.redrawn:
        return None
    return case if _plan(spec, case, 1, INPUT_KINDS[:1], device) else None


# ---------------------------------------------------------------------------------------
# Running a child
# ---------------------------------------------------------------------------------------
def _job(work: Path, mode: str, device: str, cases: list[_Case], limits: Limits,
         spec: ProblemSpec, knobs: dict[str, Any] | None = None,
         allow_libraries: tuple[str, ...] = ()) -> None:
    # No seed is written here: each trial's seed reaches the child only when it asks for it.
    job = {
        "mode": mode, "device": device, "candidate": "candidate.py",
        "problem": str(spec.path), "knobs": knobs or {}, "train": spec.meta.mode == "train",
        "allow_libraries": sorted({*spec.meta.allow_libraries, *allow_libraries}),
        "shapes": [{"name": c.name, "params": c.params, "init_seed": c.init_seed,
                    "trials": len(c.kinds) if mode == "candidate" else c.kinds.count("own"),
                    "timed": c.timed,
                    "redraw": c.param_seed is not None} for c in cases],
        "timing": {k: getattr(limits.timing, k) for k in TimingConfig.__dataclass_fields__},
    }
    if not device.startswith("cuda"):
        job["cpu_seconds"] = int(limits.import_s + limits.check_s + 60)
    (work / "job.json").write_text(json.dumps(job))


def _load_out(path: Path) -> Any:
    import torch

    # weights_only: the file was written by untrusted code; never unpickle objects from it.
    return torch.load(path, weights_only=True, map_location="cpu")


def _to(x: Any, device: str) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(y, device) for y in x)
    return x


def _trim(text: str, lines: int = 25) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


def _compile_reason(message: str) -> str:
    """The first compiler error lines (nvcc/ninja/Triton), else the exception's tail."""
    rows = message.splitlines()
    errs = [r for r in rows if ("error" in r.lower() and not r.startswith(" ")
                                and "Traceback" not in r)]
    if errs:
        return "\n".join(dict.fromkeys(errs[:12]))
    return _trim(message, 15)


@dataclass
class _Outcome:
    status: Status | None = None
    reason: str = ""
    shape_fail: dict[str, str] = field(default_factory=dict)
    errs: dict[str, list[Any]] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)
    raw: dict[str, RawTimes] = field(default_factory=dict)
    log_tail: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    excused: set[str] = field(default_factory=set)  # kernels of allowed libraries
    seen: dict[str, set[str]] = field(default_factory=dict)  # what the watched calls did


def _headline(text: str) -> str:
    """The exception's own line (``ValueError: ...``) from a traceback's text."""
    rows = [r for r in text.strip().splitlines() if r.strip()]
    for r in reversed(rows):
        if not r.startswith((" ", "\t")) and ("Error" in r or "Exception" in r or ":" in r):
            return r.strip()
    return rows[-1].strip() if rows else "unknown error"


def _error_status(msg: dict[str, Any]) -> tuple[Status, str]:
    kind, text = msg.get("kind"), str(msg.get("message", ""))
    phase = str(msg.get("phase", "")).replace(":", " ")
    if kind == "compile":
        return Status.COMPILE_ERROR, _compile_reason(text)
    if kind == "policy":
        return Status.REJECTED, text
    if kind == "unsupported":  # CPU: what Triton's interpreter cannot run (sandbox._interp)
        return Status.UNSUPPORTED, f"{text} (during {phase})"
    if kind == "harness":
        raise ProblemError(text)  # a problem-side fault, not the candidate's
    if kind == "oom":
        return Status.RUNTIME_ERROR, f"out of memory during {phase}: {_headline(text)}"
    return Status.RUNTIME_ERROR, (f"{_headline(text)} (during {phase})\n"
                                  f"last frames:\n{_trim(text, 12)}")


def _fetch(msg: dict[str, Any], work: Path, device: str, child: RunningChild) -> Any | None:
    """The output a message hands over (by CUDA IPC or file), or None if the child must
    send it again as a file. Always answers the child."""
    if "ipc" in msg:
        try:
            from sandbox._ipc import open_shared

            parts = [open_shared(d).clone() for d in msg["ipc"]]
        except Exception:  # noqa: BLE001 - IPC unavailable here: ask for a file
            child.send("file")
            return None
        child.send("ok")
        return tuple(parts) if msg.get("tuple") else parts[0]
    out = _to(_load_out(work / msg["file"]), device)
    child.send("ok")
    return out


def _on_trial(msg: dict[str, Any], by_name: dict[str, _Case], work: Path, device: str,
              spec: ProblemSpec, res: _Outcome, check: bool, child: RunningChild) -> None:
    c = by_name[msg["shape"]]
    i = int(msg["trial"])
    where = c.label(i)
    if msg.get("faults"):
        res.shape_fail.setdefault(c.name, f"{where}: {'; '.join(msg['faults'])}")
        return
    if "ipc" not in msg and "file" not in msg:
        return  # a baseline run: nothing handed over
    out = _fetch(msg, work, device, child)
    if out is None or not check:
        return
    bad, errs = compare_outputs(out, c.refs[i], *spec.tolerance, spec.meta.check,
                                c.inputs.get(i))
    del out
    if not (c.timed and c.kinds[i] == "own"):  # timed outputs are checked against these
        c.refs.pop(i, None)
        c.inputs.pop(i, None)
    elif _nbytes(c.refs[i]) > _KEEP_BYTES:
        c.refs[i] = _to(c.refs[i], "cpu")  # back on the device when a timed output comes
    if bad:
        res.shape_fail.setdefault(c.name, f"{where}: {bad.reason}")
    if not bad:
        res.passes[c.name] = res.passes.get(c.name, 0) + 1
    if errs:
        res.errs.setdefault(c.name, []).append(errs)


def _on_timed_output(msg: dict[str, Any], by_name: dict[str, _Case], work: Path, device: str,
                     spec: ProblemSpec, res: _Outcome, child: RunningChild) -> None:
    c = by_name[msg["shape"]]
    s = int(msg["set"])
    out = _fetch(msg, work, device, child)
    if out is None:
        return
    bad, _ = compare_outputs(out, _to(c.refs[s], device), *spec.tolerance, spec.meta.check,
                             c.inputs.get(s))
    if bad:
        res.shape_fail.setdefault(c.name, (
            f"shape {c.name!r}: the output of a timed call (input set {s}) is wrong "
            f"though the checked calls were right: {bad.reason}"))


def _run_child(work: Path, device: str, cases: list[_Case], limits: Limits, spec: ProblemSpec,
               do_time: bool, check: bool, isolation: Backend) -> _Outcome:
    """Drive one child through import, trials and (optionally) timing; compare as it goes."""
    res = _Outcome()
    by_name = {c.name: c for c in cases}
    res.marks["start"] = time.monotonic()
    with isolation.start(work, device) as child:
        finished = False
        phase = "import"
        try:
            deadline = time.monotonic() + limits.import_s
            while not finished:
                msg = child.recv(deadline)
                if msg is None:
                    break
                ev = msg.get("event")
                if ev in ("imported", "checked", "done"):
                    res.marks[ev] = time.monotonic()
                if ev == "imported":
                    phase = "check"
                    deadline = time.monotonic() + limits.check_s
                elif ev == "error":
                    res.status, res.reason = _error_status(msg)
                    finished = True
                elif ev == "need_inputs":
                    c = by_name[msg["shape"]]
                    i = int(msg["trial"])
                    if check:
                        child.send(json.dumps(_prepare_trial(spec, c, i, device)))
                    else:  # a baseline: the same own inputs, no reference needed
                        xs = spec.make_inputs(c.params, c.seeds[i], device)
                        child.send(json.dumps({"seed": c.seeds[i], "checksum": checksum(xs),
                                               "kind": "own"}))
                        del xs
                elif ev == "need_params":
                    c = by_name[msg["shape"]]
                    child.send(json.dumps({"seed": c.param_seed}))
                elif ev == "seen":
                    for k in ("ops", "launches", "kernels"):
                        res.seen.setdefault(k, set()).update(str(x) for x in msg.get(k, []))
                elif ev == "excused":
                    res.excused.update(str(n) for n in msg.get("names", []))
                elif ev == "handed_over":
                    c = by_name[msg["shape"]]
                    c.missing = [str(n) for n in msg.get("missing", [])][:50]
                elif ev == "trial":
                    _on_trial(msg, by_name, work, device, spec, res, check, child)
                elif ev == "timed_output":
                    _on_timed_output(msg, by_name, work, device, spec, res, child)
                elif ev == "checked":
                    if res.shape_fail or not do_time:
                        child.send("stop")
                        finished = True
                    else:
                        child.send("time")
                        phase = "timing"
                        deadline = time.monotonic() + limits.timing_s
                elif ev == "timing":
                    c = by_name[msg["shape"]]
                    res.raw[c.name] = RawTimes(list(msg["event_ms"]), list(msg["host_ms"]))
                elif ev == "done":
                    finished = True
            ex = child.finish()
        except ChildError as e:
            child.kill()
            res.status, res.reason = Status.REJECTED, str(e)
            res.log_tail = child.log_tail()
            return res
        res.log_tail = ex.log_tail
        if res.status is None and not finished:
            if ex.timed_out:
                limit = {"import": limits.import_s, "check": limits.check_s,
                         "timing": limits.timing_s}[phase]
                res.status = Status.TIMEOUT
                res.reason = f"no progress for {limit:g} s during {phase} (killed)"
            else:
                how = f"killed by {ex.signal_name}" if ex.signal_name else f"exit code {ex.code}"
                res.status = Status.RUNTIME_ERROR
                res.reason = f"the candidate's process died ({how}) during {phase}"
                if ex.log_tail.strip():
                    res.reason += ":\n" + _trim(ex.log_tail, 8)
    return res


# ---------------------------------------------------------------------------------------
# Baselines, device facts, roofline
# ---------------------------------------------------------------------------------------
def _peaks(cache: Cache | None, fp: dict[str, Any], fph: str) -> dict[str, Any]:
    rec = cache.get_device_facts(fph) if cache else None
    facts = rec.facts if rec is not None else None
    if facts is None:
        facts = measure_device_facts()
        if cache:
            cache.put_device_facts(fph, fp, facts)
    return {**facts, "gpu": fp.get("gpu")}


def roofline_ms(flops: float | None, nbytes: float | None, dtype: str | None,
                facts: dict[str, Any]) -> float | None:
    """The speed-of-light time: max(FLOPs / peak rate for the dtype, bytes / bandwidth).

    Peaks are the larger of the measured ceiling and the datasheet's for a known GPU, so an
    honest kernel that beats cuBLAS or a plain copy never shows more than 100% SOL."""
    if flops is None or nbytes is None:
        return None
    sheet = next((v for k, v in DATASHEET.items() if k in str(facts.get("gpu", ""))), {})
    facts = {**facts, **{k: max(v, facts.get(k) or 0.0) for k, v in sheet.items()}}
    rate = {"bfloat16": "bf16_tflops", "float16": "fp16_tflops", "float32": "tf32_tflops",
            "float64": "fp32_tflops"}.get(dtype or "float32")
    peak = facts.get(rate) if rate else 2 * facts.get("bf16_tflops", 0.0)  # int8/fp8 paths
    t_flops = flops / (peak * 1e12) if peak else 0.0
    t_bytes = nbytes / (facts["bandwidth_gbs"] * 1e9) if facts.get("bandwidth_gbs") else 0.0
    t = max(t_flops, t_bytes) * 1e3
    return t if t > 0 else None


def _baselines(spec: ProblemSpec, device: str, cases: list[_Case], work: Path, limits: Limits,
               cache: Cache | None, fp: dict[str, Any], fph: str,
               isolation: Backend) -> dict[tuple[str, str], Timing | None]:
    out: dict[tuple[str, str], Timing | None] = {}
    timed = [c for c in cases if c.timed]
    for mode in ("eager", "compile"):
        missing = []
        for c in timed:
            hit = cache.get_baseline(spec.key, spec.source_hash, c.name, mode, fph) if cache else None
            if hit is not None:
                out[(c.name, mode)] = hit.timing if hit.timing.count > 0 else None
            else:
                missing.append(c)
        if not missing:
            continue
        sub = work / f"baseline_{mode}"
        sub.mkdir()
        _job(sub, mode, device, missing, limits, spec)
        res = _run_child(sub, device, missing, limits, spec, do_time=True, check=False,
                         isolation=isolation)
        for c in missing:
            raw = res.raw.get(c.name)
            t = Timing.from_dict(summarize(raw.event_ms)) if raw else None
            out[(c.name, mode)] = t
            if cache:
                failed = Timing(0.0, 0.0, 0.0, 0.0, 0, 0.0)
                cache.put_baseline(spec.key, spec.source_hash, c.name, mode, fph, t or failed,
                                   shape=c.params, fingerprint=fp,
                                   payload=None if t else {"error": res.reason or "no timing"})
    return out


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------
def verify(
    spec: ProblemSpec,
    source: str,
    *,
    device: str | None = None,
    cache: Cache | None = None,
    timing: bool = True,
    knobs: dict[str, Any] | None = None,
    limits: Limits | None = None,
    keep_dir: bool = False,
    allow_libraries: tuple[str, ...] = (),
    static_policy: bool = True,
    isolation: Backend | None = None,
) -> Verdict:
    """Verify ``source`` (a candidate file's text) against ``spec``; never raises for faults
    of the candidate — each becomes a :class:`Verdict` status with a reason.

    ``allow_libraries`` names libraries whose kernels the candidate may run (added to the
    problem's own list). ``static_policy=False`` skips the static checks so that the run-time
    defences can be tested on their own; verdicts a user sees always run both. ``isolation``
    is the :class:`~sandbox.backends.Backend` the candidate runs in (default: subprocess)."""
    t0 = time.monotonic()
    limits = limits or Limits()
    isolation = isolation or default_backend()
    device = device or default_device()
    on_gpu = device.startswith("cuda")
    fp = fingerprint(device)
    base = dict(problem=spec.key, device=device, fingerprint=fp)

    try:
        ast.parse(source)
    except SyntaxError as e:
        return Verdict(status=Status.COMPILE_ERROR, backend="unknown",
                       reason=f"syntax error at line {e.lineno}: {e.msg}", **base)
    policy = check_source(source)
    backend = policy.backend
    if not policy.ok and static_policy:
        return Verdict(status=Status.REJECTED, backend=backend, reason=policy.reason(), **base,
                       explain={"policy": _policy_explain(policy, static_policy),
                                "first_failure": policy.reason()})
    if backend == "cuda" and not on_gpu:
        return Verdict(status=Status.UNSUPPORTED, backend=backend, **base, reason=(
            "CUDA candidates need a CUDA GPU; run this on a GPU machine "
            "(Triton candidates are checked here with the interpreter)"))
    if knobs:
        bad = _bad_knobs(source, knobs)
        if bad:
            return Verdict(status=Status.REJECTED, backend=backend, reason=bad, **base)

    work = isolation.workdir()
    try:
        (work / "candidate.py").write_text(source)
        do_time = timing and on_gpu
        t_prep = time.monotonic()
        cases, notes = _build_cases(spec, device, limits, do_time)
        t_built = time.monotonic()
        _job(work, "candidate", device, cases, limits, spec, knobs=knobs,
             allow_libraries=tuple(allow_libraries))
        res = _run_child(work, device, cases, limits, spec, do_time=do_time, check=True,
                         isolation=isolation)
        shapes, status, reason = _judge(cases, res)
        for c in cases:  # free the references before the baselines need the device
            c.model = None
            c.refs.clear()
            c.inputs.clear()
        notes += [n for c in cases for n in c.notes]
        notes += [f"kernel from an allowed library: {n}" for n in sorted(res.excused)]
        verdict = Verdict(status=status, backend=backend, reason=reason, shapes=tuple(shapes),
                          log_tail=res.log_tail[-2000:], notes=tuple(notes),
                          explain=_explain(spec, policy, static_policy, cases, res), **base)
        t_base = time.monotonic()
        if status is Status.CORRECT and do_time:
            verdict = _with_timing(verdict, spec, device, cases, res, work, limits, cache, fp,
                                   isolation)
        m = res.marks
        phases = {"inputs_and_references": t_built - t_prep}
        if "imported" in m:
            phases["start_and_import"] = m["imported"] - m["start"]
        if "checked" in m and "imported" in m:
            phases["correctness"] = m["checked"] - m["imported"]
        if "done" in m and "checked" in m:
            phases["timing"] = m["done"] - m["checked"]
        phases["baselines_and_roofline"] = time.monotonic() - t_base
        return replace(verdict, wall_s=time.monotonic() - t0, phases=phases)
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


def _policy_explain(policy: Any, checked: bool) -> dict[str, Any]:
    return {"checked": checked, "backend": policy.backend,
            "violations": [f"[{v.rule}] line {v.line}: {v.message}" for v in policy.violations]}


def _explain(spec: ProblemSpec, policy: Any, static_policy: bool, cases: list[_Case],
             res: _Outcome) -> dict[str, Any]:
    """Which checks ran and what each saw (``kbench eval --explain``)."""
    atol, rtol = spec.tolerance
    return {
        "policy": _policy_explain(policy, static_policy),
        "mode": spec.meta.mode,
        "tolerance": {"atol": atol, "rtol": rtol,
                      "check": "custom check function" if spec.meta.check else
                      "elementwise atol + rtol * |ref|, and relative L2 <= rtol"},
        "cases": [{
            "name": c.name, "derived": c.derived, "timed": c.timed,
            "params": {k: v for k, v in c.params.items() if isinstance(v, (int, float))},
            "trials": [{"kind": k, "positive": c.positive.get(i, False),
                        "skipped": i in c.skipped, "profiled": i == c.profile_trial}
                       for i, k in enumerate(c.kinds)],
            "redrawn": list(c.redrawn), "not_handed_over": list(c.missing),
        } for c in cases],
        "ran": {k: sorted(v) for k, v in res.seen.items()},
        "first_failure": next(iter(res.shape_fail.values()), None) or (
            res.reason if res.status is not None else None),
    }


def _bad_knobs(source: str, knobs: dict[str, Any]) -> str | None:
    tree = ast.parse(source)
    tune: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TUNE"
                                                for t in node.targets):
            try:
                tune = ast.literal_eval(node.value)
            except ValueError:
                return "TUNE must be a literal dict of lists"
    unknown = [k for k in knobs if k not in tune]
    if unknown:
        return f"knobs {unknown} are not declared in the candidate's TUNE dict"
    return None


def _judge(cases: list[_Case], res: _Outcome) -> tuple[list[ShapeResult], Status, str]:
    shapes = []
    for c in cases:
        errs = res.errs.get(c.name, [])
        fail = res.shape_fail.get(c.name)
        shapes.append(ShapeResult(
            name=c.name, params=dict(c.params), derived=c.derived, trials=c.n_run,
            passed=fail is None and res.status is None and res.passes.get(c.name, 0) == c.n_run,
            reason=fail,
            max_abs_err=max((e.max_abs_err for e in errs), default=None),
            max_rel_err=max((e.max_rel_err for e in errs), default=None),
            rel_l2_err=max((e.rel_l2_err for e in errs), default=None),
        ))
    if res.status is not None:
        return shapes, res.status, res.reason
    if res.shape_fail:
        first = next(iter(res.shape_fail.values()))
        more = len(res.shape_fail) - 1
        return shapes, Status.INCORRECT, first + (f" (and {more} more shape(s) failed)" if more else "")
    if not all(s.passed for s in shapes):
        missing = [s.name for s in shapes if not s.passed]
        return shapes, Status.RUNTIME_ERROR, f"the candidate's process ended before shapes {missing} were checked"
    n = sum(s.trials for s in shapes)
    return shapes, Status.CORRECT, f"correct on {len(shapes)} shapes ({n} trials)"


def _with_timing(verdict: Verdict, spec: ProblemSpec, device: str, cases: list[_Case],
                 res: _Outcome, work: Path, limits: Limits, cache: Cache | None,
                 fp: dict[str, Any], isolation: Backend) -> Verdict:
    fph = fingerprint_hash(fp)
    facts = _peaks(cache, fp, fph)
    base = _baselines(spec, device, cases, work, limits, cache, fp, fph, isolation)
    shapes = []
    sp_e, sp_c, sols = [], [], []
    for s in verdict.shapes:
        raw = res.raw.get(s.name)
        if raw is None:
            shapes.append(s)
            continue
        hidden = hidden_work(raw)
        if hidden:
            return replace(verdict, status=Status.REJECTED, reason=f"shape {s.name!r}: {hidden}")
        t = Timing.from_dict(summarize(raw.event_ms))
        eager, comp = base.get((s.name, "eager")), base.get((s.name, "compile"))
        flops, nbytes = spec.roofline(s.params)
        roof = roofline_ms(flops, nbytes, spec.meta.dtype, facts)
        sol = 100.0 * roof / t.median_ms if roof else None
        if sol is not None and sol > limits.max_sol_pct:
            return replace(verdict, status=Status.REJECTED, reason=(
                f"shape {s.name!r}: impossible timing: {t.median_ms:.4f} ms is faster than the "
                f"roofline bound {roof:.4f} ms ({sol:.0f}% of speed of light)"))
        se = eager.median_ms / t.median_ms if eager else None
        sc = comp.median_ms / t.median_ms if comp else None
        shapes.append(replace(s, timing=t, eager=eager, compiled=comp, speedup_eager=se,
                              speedup_compile=sc, roofline_ms=roof, sol_pct=sol))
        if se:
            sp_e.append(se)
        if sc:
            sp_c.append(sc)
        if sol is not None:
            sols.append(sol)
    return replace(verdict, shapes=tuple(shapes), timing_available=bool(res.raw),
                   speedup_eager=geomean(sp_e), speedup_compile=geomean(sp_c),
                   sol_pct=statistics.fmean(sols) if sols else None)
