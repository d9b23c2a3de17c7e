"""Rendering one exportable winner into the package's files (op module, kernel, reference)."""

from __future__ import annotations

import inspect
import json
import keyword
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from pprint import pformat
from typing import Any

from kbench.errors import ConfigError
from kbench.export._select import Winner
from kbench.export._trace import rewrite_launches
from kbench.store import Store
from kbench.tuning import source_hash
from sandbox.problem import ProblemSpec, load_file

__all__ = ["Rendered", "render", "module_name"]


@dataclass(frozen=True)
class Rendered:
    """One problem's files (relative path -> text) and what the README says of it."""

    module: str
    files: dict[str, str]
    summary: dict[str, Any]


def module_name(problem_key: str) -> str:
    name = re.sub(r"\W", "_", problem_key).strip("_").lower()
    return name if name and not name[0].isdigit() and not keyword.iskeyword(name) else f"p_{name}"


def _signature(spec: ProblemSpec, params: dict[str, Any]) -> str:
    """The signature of the inputs at ``params``: made on the meta device (sizes only, no
    memory), else on CPU for a ``get_inputs`` that reads values (``int(lengths.max())``,
    ``.tolist()``), which meta tensors do not have."""
    from kbench.export._pkg_runtime import signature

    try:
        return signature(spec.make_inputs(params, 0, "meta"))
    except Exception:  # noqa: BLE001 - any failure on meta: the real inputs decide
        return signature(spec.make_inputs(params, 0, "cpu"))


def _spec_of(store: Store, w: Winner, tmp: Path) -> ProblemSpec:
    """The problem exactly as it was verified: its stored source, not today's file."""
    prob = store.get_problem(w.candidate.problem_id)
    if prob is None:
        raise ConfigError(f"problem {w.problem_key} is missing from the store")
    path = tmp / (module_name(w.problem_key) + ".py")
    path.write_text(prob.source)
    return load_file(path, key=w.problem_key, suite=prob.suite)


