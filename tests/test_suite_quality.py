"""Suite quality: every problem file of every suite, checked on its CPU shapes.

A problem is only useful if its reference is sound and a wrong kernel cannot pass it. For each
problem and each CPU shape this checks that the reference runs quickly and deterministically,
leaves its inputs alone, gives an output that is not near-constant and that changes when any
input tensor or any parameter/buffer is re-drawn, and that the problem's comparison rejects
zeros, an input handed back, and the output of another shape, while accepting the reference
itself. Metadata (dtype, shapes, tolerances, roofline) is checked once per problem.

Problems are collected at import time, one file at a time, so a broken file fails its own
``test_problem_loads`` and nothing else; an empty suite folder contributes nothing. Run one
suite with ``pytest tests/test_suite_quality.py -k level1``.

References run under ``torch.no_grad`` on inputs cloned per call, as the verifier runs them.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from kbench.errors import ProblemError
from kbench.problems import SUITES, ProblemSpec, Shape, derive_shapes, load
from sandbox.compare import compare_outputs

SEED, ALT_SEED = 1234, 98765  # inputs
INIT_SEED, ALT_INIT_SEED = 0, 1  # model parameters and buffers
# The reference at a CPU shape, best of two runs, in CPU seconds of this process, run on one
# thread: wall time would measure whatever else the machine is doing, and with several threads
# the CPU time counts OpenMP's spin-waits at every barrier, which grow with the machine's load
# (a 7 ms reference that loops over small ops read 1.24 s on a busy 2-core box).
MAX_CPU_SECONDS = 1.0
MAX_INPUT_GB = 10.0  # inputs at any GPU shape
NEAR_CONSTANT = 1e-2  # std / mean|x| of a float output below this is "near-constant"


# ---------------------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------------------
def _problem_keys() -> list[str]:
    root = Path(str(importlib.resources.files("problems")))
    keys = []
    for suite in SUITES:
        folder = root / suite
        if folder.is_dir():
            keys += [f"{suite}/{p.stem}" for p in sorted(folder.glob("*.py"))
                     if not p.name.startswith("_")]
    return keys


def _extra_keys() -> list[str]:
    """Problem files or folders named in $KBENCH_QUALITY_PATHS (os.pathsep-separated): run
    the same checks on your own problems, e.g. a scaffold from `kbench problems new`."""
    raw = os.environ.get("KBENCH_QUALITY_PATHS", "")
    out = []
    for part in filter(None, raw.split(os.pathsep)):
        p = Path(part)
        out += [str(f) for f in sorted(p.glob("*.py"))] if p.is_dir() else [str(p)]
    return out


def _collect() -> tuple[dict[str, ProblemSpec], dict[str, str]]:
    specs, errors = {}, {}
    for key in _problem_keys() + _extra_keys():
        try:
            specs[key] = load(key)[0]
        except ProblemError as e:
            errors[key] = str(e)
    return specs, errors


SPECS, LOAD_ERRORS = _collect()
KEYS = sorted([*SPECS, *LOAD_ERRORS])
CASES = [(k, n) for k, spec in SPECS.items() for n in spec.cpu_shapes]
CASE_IDS = [f"{k}-{n}" for k, n in CASES]

by_problem = pytest.mark.parametrize("key", sorted(SPECS))
by_case = pytest.mark.parametrize(("key", "shape_name"), CASES, ids=CASE_IDS)


# ---------------------------------------------------------------------------------------
# Running references (cached per case: each test below reads the same run)
# ---------------------------------------------------------------------------------------
def _tensors(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _clone(xs: list[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in xs]


def _forward(model: torch.nn.Module, inputs: list[Any]) -> tuple[Any, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.process_time()
        with torch.no_grad():
            out = model(*_clone(inputs))
        return out, time.process_time() - t0
    finally:
        torch.set_num_threads(threads)


def _differs(a: Any, b: Any, spec: ProblemSpec) -> bool:
    """Whether output ``a`` fails the tolerance against ``b`` (numeric test, no custom check)."""
    mismatch, _ = compare_outputs(a, b, *spec.tolerance)
    return mismatch is not None


@dataclass
class _Run:
    spec: ProblemSpec
    shape: Shape
    init: list[Any]
    model: torch.nn.Module
    inputs: list[Any]
    out: Any
    out_again: Any  # model and inputs rebuilt from the same seeds
    seconds: float


_RUNS: dict[tuple[str, str], _Run] = {}


def _run(key: str, shape_name: str) -> _Run:
    if (key, shape_name) not in _RUNS:
        spec = SPECS[key]
        shape = spec.cpu_shapes[shape_name]
        init = spec.make_init_inputs(shape)
        model = spec.make_model(init, INIT_SEED, "cpu")
        inputs = spec.make_inputs(shape, SEED, "cpu")
        out, t1 = _forward(model, inputs)
        model2 = spec.make_model(spec.make_init_inputs(shape), INIT_SEED, "cpu")
        out2, t2 = _forward(model2, spec.make_inputs(shape, SEED, "cpu"))
        _RUNS[(key, shape_name)] = _Run(spec, shape, init, model, inputs, out, out2, min(t1, t2))
    return _RUNS[(key, shape_name)]


def _other_shape_output(r: _Run, shape_name: str) -> tuple[str, Any] | None:
    """The reference output at another CPU shape, else at a shape derived from this one."""
    spec = r.spec
    others = [(n, s) for n, s in spec.cpu_shapes.items() if n != shape_name]
    others += list(derive_shapes(spec, r.shape).items())
    for name, shape in others:
        try:
            model = spec.make_model(spec.make_init_inputs(shape), INIT_SEED, "cpu")
            out, _ = _forward(model, spec.make_inputs(shape, SEED, "cpu"))
        except Exception:  # noqa: BLE001 - a derived shape the reference rejects is skipped
            continue
        return name, out
    return None


def _odd_sizes(shape: Shape, least: int) -> list[str]:
    """Integer constants set by ``shape`` that are >= ``least`` and not multiples of 16."""
    return [k for k, v in shape.items()
            if isinstance(v, int) and not isinstance(v, bool) and v >= least and v % 16]


def _nbytes(xs: list[Any]) -> int:
    return sum(x.numel() * x.element_size() for x in xs if isinstance(x, torch.Tensor))


# ---------------------------------------------------------------------------------------
# Per problem: loading and metadata
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_problem_loads(key):
    assert key not in LOAD_ERRORS, LOAD_ERRORS.get(key)


@by_problem
def test_declares_metadata(key):
    spec = SPECS[key]
    meta = spec.meta
    missing = [n for n, v in [("dtype", meta.dtype), ("cpu_shapes", meta.cpu_shapes or None),
                              ("flops", meta.flops), ("bytes", meta.bytes)] if v is None]
    if meta.check is None:
        missing += [n for n in ("atol", "rtol") if getattr(meta, n) is None]
    assert not missing, f"KBENCH does not declare {missing}"
    gpu = [{**spec.constants}, *meta.shapes.values()]
    assert any(_odd_sizes(s, 8) for s in gpu), (
        "no GPU shape has a size (>= 8) that is not a multiple of 16: add one like 4093 or 1000")
    assert any(_odd_sizes(s, 2) for s in meta.cpu_shapes.values()), (
        "no CPU shape sets a size that is not a multiple of 16 (e.g. 7, 37, 1001)")


@by_problem
def test_roofline_at_gpu_shapes(key):
    spec = SPECS[key]
    for name, shape in spec.shapes.items():
        flops, nbytes = spec.roofline(shape)
        assert flops is not None and nbytes is not None, f"{name}: roofline unknown"
        assert math.isfinite(flops) and math.isfinite(nbytes), f"{name}: roofline not finite"
        assert nbytes > 0, f"{name}: bytes must be positive, got {nbytes}"
        if "data-movement" in spec.meta.tags:
            assert flops >= 0, f"{name}: negative FLOPs"
        else:
            assert flops > 0, f"{name}: FLOPs must be positive (tag 'data-movement' if truly 0)"


@by_problem
def test_inputs_fit_at_gpu_shapes(key):
    spec = SPECS[key]
    for name, shape in spec.shapes.items():
        try:
            inputs = spec.make_inputs(shape, 0, "meta")
        except Exception as e:  # noqa: BLE001 - some input builders need real values
            pytest.skip(f"inputs cannot be built on the meta device: {type(e).__name__}: {e}")
        gb = _nbytes(inputs) / 1e9
        assert gb < MAX_INPUT_GB, f"{name}: inputs take {gb:.1f} GB (limit {MAX_INPUT_GB})"


# ---------------------------------------------------------------------------------------
# Per problem and CPU shape: the reference
# ---------------------------------------------------------------------------------------
@by_case
def test_reference_runs_deterministically(key, shape_name):
    r = _run(key, shape_name)
    outs = _tensors(r.out)
    assert outs and all(type(t) is torch.Tensor for t in outs), (
        f"the reference returns {type(r.out).__name__}; expected a tensor or a tuple of tensors")
    for k, t in enumerate(outs):
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), f"output[{k}] has NaN/Inf"
    assert r.seconds < MAX_CPU_SECONDS, f"the reference takes {r.seconds:.2f} s at this CPU shape"
    same = all(torch.equal(a, b) for a, b in zip(outs, _tensors(r.out_again), strict=True))
    if not same:  # CPU kernels are deterministic: allow only rounding-level differences
        atol, rtol = (min(v, 1e-6) for v in r.spec.tolerance)
        mismatch, _ = compare_outputs(r.out_again, r.out, atol, rtol)
        assert mismatch is None, ("two runs from the same seeds disagree (unseeded randomness "
                                  f"in the model or inputs?): {mismatch.reason}")


@by_case
def test_reference_leaves_inputs_alone(key, shape_name):
    r = _run(key, shape_name)
    inputs = r.spec.make_inputs(r.shape, SEED, "cpu")
    kept = _clone(inputs)
    with torch.no_grad():
        r.model(*inputs)
    for i, (a, b) in enumerate(zip(inputs, kept, strict=True)):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f"the reference modifies input {i} in place"


@by_case
def test_output_not_near_constant(key, shape_name):
    r = _run(key, shape_name)
    for k, t in enumerate(_tensors(r.out)):
        if t.numel() < 2:
            continue
        if t.is_floating_point():
            x = t.double()
            spread = float(x.std() / x.abs().mean().clamp_min(1e-300))
            assert spread > NEAR_CONSTANT, f"output[{k}] is near-constant (std/mean|x| = {spread:.2g})"
        else:
            assert t.unique().numel() > 1, f"output[{k}] takes a single value"


@by_case
def test_output_depends_on_every_input(key, shape_name):
    r = _run(key, shape_name)
    alt = r.spec.make_inputs(r.shape, ALT_SEED, "cpu")
    for i, x in enumerate(r.inputs):
        if not isinstance(x, torch.Tensor):
            continue
        assert not torch.equal(alt[i], x), (
            f"input {i} is the same under two seeds: draw it from torch's RNG")
        mixed = list(r.inputs)
        mixed[i] = alt[i]
        try:
            out, _ = _forward(r.model, mixed)
        except Exception:  # noqa: BLE001 - input i is coupled to others: perturb it in place
            if not x.is_floating_point():
                continue  # an index coupled to other inputs: covered by the whole re-draw
            mixed[i] = x + (0.5 * x.float().std() + 1e-3).to(x.dtype) * torch.randn_like(x)
            out, _ = _forward(r.model, mixed)
        assert _differs(out, r.out, r.spec), (
            f"re-drawing input {i} alone leaves the output within tolerance: "
            "a kernel could ignore it")
    out, _ = _forward(r.model, alt)
    assert _differs(out, r.out, r.spec), "re-drawing every input leaves the output unchanged"


@by_case
def test_output_depends_on_parameters(key, shape_name):
    r = _run(key, shape_name)
    named = dict(r.model.named_parameters())
    named.update(r.model.named_buffers())
    if not named:
        pytest.skip("the model has no parameters or buffers")
    alt = r.spec.make_model(r.init, ALT_INIT_SEED, "cpu")
    alt_named = dict(alt.named_parameters())
    alt_named.update(alt.named_buffers())
    varying = [n for n, t in named.items() if not torch.equal(t, alt_named[n])]
    if not varying:
        pytest.skip("parameters and buffers are deterministic (the same under two init seeds)")
    out, _ = _forward(alt, r.inputs)
    assert _differs(out, r.out, r.spec), "rebuilding the model with another seed changes nothing"
    ignored = []
    for name in varying:
        t = named[name]
        kept = t.detach().clone()
        with torch.no_grad():
            t.copy_(alt_named[name])
        try:
            out, _ = _forward(r.model, r.inputs)
        except Exception:  # noqa: BLE001 - coupled to another tensor; the whole swap covers it
            out = None
        finally:
            with torch.no_grad():
                t.copy_(kept)
        if out is not None and not _differs(out, r.out, r.spec):
            ignored.append(name)
    assert not ignored, f"re-drawing {ignored} leaves the output within tolerance"


# ---------------------------------------------------------------------------------------
# Per problem and CPU shape: the comparison
# ---------------------------------------------------------------------------------------
def _verdict(candidate: Any, r: _Run) -> str | None:
    """The comparison's reason for rejecting ``candidate`` (None: accepted)."""
    spec = r.spec
    try:
        mismatch, _ = compare_outputs(candidate, r.out, *spec.tolerance, check=spec.meta.check,
                                      inputs=r.inputs, model=r.model)
    except Exception as e:  # noqa: BLE001 - a check must return a reason, never raise
        pytest.fail(f"the comparison raised {type(e).__name__}: {e} (a check returns a reason)")
    return mismatch.reason if mismatch else None


