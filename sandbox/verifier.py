"""The trusted parent of verification: it owns seeds, inputs, reference outputs and the verdict.

``verify(spec, source)`` runs the static policy, builds inputs for every declared shape and
for shapes derived from them (the candidate never sees which), computes reference outputs in
this process, runs the candidate in a child (``sandbox._child``) started by a Backend
(``sandbox.backends``), compares every output it returns, and — on a GPU — times it against
eager and ``torch.compile`` baselines measured by the same protocol, with SOL% against
measured device ceilings.

This module drives the child; each other concept has its own module: ``sandbox.job``
(Limits, Job), ``sandbox.cases`` (shapes, trials, references), ``sandbox.judge`` (outcomes
to verdicts), ``sandbox.baselines`` (Cache, baselines), ``sandbox.roofline``. The names other
modules and tests import from here are re-exported.
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sandbox import buildcache, memcap, profile
from sandbox._child import checksum
from sandbox._process import LOG_CAP, ChildError
from sandbox.backends import Backend, RunningChild, default_backend
from sandbox.baselines import Cache, MemoryCache, _baselines
from sandbox.cases import (
    AUDIT_RING,
    _build_cases,
    _Case,
    _plan,
    _prepare_trial,
    atol_for,
    check_step_s,
    complete_case,
    draw_timed,
    is_timed_seed,
    pick_audited,
    plan_cases,
    release_device_cache,
    timed_reference,
    timing_limit_s,
)
from sandbox.compare import compare_outputs
from sandbox.devicelock import Hold, device_lock
from sandbox.fingerprint import fingerprint, fingerprint_hash
from sandbox.job import Limits
from sandbox.judge import (
    _error_status,
    _explain,
    _judge,
    _Outcome,
    _policy_explain,
    _trim,
    _with_timing,
)
from sandbox.policy import check_source, parse
from sandbox.problem import ProblemSpec
from sandbox.roofline import _peaks, roofline_ms
from sandbox.timing import RawTimes, TimingConfig
from sandbox.verdict import Status, Verdict

__all__ = ["Limits", "Cache", "MemoryCache", "verify", "measure_baselines", "default_device",
           "roofline_ms"]

# Helpers that moved out but are still reached through this module (tests, older callers).
_REEXPORTED = (_build_cases, _prepare_trial, _plan, _Case, _Outcome, _judge,
               _explain, _with_timing, _baselines, _peaks)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------
# Running a child
# ---------------------------------------------------------------------------------------
def _job(work: Path, mode: str, device: str, cases: list[_Case], limits: Limits,
         spec: ProblemSpec, knobs: dict[str, Any] | None = None,
         allow_libraries: tuple[str, ...] = (), stream: bool = False) -> None:
    """``job.json`` for one child. No seed is written here: each trial's seed reaches the
    child only when it asks for it. With ``stream``, the cases need not be made yet: the
    child asks for each shape before building its model (``need_shape``), and learns its
    number of trials, or that it is skipped, from the reply (:func:`_run_child`)."""
    job = {
        "stream": stream,
        "mode": mode, "device": device, "candidate": "candidate.py",
        "problem": str(spec.path), "knobs": knobs or {}, "train": spec.meta.mode == "train",
        "allow_libraries": sorted({*spec.meta.allow_libraries, *allow_libraries}),
        "shapes": [{"name": c.name, "params": c.params, "init_seed": c.init_seed,
                    "init_on": None if stream else c.init_on,
                    "trials": (None if stream else len(c.kinds) if mode == "candidate"
                               else c.kinds.count("own")),
                    "timed": c.timed,
                    "redraw": c.param_seed is not None} for c in cases],
        "timing": {k: getattr(limits.timing, k) for k in TimingConfig.__dataclass_fields__},
        "precision": spec.precision,  # every mode alike: baselines at the candidate's precision
    }
    if not device.startswith("cuda"):
        job["cpu_seconds"] = int(limits.import_s + limits.check_s + 60)
        job["memory_bytes"] = memcap.host_bytes(limits.host_memory_bytes)
    else:
        job["gpu_memory_fraction"] = limits.gpu_memory_fraction
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
    atol, rtol = spec.tolerance
    bad, errs = compare_outputs(out, c.refs[i], atol_for(c, i, atol), rtol, spec.meta.check,
                                c.inputs.get(i), c.model)
    del out
    c.refs.pop(i, None)  # timed outputs are checked against their own seeds' references
    c.inputs.pop(i, None)
    if c.big:
        release_device_cache(device)
    if bad:
        res.shape_fail.setdefault(c.name, f"{where}: {bad.reason}")
    if not bad:
        res.passes[c.name] = res.passes.get(c.name, 0) + 1
    if errs:
        res.errs.setdefault(c.name, []).append(errs)


def _time_command(cases: list[_Case], limits: Limits) -> dict[str, Any]:
    """The ``time`` line: per timed shape, fresh seeds drawn now (the child has seen none of
    them, nor any hint of which sample will be audited; that choice stays here)."""
    n = max(limits.timed_sets, limits.timing.max_calls)
    return {"cmd": "time", "ring": AUDIT_RING,
            "shapes": {c.name: {"seeds": draw_timed(c, n)} for c in cases if c.timed}}


def _timed_mismatch(c: _Case, sample: int, seed: int, out: Any, ref: Any, spec: ProblemSpec,
                    device: str, inputs: list[Any] | None = None, call: Any = None) -> str | None:
    """The parent's audit decision: a reason if the output of timed sample ``sample`` (its
    last call ``call``, made from the timed seed ``seed``) differs from the reference's for
    that seed, else None."""
    if not is_timed_seed(c, seed, call):
        return (f"shape {c.name!r}: the audited timed output (sample {sample}) names an input "
                "set that was never sent")
    bad, _ = compare_outputs(out, _to(ref, device), *spec.tolerance, spec.meta.check, inputs,
                             c.model)
    if bad:
        return (f"shape {c.name!r}: a timed call's output (sample {sample}, a fresh input set) "
                f"is wrong though the checked calls were right: {bad.reason}")
    return None


def _on_timed_output(msg: dict[str, Any], by_name: dict[str, _Case], work: Path, device: str,
                     spec: ProblemSpec, res: _Outcome, child: RunningChild) -> None:
    """The audited timed sample's output, checked against the reference for its own seed."""
    c = by_name[msg["shape"]]
    out = _fetch(msg, work, device, child)
    if out is None:
        return
    seed, sample, call = int(msg["seed"]), int(msg["sample"]), msg.get("call")
    ref, inputs = (timed_reference(spec, c, seed, device) if is_timed_seed(c, seed, call)
                   else (None, None))
    bad = _timed_mismatch(c, sample, seed, out, ref, spec, device, inputs, call)
    if bad:
        res.shape_fail.setdefault(c.name, bad)


