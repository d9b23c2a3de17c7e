"""A candidate's knob space, read statically (the orchestrator never imports candidate code).

Two sources of knobs:

* ``TUNE = {"BLOCK": [64, 128], "NUM_WARPS": [4, 8]}``: candidate values for module globals;
  the verifier's child sets them on the imported module (``knobs=`` of ``sandbox.verify``).
* ``@triton.autotune(configs=[triton.Config({...}, num_warps=.., num_stages=..), ...])``:
  each config's keyword values and ``num_warps``/``num_stages`` become choices named
  ``"<kernel>.<name>"``. A chosen combination is applied by rewriting that decorator's
  ``configs`` list to the single chosen config (:func:`apply`); the autotuner then runs it
  without benchmarking. The dot keeps these names apart from module globals, and no
  sandbox change is needed: the rewritten source is verified like any other.

An autotune whose configs are not a literal list of ``Config({...literal...}, num_warps=..,
num_stages=..)`` (a comprehension, a ``pre_hook``, configs setting different keys) is not
lifted: it keeps autotuning itself at run time, and :func:`lift_notes` says why.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any

from kbench.errors import ConfigError
from sandbox.policy import parse

__all__ = ["MAX_COMBINATIONS", "space", "apply", "defaults", "lift_notes", "parse_knobs"]

MAX_COMBINATIONS = 10_000
_SCALARS = (bool, int, float, str)
_AUTOTUNE = ("triton.autotune", "autotune", "triton.runtime.autotuner.autotune",
             "triton.runtime.autotune")
_LAUNCH = ("num_warps", "num_stages")
_TRITON_DEFAULTS = {"num_warps": 4, "num_stages": 3}  # triton.Config's own defaults


@dataclass
class _Lifted:
    kernel: str
    configs: ast.List  # the node whose source span :func:`apply` replaces
    config_call: str  # how the source spells triton.Config
    params: dict[str, list[Any]] = field(default_factory=dict)  # "BLOCK" / "num_warps" -> values
    first: dict[str, Any] = field(default_factory=dict)  # the first config's values


def _parse(source: str) -> ast.Module:
    try:
        return parse(source)
    except SyntaxError as e:
        raise ConfigError(f"the candidate does not parse (line {e.lineno}: {e.msg})") from None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _module_globals(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for t in targets:
            names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _tune_node(tree: ast.Module) -> ast.expr | None:
    found = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "TUNE" for t in node.targets):
            found = node.value
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and node.target.id == "TUNE" and node.value is not None):
            found = node.value
    return found


def _check_values(where: str, values: Any) -> list[Any]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where} must be a non-empty list of values, e.g. [64, 128, 256]")
    for v in values:
        if not isinstance(v, _SCALARS):
            raise ConfigError(f"{where} holds {v!r} ({type(v).__name__}); knob values must be "
                              "int, float, bool or str")
    if len({(type(v), v) for v in values}) != len(values):
        raise ConfigError(f"{where} lists a value twice: {list(values)!r}")
    return list(values)


def _tune_dict(tree: ast.Module) -> dict[str, list[Any]]:
    node = _tune_node(tree)
    if node is None:
        return {}
    try:
        raw = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ConfigError(f"TUNE (line {node.lineno}) must be a literal dict of lists, e.g. "
                          'TUNE = {"BLOCK": [64, 128], "NUM_WARPS": [4, 8]}') from None
    if not isinstance(raw, dict):
        raise ConfigError(f"TUNE (line {node.lineno}) must be a dict of knob name -> list of "
                          f"values, not a {type(raw).__name__}")
    known = _module_globals(tree)
    out: dict[str, list[Any]] = {}
    for name, values in raw.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"TUNE key {name!r} is not a Python name; keys name module globals")
        if name not in known:
            raise ConfigError(f"TUNE names {name!r}, which is not a module-level global of the "
                              f"candidate (add `{name} = ...` that the launcher reads)")
        out[name] = _check_values(f"TUNE[{name!r}]", values)
    return out


def _lift_one(fn: ast.FunctionDef, dec: ast.Call) -> tuple[_Lifted | None, str | None]:
    node = dec.args[0] if dec.args else next(
        (k.value for k in dec.keywords if k.arg == "configs"), None)
    where = f"@triton.autotune of {fn.name}"
    if not isinstance(node, ast.List) or not node.elts:
        return None, f"{where}: configs are not a literal list; left to autotune at run time"
    rows: list[dict[str, Any]] = []
    spelling = ""
    for c in node.elts:
        if not (isinstance(c, ast.Call) and _dotted(c.func).endswith("Config")):
            return None, f"{where}: a config is not a Config(...) call; left to autotune"
        spelling = spelling or _dotted(c.func)
        kw_node = c.args[0] if c.args else next(
            (k.value for k in c.keywords if k.arg == "kwargs"), None)
        try:
            row = dict(ast.literal_eval(kw_node)) if kw_node is not None else {}
            for k in c.keywords:
                if k.arg == "kwargs":
                    continue
                if k.arg not in _LAUNCH:
                    return None, f"{where}: a config sets {k.arg}=; left to autotune"
                row[k.arg] = ast.literal_eval(k.value)
        except (ValueError, TypeError, SyntaxError):
            return None, f"{where}: a config is not literal; left to autotune at run time"
        if len(c.args) > 1 or any(not isinstance(v, _SCALARS) for v in row.values()):
            return None, f"{where}: a config holds non-scalar values; left to autotune"
        rows.append(row)
    keys = [k for k in rows[0] if k not in _LAUNCH]
    if any(set(r) - set(_LAUNCH) != set(keys) for r in rows):
        return None, f"{where}: configs set different parameters; left to autotune"
    launch = [k for k in _LAUNCH if any(k in r for r in rows)]
    lifted = _Lifted(fn.name, node, spelling)
    for k in keys + launch:
        seen: list[Any] = []
        for r in rows:
            v = r.get(k, _TRITON_DEFAULTS.get(k))
            if v not in seen:
                seen.append(v)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
            seen.sort()
        lifted.params[k] = seen
        lifted.first[k] = rows[0].get(k, _TRITON_DEFAULTS.get(k))
    return lifted, None


def _autotunes(tree: ast.Module) -> tuple[list[_Lifted], list[str]]:
    lifted, notes = [], []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and _dotted(dec.func) in _AUTOTUNE:
                one, note = _lift_one(fn, dec)  # type: ignore[arg-type]
                if one is not None:
                    lifted.append(one)
                if note:
                    notes.append(note)
    return lifted, notes


def _declared(source: str) -> dict[str, list[Any]]:
    """``TUNE`` entries, then lifted autotune choices, however many combinations."""
    tree = _parse(source)
    out = _tune_dict(tree)
    lifted, _ = _autotunes(tree)
    for lt in lifted:
        for k, values in lt.params.items():
            out[f"{lt.kernel}.{k}"] = values
    return out


def space(source: str) -> dict[str, list[Any]]:
    """The candidate's knob space: ``TUNE`` entries, then lifted autotune choices.

    Raises:
        ConfigError: ``TUNE`` is not a literal dict of non-empty lists of int/float/bool/str
            values naming module globals, or the space has more than
            :data:`MAX_COMBINATIONS` combinations. The message is one line.

    Example:
        >>> space('BLOCK = 64\\nTUNE = {"BLOCK": [64, 128]}\\n')
        {'BLOCK': [64, 128]}
    """
    out = _declared(source)
    n = math.prod(len(v) for v in out.values()) if out else 0
    if n > MAX_COMBINATIONS:
        sizes = " x ".join(str(len(v)) for v in out.values())
        raise ConfigError(f"the knob space has {n} combinations ({sizes}), more than the "
                          f"{MAX_COMBINATIONS} kbench tunes; drop values that cannot win")
    return out


def lift_notes(source: str) -> list[str]:
    """Why an ``@triton.autotune`` of the candidate was not lifted into the space (if any)."""
    return _autotunes(_parse(source))[1]


def defaults(source: str) -> dict[str, Any]:
    """The candidate's own values of its ``TUNE`` knobs (module-level literals) that lie in
    the space: the configuration a tuning study measures first."""
    tree = _parse(source)
    tune = _tune_dict(tree)
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id in tune:
                    try:
                        v = ast.literal_eval(node.value)
                    except (ValueError, TypeError, SyntaxError):
                        out.pop(t.id, None)
                        continue
                    if any(type(v) is type(c) and v == c for c in tune[t.id]):
                        out[t.id] = v
    return out


def apply(source: str, knobs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split ``knobs`` into the source to verify and the module-global knobs to pass as
    ``knobs=`` to ``sandbox.verify``.

    Lifted autotune knobs (``"kernel.NAME"``) rewrite that kernel's ``configs=[...]`` to the
    one chosen config (values a knob dict leaves out come from the kernel's first config);
    the rest are returned unchanged.

    Raises:
        ConfigError: A knob is not in the candidate's space.
    """
    tree = _parse(source)
    lifted, _ = _autotunes(tree)
    by_kernel = {lt.kernel: lt for lt in lifted}
    plain = {k: v for k, v in knobs.items() if "." not in k}
    dotted: dict[str, dict[str, Any]] = {}
    for k, v in knobs.items():
        if "." in k:
            kernel, name = k.split(".", 1)
            if kernel not in by_kernel or name not in by_kernel[kernel].params:
                raise ConfigError(f"knob {k!r} is not a lifted @triton.autotune choice of the "
                                  "candidate")
            dotted.setdefault(kernel, {})[name] = v
    if not dotted:
        return source, plain
    data = source.encode()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits = []
    for kernel, chosen in dotted.items():
        lt = by_kernel[kernel]
        vals = {**lt.first, **chosen}
        kw = {k: v for k, v in vals.items() if k not in _LAUNCH}
        launch = "".join(f", {k}={vals[k]!r}" for k in _LAUNCH if k in vals)
        text = f"[{lt.config_call}({kw!r}{launch})]"
        node = lt.configs
        a = starts[node.lineno - 1] + node.col_offset
        b = starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[operator]
        edits.append((a, b, text.encode()))
    for a, b, text in sorted(edits, reverse=True):
        data = data[:a] + text + data[b:]
    return data.decode(), plain


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__  # (bool before int: type(), not isinstance)