def _op_params(spec: ProblemSpec, n: int) -> list[str]:
    try:
        names = [p.name for p in inspect.signature(spec.module.Model.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
    except (TypeError, ValueError):
        names = []
    ok = len(names) == n and all(s.isidentifier() and not keyword.iskeyword(s) for s in names)
    return names if ok else [f"a{i}" for i in range(n)]


def _annotation(x: Any) -> str:
    import torch

    if isinstance(x, torch.Tensor):
        return "torch.Tensor"
    for t in (bool, int, float, str):
        if isinstance(x, t):
            return t.__name__
    raise ConfigError(f"input of type {type(x).__name__} cannot be a custom op argument")


def _output_kind(spec: ProblemSpec) -> tuple[str, bool]:
    """The op's return annotation, from the reference run on its first small CPU shape, and
    whether the reference holds parameters or buffers (then a triton op takes its kernel
    model's as an argument, the only way they can enter a trace)."""
    import torch

    shape = next(iter(spec.cpu_shapes.values()))
    inputs = spec.make_inputs(shape, 0, "cpu")
    model = spec.make_model(spec.make_init_inputs(shape), 0, "cpu", shape=shape)
    has_state = any(True for _ in model.parameters()) or any(True for _ in model.buffers())
    with torch.no_grad():
        out = model(*inputs)
    if isinstance(out, torch.Tensor):
        return "torch.Tensor", has_state
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return "tuple[" + ", ".join(["torch.Tensor"] * len(out)) + "]", has_state
    raise ConfigError(f"the reference returns {type(out).__name__}, not tensors")


def _tuned(store: Store, w: Winner) -> dict[str, dict[str, Any]]:
    rows = store.tuned_configs(w.problem_key, source_hash(w.candidate.source))
    fph = w.candidate.verdict.fingerprint_hash if w.candidate.verdict else None
    same = [r for r in rows if r.fingerprint_hash == fph]
    return {r.shape_name: dict(r.knobs) for r in (same or rows)}  # oldest first: latest wins


_HEAD = '''"""{qualname}: {key}'s winning kernel from kbench run {run!r} (candidate {cid}, chosen by
{how}), registered as a {registration}. The kernel's source is ``{pkg}._kernels.{mod}``; the
reference it was verified against is ``{pkg}._reference.{mod}``.{note}"""

from __future__ import annotations

import torch

from {pkg} import _runtime
from {pkg}._reference import {mod} as _reference

SPEC = _runtime.OpSpec(
    name={mod!r},
    qualname={qualname!r},
    problem={key!r},
    backend={backend!r},
    kernel_module="{pkg}._kernels.{mod}",
    reference=_reference,
    verified={verified},
    verified_device={vdevice!r},
    cpu_shapes={cpu_shapes},
    cpu_signatures={cpu_signatures},
    tuned={tuned},
    registration={registration!r},
    registration_note={registration_note!r},
    takes_state={takes_state!r},
    atol={atol!r},
    rtol={rtol!r},
)
'''

_CUSTOM_OP = '''

@torch.library.custom_op({qualname!r}, mutates_args=())
def {mod}({params}) -> {ret}:
    return _runtime.call(SPEC, ({args},))


@{mod}.register_fake
def _({params}) -> {ret}:
    return _runtime.fake(SPEC, ({args},))
'''

# triton_op traces its body under torch.compile (its own fake implementation); the kernel
# source's launches were rewritten to wrap_triton. A model's parameters and buffers enter the
# trace as the last argument (real tensors captured inside cannot mix with fake ones);
# custom ops infer no default for a tensor list, so that argument is there only when needed.
_TRITON_OP = '''

@torch.library.triton_op({qualname!r}, mutates_args=())
def {mod}({params}) -> {ret}:
    return _runtime.call(SPEC, ({args},))
'''

_TRITON_OP_STATE = '''

@torch.library.triton_op({qualname!r}, mutates_args=())
def {mod}({params}, {state}: list[torch.Tensor]) -> {ret}:
    """Call as ``{mod}(*inputs, state(*inputs))``."""
    return _runtime.call(SPEC, ({args},), {state})


def state({params}) -> list[torch.Tensor]:
    """The kernel model's parameters and buffers for these inputs, the op's last argument
    (compute it outside a compiled function: it builds the model once per shape)."""
    return _runtime.state(SPEC, ({args},))
'''


_KBENCH_IMPORT = re.compile(r"^[ \t]*(?:from|import)[ \t]+(kbench|sandbox|agents)\b[.\w]*",
                            re.MULTILINE)


def _shipped_reference(source: str, pkg: str) -> tuple[str, bool]:
    """The reference's source as the package ships it, and whether it needs
    ``{pkg}._compare``: a problem's own output check may import kbench's comparison
    (``from sandbox.compare import compare``), which the package ships as ``_compare``; any
    other import of kbench's packages is refused (the package must not need kbench)."""
    out = re.sub(r"^([ \t]*)from[ \t]+sandbox\.compare[ \t]+import\b",
                 rf"\1from {pkg}._compare import", source, flags=re.MULTILINE)
    out = re.sub(r"^([ \t]*)import[ \t]+sandbox\.compare[ \t]+as\b",
                 rf"\1from {pkg} import _compare as", out, flags=re.MULTILINE)
    left = _KBENCH_IMPORT.search(out)
    if left:
        line = out.count("\n", 0, left.start()) + 1
        raise ConfigError(f"the problem file imports {left.group(0).strip()!r} at line {line}; "
                          "an exported package cannot depend on kbench")
    return out, out != source


_REF_OPS_IMPORT = re.compile(r"^([ \t]*)from[ \t]+reference_ops((?:\.\w+)*)[ \t]+import\b",
                             re.MULTILINE)


def _ship_reference_ops(sources: list[str], pkg: str) -> tuple[list[str], dict[str, str]]:
    """``sources`` with their ``from reference_ops... import`` pointing at the package's copy
    (``{pkg}._reference_ops``), and the files of that copy: each module of kbench's
    ``reference_ops`` they need, with what those import in turn. Without it the package
    imports kbench's ``reference_ops`` and fails to import where kbench is not installed."""
    import importlib.resources

    root = importlib.resources.files("reference_ops")
    files: dict[str, str] = {}
    todo = [m.group(2).lstrip(".").split(".")[0] for src in sources
            for m in _REF_OPS_IMPORT.finditer(src)]
    while todo:
        name = todo.pop() or "__init__"
        path = f"{pkg}/_reference_ops/{name}.py"
        if path in files:
            continue
        text = root.joinpath(f"{name}.py").read_text()
        todo += [m.group(2).lstrip(".").split(".")[0] for m in _REF_OPS_IMPORT.finditer(text)]
        files[path] = _REF_OPS_IMPORT.sub(rf"\1from {pkg}._reference_ops\2 import", text)
    if files:
        init = f"{pkg}/_reference_ops/__init__.py"
        files.setdefault(init, '"""kbench\'s reference_ops, the modules this package\'s '
                               'references use, copied."""\n')
    return [_REF_OPS_IMPORT.sub(rf"\1from {pkg}._reference_ops\2 import", src)
            for src in sources], files


def _compare_source() -> str:
    import importlib.resources

    return ("# kbench's sandbox/compare.py, copied: the comparison a problem's own output check "
            "uses.\n" + importlib.resources.files("sandbox").joinpath("compare.py").read_text())


def _registration(w: Winner) -> tuple[str, str, str]:
    """(registration, note, kernel module source): a Triton candidate whose launches could be
    rewritten is a triton_op; any other is a custom_op (with the reason for a Triton one)."""
    if w.candidate.backend != "triton":
        return "custom_op", "", w.candidate.source
    t = rewrite_launches(w.candidate.source)
    if t.source is None:
        return "custom_op", f"not a triton_op: {t.why}", w.candidate.source
    return "triton_op", "", t.source


def _how_timed(shape: dict[str, Any]) -> dict[str, dict[str, float]]:
    """How the verifier timed one shape, for ``bench.py`` to time it alike and to judge its
    reading against the stored one: per time (``op``, ``eager``, ``compile``) the calls per
    sample, the relative spread (IQR / median) of its samples and their median (for
    ``bench.py`` to say which time moved when a speedup differs)."""
    out: dict[str, dict[str, float]] = {}
    for who, key in (("op", "timing"), ("eager", "eager"), ("compile", "compiled")):
        t = shape.get(key) or {}
        med, iqr = t.get("median_ms"), t.get("iqr_ms")
        if not med:
            continue
        out[who] = {"calls_per_sample": int(t.get("calls_per_sample") or 1),
                    "rel_iqr": round(float(iqr or 0.0) / float(med), 6),
                    "median_ms": round(float(med), 6)}
    return out


def render(store: Store, w: Winner, pkg: str, run: str) -> Rendered:
    """The files of one winner. Raises ConfigError with the reason it cannot be exported."""
    mod = module_name(w.problem_key)
    with tempfile.TemporaryDirectory(prefix="kbench-export-") as tmp:
        spec = _spec_of(store, w, Path(tmp))
        verified: dict[str, dict[str, Any]] = {}
        for s in w.verdict["shapes"]:
            params = dict(s["params"])
            verified[s["name"]] = {
                "params": params, "signature": _signature(spec, params),
                "speedup_eager": s.get("speedup_eager"),
                "speedup_compile": s.get("speedup_compile"),
            }
            how = _how_timed(s)
            if how:
                verified[s["name"]]["timed"] = how
        cpu_shapes = spec.cpu_shapes
        cpu_signatures = {n: _signature(spec, dict(p)) for n, p in cpu_shapes.items()}
        # Types and count only: the first small CPU shape's real inputs (any get_inputs runs)
        main_inputs = spec.make_inputs(dict(next(iter(cpu_shapes.values()))), 0, "cpu")
        params = _op_params(spec, len(main_inputs))
        annots = [_annotation(x) for x in main_inputs]
        ret, takes_state = _output_kind(spec)
        atol, rtol = spec.tolerance
    tuned = {k: v for k, v in _tuned(store, w).items() if k in verified}
    registration, note, kernel_source = _registration(w)
    qualname = f"{pkg}::{mod}"
    state_arg = "model_state" if "model_state" not in params else "model_state_"
    fields = dict(
        qualname=qualname, key=w.problem_key, run=run, cid=w.candidate.id, how=w.chosen_by,
        pkg=pkg, mod=mod, backend=w.candidate.backend,
        verified=pformat(verified, width=96, sort_dicts=False),
        vdevice=str(w.verdict.get("device", "cpu")), cpu_shapes=pformat(cpu_shapes, width=96),
        cpu_signatures=pformat(cpu_signatures, width=96),
        tuned=pformat(tuned, width=96), atol=float(atol), rtol=float(rtol),
        params=", ".join(f"{p}: {a}" for p, a in zip(params, annots)), ret=ret,
        args=", ".join(params), registration=registration, registration_note=note,
        note=f"\n\nRegistered as a custom_op, {note}." if note else "", state=state_arg,
        takes_state=registration == "triton_op" and takes_state,
    )
    body = _CUSTOM_OP if registration != "triton_op" else (
        _TRITON_OP_STATE if takes_state else _TRITON_OP)
    op = _HEAD.format(**fields) + body.format(**fields)
    reference, needs_compare = _shipped_reference(spec.source, pkg)
    shipped, ref_ops = _ship_reference_ops(
        [reference] + ([_compare_source()] if needs_compare else []), pkg)
    files = {
        f"{pkg}/{mod}.py": op,
        f"{pkg}/_kernels/{mod}.py": kernel_source,
        f"{pkg}/_reference/{mod}.py": shipped[0],
        **ref_ops,
    }
    if needs_compare:
        files[f"{pkg}/_compare.py"] = shipped[1]
    summary = {
        "problem": w.problem_key, "op": f"torch.ops.{pkg}.{mod}", "candidate": w.candidate.id,
        "chosen_by": w.chosen_by, "backend": w.candidate.backend, "timing": w.timing,
        "timing_agrees": (w.confirmation or {}).get("agrees"),
        "registration": registration, "registration_note": note,
        "own_check": spec.meta.check is not None,
        "takes_state": registration == "triton_op" and takes_state,
        "device": w.verdict.get("device"), "fingerprint": w.verdict.get("fingerprint") or {},
        "speedup_eager": w.verdict.get("speedup_eager"),
        "speedup_compile": w.verdict.get("speedup_compile"),
        "shapes": {n: {"params": v["params"], "speedup_eager": v["speedup_eager"],
                       "speedup_compile": v["speedup_compile"], "tuned": tuned.get(n)}
                   for n, v in verified.items()},
    }
    json.dumps(summary)  # the README is written from it: plain values only
    return Rendered(mod, files, summary)