def _child_pid(child: RunningChild) -> int | None:
    pid = getattr(child, "pid", None) or getattr(getattr(child, "proc", None), "pid", None)
    return int(pid) if pid else None


def _memory_over(child: RunningChild, device: str, limits: Limits, res: _Outcome,
                 phase: str) -> bool:
    """The parent's check of the device memory the child's process holds after ``phase``
    (NVML, seen from outside the child): past its cap, the verdict is out of memory. Returns
    True if it is; records the check (or why none ran) in ``res.memcap``."""
    if not device.startswith("cuda") or limits.gpu_memory_fraction is None:
        return False
    import torch

    idx = torch.device(device).index
    idx = torch.cuda.current_device() if idx is None else idx
    nvml_idx = idx
    try:  # NVML counts physical devices; CUDA_VISIBLE_DEVICES may renumber them
        nvml_idx = int(torch.cuda._get_nvml_device_index(idx))
    except Exception:  # noqa: BLE001 - no remapping known: the CUDA index
        pass
    pid = _child_pid(child)
    used = memcap.process_device_bytes(nvml_idx, pid) if pid else None
    checks = res.memcap.setdefault("checks", {})
    if used is None:
        checks[phase] = ("unavailable (no NVML: pip install nvidia-ml-py)"
                         if not memcap.nvml_available() else "unavailable (NVML did not say)")
        return False
    total = int(torch.cuda.get_device_properties(idx).total_memory)
    checks[phase] = used
    bad = memcap.over_cap(used, total, limits.gpu_memory_fraction)
    if bad and res.status is None:
        res.status, res.fault = Status.RUNTIME_ERROR, "oom"
        res.reason = f"out of memory during {phase}: the candidate's process {bad}"
        return True
    return False


