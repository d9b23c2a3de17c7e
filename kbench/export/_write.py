"""Rendering one exportable winner into the package's files (op module, kernel, reference)."""

from __future__ import annotations

import ast
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


def _literal(x: Any, what: str) -> str:
    text = repr(x)
    try:
        ok = ast.literal_eval(text) == x
    except (ValueError, SyntaxError):
        ok = False
    if not ok:
        raise ConfigError(f"{what} is not a plain value ({type(x).__name__}); only problems "
                          "whose constructor inputs are numbers, strings or lists are exported")
    return text


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


def _output_kind(spec: ProblemSpec) -> str:
    """The op's return annotation, from the reference run on its first small CPU shape."""
    import torch

    shape = next(iter(spec.cpu_shapes.values()))
    inputs = spec.make_inputs(shape, 0, "cpu")
    model = spec.make_model(spec.make_init_inputs(shape), 0, "cpu", shape=shape)
    with torch.no_grad():
        out = model(*inputs)
    if isinstance(out, torch.Tensor):
        return "torch.Tensor"
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return "tuple[" + ", ".join(["torch.Tensor"] * len(out)) + "]"
    raise ConfigError(f"the reference returns {type(out).__name__}, not tensors")


def _tuned(store: Store, w: Winner) -> dict[str, dict[str, Any]]:
    rows = store.tuned_configs(w.problem_key, source_hash(w.candidate.source))
    fph = w.candidate.verdict.fingerprint_hash if w.candidate.verdict else None
    same = [r for r in rows if r.fingerprint_hash == fph]
    return {r.shape_name: dict(r.knobs) for r in (same or rows)}  # oldest first: latest wins


_OP = '''"""{qualname}: {key}'s winning kernel from kbench run {run!r} (candidate {cid}, chosen by
{how}), registered as a torch custom op. The kernel's source is ``{pkg}._kernels.{mod}``; the
reference it was verified against is ``{pkg}._reference.{mod}``."""

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
    default_init={default_init},
    verified={verified},
    verified_device={vdevice!r},
    cpu_shapes={cpu_shapes},
    tuned={tuned},
    atol={atol!r},
    rtol={rtol!r},
)


@torch.library.custom_op({qualname!r}, mutates_args=())
def {mod}({params}) -> {ret}:
    return _runtime.call(SPEC, ({args},))


@{mod}.register_fake
def _({params}) -> {ret}:
    return _runtime.fake(SPEC, ({args},))
'''


def render(store: Store, w: Winner, pkg: str, run: str) -> Rendered:
    """The files of one winner. Raises ConfigError with the reason it cannot be exported."""
    from kbench.export._pkg_runtime import signature

    mod = module_name(w.problem_key)
    with tempfile.TemporaryDirectory(prefix="kbench-export-") as tmp:
        spec = _spec_of(store, w, Path(tmp))
        verified: dict[str, dict[str, Any]] = {}
        for s in w.verdict["shapes"]:
            params = dict(s["params"])
            inputs = spec.make_inputs(params, 0, "meta")  # sizes only, no memory
            verified[s["name"]] = {
                "params": params, "signature": signature(inputs),
                "init": ast.literal_eval(_literal(spec.make_init_inputs(params),
                                                  f"{w.problem_key} init inputs")),
                "speedup_eager": s.get("speedup_eager"),
                "speedup_compile": s.get("speedup_compile"),
            }
        main_inputs = spec.make_inputs(dict(spec.constants), 0, "meta")
        params = _op_params(spec, len(main_inputs))
        annots = [_annotation(x) for x in main_inputs]
        ret = _output_kind(spec)
        default_init = _literal(spec.make_init_inputs(dict(spec.constants)),
                                f"{w.problem_key} init inputs")
        cpu_shapes = spec.cpu_shapes
        atol, rtol = spec.tolerance
    tuned = {k: v for k, v in _tuned(store, w).items() if k in verified}
    qualname = f"{pkg}::{mod}"
    op = _OP.format(
        qualname=qualname, key=w.problem_key, run=run, cid=w.candidate.id, how=w.chosen_by,
        pkg=pkg, mod=mod, backend=w.candidate.backend, default_init=default_init,
        verified=pformat(verified, width=96, sort_dicts=False),
        vdevice=str(w.verdict.get("device", "cpu")), cpu_shapes=pformat(cpu_shapes, width=96),
        tuned=pformat(tuned, width=96), atol=float(atol), rtol=float(rtol),
        params=", ".join(f"{p}: {a}" for p, a in zip(params, annots)), ret=ret,
        args=", ".join(params),
    )
    files = {
        f"{pkg}/{mod}.py": op,
        f"{pkg}/_kernels/{mod}.py": w.candidate.source,
        f"{pkg}/_reference/{mod}.py": spec.source,
    }
    summary = {
        "problem": w.problem_key, "op": f"torch.ops.{pkg}.{mod}", "candidate": w.candidate.id,
        "chosen_by": w.chosen_by, "backend": w.candidate.backend,
        "device": w.verdict.get("device"), "fingerprint": w.verdict.get("fingerprint") or {},
        "speedup_eager": w.verdict.get("speedup_eager"),
        "speedup_compile": w.verdict.get("speedup_compile"),
        "shapes": {n: {"params": v["params"], "speedup_eager": v["speedup_eager"],
                       "speedup_compile": v["speedup_compile"], "tuned": tuned.get(n)}
                   for n, v in verified.items()},
    }
    json.dumps(summary)  # the README is written from it: plain values only
    return Rendered(mod, files, summary)