def _an(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def parse_knobs(source: str, given: dict[str, str]) -> dict[str, Any]:
    """``kbench eval --knob NAME=VALUE`` checked against the candidate's knob space
    (:func:`space`): each value typed as the knob's declared values are.

    A value outside the declared candidates is accepted if it is of their type (users try
    values beyond the grid; an int knob takes any int, a float knob any number); JSON
    (``128``, ``1.5``, ``true``) gives the type, and a knob declared with strings takes the
    text as it is.

    Raises:
        ConfigError: The candidate declares no knobs, a name is not one of its knobs, or a
            value is of another type than the knob's values (``BLOCK=abc`` where ints are
            declared). One line, naming the knobs or the values declared.
    """
    if not given:
        return {}
    declared = _declared(source)  # (eval sets one point: no limit on the combinations)
    first = next(iter(given))
    if not declared:
        raise ConfigError(f"--knob {first}: the candidate declares no knobs (no module-level "
                          "TUNE dict and no literal @triton.autotune configs); declare them, "
                          'e.g. TUNE = {"BLOCK": [64, 128]} beside BLOCK = 64, or drop --knob')
    out: dict[str, Any] = {}
    for name, text in given.items():
        if name not in declared:
            raise ConfigError(f"--knob {name}: the candidate declares no knob {name!r}; its "
                              f"knobs: {', '.join(declared)}")
        values = declared[name]
        kinds = {_kind(v) for v in values}
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        kind = _kind(value)
        if kind in kinds:
            pass
        elif kind == "int" and "float" in kinds:
            value = float(value)  # 2 for a float knob
        elif "str" in kinds:
            value = text  # a string knob takes the text as given ("64" too)
        else:
            want = " or ".join(sorted(kinds))
            shown = ", ".join(map(repr, values[:6])) + (", ..." if len(values) > 6 else "")
            raise ConfigError(f"--knob {name}={text}: {name} takes {want} values (declared: "
                              f"{shown}); {text!r} is {_an(kind)}, not {_an(want)}")
        out[name] = value
    return out