def _run_child(work: Path, device: str, cases: list[_Case], limits: Limits, spec: ProblemSpec,
               do_time: bool, check: bool, isolation: Backend, hold: Hold,
               stream: bool = False, exclusive: bool = False) -> _Outcome:
    """Drive one child through import, trials and (optionally) timing; compare as it goes.

    The device is held shared from the child's start until its checks are done (other jobs
    may check meanwhile), exclusively while it is timed, and released when it ends.

    With ``stream`` (a ``job.json`` written so), the cases are made here while the child
    runs (:func:`~sandbox.cases.complete_case`): the first while it starts and imports, each
    next one while it builds its model of the one before (both build models on the CPU from
    a seed, KernelBench's way, so the two halves overlap). The time spent here is added to
    the check phase's limit and reported as ``marks["parent_build"]``.

    With ``exclusive`` the device is held exclusively from the start: a ``torch.compile``
    baseline's child, whose compilation benchmarks on the device (Inductor's pad_mm times an
    unaligned matmul padded and not, and keeps the faster), decides on an idle device, as a
    user compiling gets it, not beside another job's checks."""
    res = _Outcome()
    by_name = {c.name: c for c in cases}

    def make(c: _Case | None) -> float:
        """Make ``c`` (the next case not made yet, if None); the seconds it took."""
        c = c or next((x for x in cases if x.built is None), None)
        if c is None or c.built is not None:
            return 0.0
        t = time.monotonic()
        complete_case(spec, c, device)
        spent = time.monotonic() - t
        res.marks["parent_build"] = res.marks.get("parent_build", 0.0) + spent
        return spent

    if exclusive:
        hold.exclude()
    else:
        hold.share()
    res.marks["start"] = time.monotonic()
    with hold, isolation.start(work, device) as child:
        finished = False
        phase = "import"
        try:
            if stream:
                make(None)  # the first case, while the child starts
            deadline = time.monotonic() + limits.import_s
            check_end, step_s, stepped = deadline, None, set()
            while not finished:
                if phase == "check" and step_s is not None:
                    deadline = min(check_end, time.monotonic() + step_s)
                msg = child.recv(deadline)
                if msg is None:
                    break
                ev = msg.get("event")
                if ev in ("imported", "checked", "done"):
                    res.marks[ev] = time.monotonic()
                if ev == "checked":  # the candidate's watched calls, profiled or not
                    for k, x in (msg.get("spans") or {}).items():
                        if isinstance(x, (int, float)):
                            res.marks[f"cspan_{k}"] = float(x)
                if ev == "imported":
                    phase = "check"
                    check_end = time.monotonic() + limits.check_s
                    deadline = check_end
                elif ev == "error":
                    res.status, res.reason = _error_status(msg)
                    res.fault = {"oom": "oom", "exit": "exit", "runtime": "exception"}.get(
                        str(msg.get("kind")))
                    finished = True
                elif ev == "need_shape":
                    if not stream or msg.get("shape") not in by_name:
                        raise ChildError(f"asked for shape {msg.get('shape')!r} out of turn")
                    c = by_name[msg["shape"]]
                    spent = make(c)
                    child.send(json.dumps({"trials": len(c.kinds), "init_on": c.init_on}
                                          if c.built else {"skip": True}))
                    spent += make(None)  # the next case, while the child builds this one
                    check_end += spent  # the parent's time is not the candidate's
                    deadline += spent
                elif ev == "need_inputs":
                    c = by_name.get(str(msg.get("shape")))
                    i = int(msg.get("trial", -1))
                    if (c is None or c.built is False or (stream and c.built is None)
                            or not 0 <= i < len(c.seeds)):
                        raise ChildError(f"asked for inputs of shape {msg.get('shape')!r} "
                                         f"(trial {i}) out of turn")
                    if phase == "check" and check:  # a candidate trial's own hang limit
                        step_s = check_step_s(c, c.name not in stepped, limits, device)
                        stepped.add(c.name)
                    if check:
                        child.send(json.dumps(_prepare_trial(spec, c, i, device)))
                        if c.big:
                            release_device_cache(device)
                    else:  # a baseline: the same own inputs, no reference needed
                        xs = spec.make_inputs(c.params, c.seeds[i], device)
                        child.send(json.dumps({"seed": c.seeds[i], "checksum": checksum(xs),
                                               "kind": "own"}))
                        del xs
                elif ev == "need_params":
                    c = by_name.get(str(msg.get("shape")))
                    if c is None or c.param_seed is None or (stream and c.built is not True):
                        raise ChildError(f"asked for parameters of shape {msg.get('shape')!r} "
                                         "out of turn")
                    child.send(json.dumps({"seed": c.param_seed}))
                elif ev == "seen":
                    for k in ("ops", "launches", "kernels"):
                        res.seen.setdefault(k, set()).update(str(x) for x in msg.get(k, []))
                elif ev == "profile":  # advisory: the main shape's kernel breakdown
                    res.profile = profile.clean(msg)
                elif ev == "memcap":  # the GPU-memory cap the child applied
                    res.memcap["applied"] = {k: v for k, v in msg.items() if k != "event"}
                elif ev == "precision":  # what was in effect at each checkpoint
                    res.precision[str(msg.get("at"))] = dict(msg.get("settings") or {})
                elif ev == "excused":
                    res.excused.update(str(n) for n in msg.get("names", []))
                elif ev == "handed_over":
                    c = by_name[msg["shape"]]
                    c.missing = [str(n) for n in msg.get("missing", [])][:50]
                elif ev == "drawn_apart":  # ModelNew built on the CPU: reference's handed over
                    c = by_name.get(str(msg.get("shape")))
                    if c is None or c.built is not True or c.init_on != "device":
                        # only for a case made, whose reference the parent drew on the device
                        raise ChildError(f"said shape {msg.get('shape')!r} was built apart "
                                         "from a reference not drawn on the device")
                    gone = [str(n) for n in msg.get("missing", [])][:50]
                    c.missing = sorted(set(c.missing) | set(gone))
                    c.notes.append(
                        f"shape {c.name!r}: ModelNew's constructor fails under "
                        f"torch.device({device!r}) ({str(msg.get('why'))[:200]}), where the "
                        "reference's parameters were drawn; it was built on the CPU and given "
                        "the reference's parameters" + (
                            f", except {', '.join(gone[:6])}, which match none of its tensors "
                            "(those keep values drawn on the CPU)" if gone else ""))
                elif ev == "trial":
                    _on_trial(msg, by_name, work, device, spec, res, check, child)
                elif ev == "ring":  # timing of a shape is over: name the audited sample
                    c = by_name[msg["shape"]]
                    kept = [int(i) for i in msg.get("samples", [])]
                    child.send(json.dumps({"audit": pick_audited(c, kept) if check else []}))
                elif ev == "timed_output":
                    _on_timed_output(msg, by_name, work, device, spec, res, child)
                elif ev == "checked" and _memory_over(child, device, limits, res, "check"):
                    child.send("stop")
                    finished = True
                elif ev == "checked":
                    if res.shape_fail or not do_time:
                        child.send("stop")
                        finished = True
                    else:
                        t_wait = time.monotonic()
                        hold.exclude()  # nothing else runs on the device while timed
                        res.marks["lock_wait"] = time.monotonic() - t_wait
                        child.send(json.dumps(_time_command(cases, limits)))
                        phase = "timing"
                        deadline = time.monotonic() + timing_limit_s(cases, limits)[0]
                elif ev == "timing":
                    c = by_name[msg["shape"]]
                    res.raw[c.name] = RawTimes(list(msg["event_ms"]), list(msg["host_ms"]),
                                               int(msg.get("calls_per_sample", 1)),
                                               float(msg.get("launch_ms", 0.0)))
                    for k, x in (msg.get("spans") or {}).items():  # where timing's time went
                        if isinstance(x, (int, float)):
                            res.marks[f"span_{k}"] = res.marks.get(f"span_{k}", 0.0) + float(x)
                elif ev == "done":
                    _memory_over(child, device, limits, res, "timing")
                    finished = True
            ex = child.finish()
        except ChildError as e:
            child.kill()
            res.status, res.reason, res.fault = Status.REJECTED, str(e), "protocol"
            res.log_tail = child.log_tail()
            return res
        res.log_tail = ex.log_tail
        if res.status is None and not finished:
            if ex.flooded:
                res.status, res.fault = Status.RUNTIME_ERROR, "flood"
                res.reason = (f"flooded its output during {phase}: more than "
                              f"{LOG_CAP >> 20} MiB written to stdout/stderr (killed; the "
                              "verdict is decided on the result channel, never on printed text)")
            elif ex.timed_out:
                t_limit, scaled = timing_limit_s(cases, limits)
                limit = {"import": limits.import_s, "check": limits.check_s,
                         "timing": t_limit}[phase]
                res.status, res.fault = Status.TIMEOUT, "hang"
                if phase == "check" and step_s is not None:
                    res.reason = (f"no progress for {step_s:.3g} s during check (a trial's limit, "
                                  "scaled from the reference's time; killed)")
                else:
                    res.reason = (f"no progress for {limit:.3g} s during timing (limit scaled "
                                  "from the reference's time)" if phase == "timing" and scaled
                                  else f"no progress for {limit:g} s during {phase} (killed)")
            else:
                how = f"killed by {ex.signal_name}" if ex.signal_name else f"exit code {ex.code}"
                res.status = Status.RUNTIME_ERROR
                res.fault = "signal" if ex.signal_name else "exit"
                res.reason = f"the candidate's process died ({how}) during {phase}"
                if ex.log_tail.strip():
                    res.reason += ":\n" + _trim(ex.log_tail, 8)
    return res








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
    is the :class:`~sandbox.backends.Backend` the candidate runs in (default: subprocess).

    On ``cuda:N`` the parent's own device work (references, comparisons, synchronisation,
    the device's facts) runs with GPU N current, whatever thread calls this."""
    device = device or default_device()
    kw = dict(device=device, cache=cache, timing=timing, knobs=knobs, limits=limits,
              keep_dir=keep_dir, allow_libraries=allow_libraries, static_policy=static_policy,
              isolation=isolation)
    if not device.startswith("cuda"):
        from sandbox import _cpumath

        _cpumath.warm()  # references computed here on the CPU: never a first call's result
    if device.startswith("cuda:"):
        import torch

        if torch.cuda.is_available():
            with torch.cuda.device(torch.device(device)):
                return _verify(spec, source, **kw)  # type: ignore[arg-type]
    return _verify(spec, source, **kw)  # type: ignore[arg-type]