@by_case
def test_check_accepts_reference(key, shape_name):
    r = _run(key, shape_name)
    reason = _verdict(r.out_again, r)
    assert reason is None, f"the reference's own output is rejected: {reason}"


def _with_output(r: _Run, k: int, t: torch.Tensor) -> Any:
    """The reference's output with output ``k`` replaced by ``t`` (the others right)."""
    if not isinstance(r.out, (tuple, list)):
        return t
    outs = [o.clone() for o in r.out]
    outs[k] = t
    return type(r.out)(outs) if isinstance(r.out, tuple) else outs


@by_case
def test_check_rejects_zeros(key, shape_name):
    """Zeros in any ONE output, the others right, fail: a check that judges only some of a
    tuple's outputs is caught (zeros everywhere would fail on the first one alone)."""
    r = _run(key, shape_name)
    for k, o in enumerate(_tensors(r.out)):
        assert _verdict(_with_output(r, k, torch.zeros_like(o)), r) is not None, \
            f"zeros in output {k} pass the check"


@by_case
def test_check_rejects_inputs(key, shape_name):
    """An input handed back as an output fails, also when it has the output's shape and
    dtype (reshaped and cast where its size allows), so the values are judged, not only the
    shape."""
    r = _run(key, shape_name)
    tensors = [(i, x) for i, x in enumerate(r.inputs) if isinstance(x, torch.Tensor)]
    assert tensors, "the problem has no tensor inputs"
    for i, x in tensors:
        assert _verdict(x.clone(), r) is not None, f"returning input {i} passes the check"
        for k, o in enumerate(_tensors(r.out)):
            if x.numel() != o.numel() or o.numel() == 0:
                continue
            fake = x.detach().reshape(o.shape).to(o.dtype).clone()
            if torch.equal(fake, o):
                continue  # this output IS the input's values (a copy the op must make)
            assert _verdict(_with_output(r, k, fake), r) is not None, \
                f"input {i}, shaped as output {k}, passes the check"


@by_case
def test_check_rejects_other_shape(key, shape_name):
    r = _run(key, shape_name)
    other = _other_shape_output(r, shape_name)
    if other is None:
        pytest.skip("no other CPU or derived shape on which the reference runs")
    name, out = other
    assert _verdict(out, r) is not None, f"the output at shape {name!r} passes the check"


@by_case
def test_bytes_not_overclaimed(key, shape_name):
    """Declared minimum bytes can't exceed reading every input and weight once and writing
    every output once (an overclaim would let the roofline reject honest timings)."""
    r = _run(key, shape_name)
    _, declared = r.spec.roofline(r.shape)
    weights = [*r.model.parameters(), *r.model.buffers()]
    total = _nbytes(r.inputs) + _nbytes(_tensors(r.out)) + _nbytes(weights)
    assert declared is not None and declared <= 1.01 * total + 64, (
        f"declared bytes {declared:.4g} exceed inputs + outputs + weights {total} at this shape")