def _verify(spec: ProblemSpec, source: str, *, device: str, cache: Cache | None, timing: bool,
            knobs: dict[str, Any] | None, limits: Limits | None, keep_dir: bool,
            allow_libraries: tuple[str, ...], static_policy: bool,
            isolation: Backend | None) -> Verdict:
    t0 = time.monotonic()
    limits = limits or Limits()
    isolation = isolation or default_backend()
    on_gpu = device.startswith("cuda")
    fp = fingerprint(device)
    base = dict(problem=spec.key, device=device, fingerprint=fp)

    try:
        parse(source)
    except SyntaxError as e:
        return Verdict(status=Status.COMPILE_ERROR, backend="unknown",
                       reason=f"syntax error at line {e.lineno}: {e.msg}", **base)
    except (RecursionError, MemoryError, ValueError) as e:  # nested too deeply; NUL bytes
        return Verdict(status=Status.COMPILE_ERROR, backend="unknown",
                       reason=f"the source cannot be parsed ({type(e).__name__}): flatten it",
                       **base)
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

    # Builds are kept per source (sandbox.buildcache): a job with a cache key runs in a
    # directory stable per key, so torch's ninja files stay valid when restored.
    builds = buildcache.open_job(source, backend, device, stable_dir=not keep_dir)
    # A build that failed ahead of this verification, on CPU cores, as it would fail here
    # (sandbox.prebuild): reported without building it again under the device's hold.
    handed = builds.take_failure() if builds and backend == "cuda" and on_gpu else None
    if handed is not None:
        builds.release()
        status, reason = _error_status({"kind": "compile", "message": handed["message"]})
        return Verdict(
            status=status, backend=backend, reason=reason, **base,
            log_tail=handed["message"][-2000:], wall_s=time.monotonic() - t0,
            notes=(f"built ahead of the GPU verification, on CPU cores, for "
                   f"TORCH_CUDA_ARCH_LIST={handed['arch']} ({handed['age_s']:.0f} s ago); the "
                   "candidate asked torch nothing about the GPU before its build failed, so "
                   "the same sources and flags would fail here",),
            explain={"policy": _policy_explain(policy, static_policy),
                     "first_failure": reason,
                     "build_ahead": {"arch": handed["arch"], "age_s": handed["age_s"]}})
    hold = Hold(device_lock(device))
    work = (builds and builds.workdir()) or isolation.workdir()
    try:
        (work / "candidate.py").write_text(source)
        if builds:
            builds.restore(work)
        do_time = timing and on_gpu
        t_prep = time.monotonic()
        hold.share()  # the references run on the device too
        # Planned here, made while the child runs (each case's reference model while the
        # child builds its own model of the case before: _run_child's stream)
        cases, notes = plan_cases(spec, device, limits, do_time)
        t_built = time.monotonic()
        _job(work, "candidate", device, cases, limits, spec, knobs=knobs,
             allow_libraries=tuple(allow_libraries), stream=True)
        res = _run_child(work, device, cases, limits, spec, do_time=do_time, check=True,
                         isolation=isolation, hold=hold, stream=True)
        notes += [c.drop_note for c in cases if c.built is False and c.drop_note]
        cases = [c for c in cases if c.built is not False]  # never made: not checked
        shapes, status, reason = _judge(cases, res)
        for c in cases:  # free the references before the baselines need the device
            c.model = None
            c.refs.clear()
            c.inputs.clear()
        notes += [n for c in cases for n in c.notes]
        notes += [f"kernel from an allowed library: {n}" for n in sorted(res.excused)]
        verdict = Verdict(status=status, backend=backend, reason=reason, shapes=tuple(shapes),
                          log_tail=res.log_tail[-2000:], notes=tuple(notes),
                          explain={**_explain(spec, policy, static_policy, cases, res),
                                   "precision": {"applied": spec.precision,
                                                 "seen": res.precision},
                                   **({"gpu_memory_cap": res.memcap} if res.memcap else {}),
                                   **({"fault": res.fault} if res.fault else {})},
                          precision=spec.precision, **base)
        t_base = time.monotonic()
        if status is Status.CORRECT and do_time:
            verdict = _timed(verdict, spec, device, cases, res, work, limits, cache, fp,
                             isolation, hold)
        if verdict.passed and res.profile is not None:
            verdict = replace(verdict, profile=_profiled(res.profile, spec, device, cases, work,
                                                         limits, knobs, allow_libraries, hold))
        m = res.marks
        # the parent's inputs and references: planned before the child, made beside it
        phases = {"inputs_and_references": t_built - t_prep + m.get("parent_build", 0.0)}
        if "imported" in m:
            phases["start_and_import"] = m["imported"] - m["start"]
        if "checked" in m and "imported" in m:
            phases["correctness"] = m["checked"] - m["imported"]
            # its parts: the candidate's calls under the op trace and launch watch, those
            # also under the profiler (GPU), and the rest (inputs, references, hand-over,
            # comparison)
            _split(phases, "correctness", m, "cspan_")
        if "done" in m and "checked" in m:
            phases["timing"] = m["done"] - m["checked"] - m.get("lock_wait", 0.0)
            # its parts, as the child measured them: input sets made, the sampling rule
            # (warm-up, probes, samples, audited calls), the traced call after it; the rest
            # is the parent's audit of kept outputs and the messages between
            _split(phases, "timing", m, "span_")
        if "lock_wait" in m:
            phases["waiting_for_device"] = m["lock_wait"]
        phases["baselines_and_roofline"] = time.monotonic() - t_base
        if builds and verdict.status is not Status.REJECTED:  # no harness fault got here
            builds.save(work)
        return replace(verdict, wall_s=time.monotonic() - t0, phases=phases,
                       explain={**verdict.explain,
                                **_timing_limit_explain(cases, limits, do_time)})
    finally:
        hold.release()
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)
        if builds:
            builds.release()


def _split(phases: dict[str, float], phase: str, marks: dict[str, float], prefix: str) -> None:
    """``phase``'s parts from the child's ``prefix``-named spans, as ``{phase}_{part}``, and
    ``{phase}_rest``: what the parts leave of the whole."""
    parts = {k[len(prefix):]: x for k, x in marks.items() if k.startswith(prefix)}
    for k, x in parts.items():
        phases[f"{phase}_{k}"] = x
    if parts:
        phases[f"{phase}_rest"] = max(0.0, phases[phase] - sum(parts.values()))


def _timing_limit_explain(cases: list[_Case], limits: Limits, timed: bool) -> dict[str, Any]:
    """The timing phase's hang limit and how it was reached, for ``kbench eval --explain``."""
    if not timed:
        return {}
    limit, scaled = timing_limit_s(cases, limits)
    return {"timing_limit": {
        "limit_s": round(limit, 3), "scaled": scaled, "cap_s": limits.timing_s,
        "formula": (f"{limits.compile_allowance_s:g} s compile allowance + reference's call "
                    f"time x most calls of the timing rule x {limits.hang_factor:g}, per timed "
                    f"shape, at most {limits.timing_s:g} s"),
        "reference_ms": {c.name: c.ref_ms for c in cases if c.timed}}}


def _profiled(prof: dict[str, Any], spec: ProblemSpec, device: str, cases: list[_Case],
              work: Path, limits: Limits, knobs: dict[str, Any] | None,
              allow_libraries: tuple[str, ...], hold: Hold) -> dict[str, Any]:
    """The child's kernel breakdown, with Nsight Compute's record of the same shape when
    ``limits.profile_ncu`` (one more child, in ``work``, whose builds are warm)."""
    case = next((c for c in cases if c.name == prof.get("shape")), None)
    if not limits.profile_ncu or case is None or not case.seeds:
        return prof
    one = replace(case, kinds=["own"], seeds=case.seeds[:1], refs={}, inputs={})
    # a fresh process under ncu's injection: its imports get at least NCU_IMPORT_S
    lim = replace(limits, import_s=max(limits.import_s, profile.NCU_IMPORT_S))

    def run(backend: Backend, ncu_hold: Hold) -> tuple[str | None, str, str]:
        _job(work, "ncu", device, [one], lim, spec, knobs=knobs,
             allow_libraries=tuple(allow_libraries))
        out = _run_child(work, device, [one], lim, spec, do_time=False, check=False,
                         isolation=backend, hold=ncu_hold)
        return (out.status.value if out.status else None), out.reason, out.log_tail

    return {**prof, "ncu": profile.run_ncu(run, hold)}


def _bad_knobs(source: str, knobs: dict[str, Any]) -> str | None:
    tree = parse(source)
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






def _timed(verdict: Verdict, spec: ProblemSpec, device: str, cases: list[_Case],
           res: _Outcome, work: Path, limits: Limits, cache: Cache | None,
           fp: dict[str, Any], isolation: Backend, hold: Hold) -> Verdict:
    """Baselines (cached or measured by the same protocol) and peaks, then the timed verdict."""
    fph = fingerprint_hash(fp)
    facts = _peaks(cache, fp, fph, guard=hold)

    def run(sub: Path, mode: str, todo: list[_Case]) -> tuple[dict[str, RawTimes], str]:
        _job(sub, mode, device, todo, limits, spec)
        out = _run_child(sub, device, todo, limits, spec, do_time=True, check=False,
                         isolation=isolation, hold=hold, exclusive=mode == "compile")
        return out.raw, out.reason

    base = _baselines(spec, cases, work, cache, fp, fph, run)
    return _with_timing(verdict, spec, res, base, facts, limits)


def measure_baselines(spec: ProblemSpec, cache: Cache, *, device: str | None = None,
                      limits: Limits | None = None, isolation: Backend | None = None
                      ) -> dict[tuple[str, str], Any]:
    """Measure (or find in ``cache``) the eager and ``torch.compile`` baselines of every timed
    shape of ``spec``, and the device's ceilings, without a candidate: a run does this ahead
    of the first candidate of each problem, so no verification waits for them. Returns the
    ``Timing`` (or None where a baseline cannot be measured) per (shape, mode); ``{}`` where
    nothing is timed (a CPU device)."""
    limits = limits or Limits()
    isolation = isolation or default_backend()
    device = device or default_device()
    if not device.startswith("cuda"):
        return {}
    fp = fingerprint(device)
    fph = fingerprint_hash(fp)
    work = isolation.workdir()
    hold = Hold(device_lock(device))
    try:
        hold.share()  # the plan's references run on the device
        cases, _ = _build_cases(spec, device, limits, True)
        for c in cases:  # only seeds and shapes are needed from here on
            c.model = None
            c.refs.clear()
            c.inputs.clear()
        hold.release()
        _peaks(cache, fp, fph, guard=hold)

        def run(sub: Path, mode: str, todo: list[_Case]) -> tuple[dict[str, RawTimes], str]:
            _job(sub, mode, device, todo, limits, spec)
            out = _run_child(sub, device, todo, limits, spec, do_time=True, check=False,
                             isolation=isolation, hold=hold, exclusive=mode == "compile")
            return out.raw, out.reason

        return _baselines(spec, cases, work, cache, fp, fph, run)
    finally:
        hold.release()
        shutil.rmtree(work, ignore_errors=True)
