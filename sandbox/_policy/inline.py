"""The load_inline checks: CUDA strings must be constants the CUDA scan can read."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from sandbox._cuda_policy import scan_flags, scan_source
from sandbox._policy.facts import _Facts, _walk_scope
from sandbox._policy.tables import (
    _FLAG_KWARGS,
    _SOURCE_KWARGS,
    _aten_names,
    _compute_methods,
)

# Device code a load_inline extension can launch: its own kernels, or CUTLASS/CuTe templates.
_DEVICE_CODE = re.compile(r"__global__|<<<|\bcutlass\b|\bcute\s*::")


class _SourceStrings:
    """Mixed into the checker: ``load_inline`` arguments and the strings they are built from."""

    f: _Facts
    fn_stack: list[ast.AST]
    add: Callable[[str, ast.AST | int | None, str], None]

    # -- load_inline --------------------------------------------------------------------------
    def _check_load_inline(self, node: ast.Call) -> None:
        if any(isinstance(a, ast.Starred) for a in node.args) or \
                any(k.arg is None for k in node.keywords):
            self.add("cuda-dynamic", node, "passes *args/**kwargs to load_inline; spell out "
                     "name=, cpp_sources=, cuda_sources=, functions=")
            return
        if len(node.args) > 2:
            self.add("cuda-dynamic", node, "pass load_inline arguments after cpp_sources by "
                     "keyword")
        args = dict(zip(("name", "cpp_sources"), node.args, strict=False))
        args |= {k.arg: k.value for k in node.keywords if k.arg}
        texts: list[str] = []
        dynamic = False
        for key in _SOURCE_KWARGS:
            if key not in args:
                continue
            pieces = self._strings(args[key])
            if pieces is None:
                dynamic = True
                self.add("cuda-dynamic", args[key], f"{key} is not built from string constants; "
                         "pass literals or module-level string constants (no .format/.replace)")
                continue
            texts += [t for t, _ in pieces]
            for text, line in pieces:
                for rule, offset, msg in scan_source(text, _compute_methods(), _aten_names()):
                    self.add(rule, line + offset, f"(CUDA source) {msg}")
        if not dynamic and not any(_DEVICE_CODE.search(t) for t in texts):
            # Host code alone can only allocate, fill or call ATen: no work of its own on
            # the GPU (KernelBench's zero_out and result_reuse adversarial kernels).
            self.add("no-kernel", node, "the load_inline sources define no __global__ kernel "
                     "and launch none: the extension only allocates or fills tensors; write "
                     "the computation in a CUDA kernel")
        for key in _FLAG_KWARGS:
            if key not in args:
                continue
            pieces = self._strings(args[key])
            if pieces is None:
                self.add("cuda-dynamic", args[key], f"{key} is not a list of string constants")
                continue
            for rule, msg in scan_flags((t for t, _ in pieces), key):
                self.add(rule, args[key], msg)

    def _strings(self, e: ast.expr, depth: int = 0) -> list[tuple[str, int]] | None:
        """The string pieces (text, first line) an expression is built from, or None if dynamic."""
        if depth > 20:
            return None
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            return [(e.value, e.lineno)]
        if isinstance(e, (ast.List, ast.Tuple)):
            out: list[tuple[str, int]] = []
            for x in e.elts:
                part = self._strings(x, depth + 1)
                if part is None:
                    return None
                out += part
            return out
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            left, right = self._strings(e.left, depth + 1), self._strings(e.right, depth + 1)
            if left is None or right is None:
                return None
            if len(left) == 1 and len(right) == 1:  # keep adjacent text joinable ("cub" + "las")
                return [(left[0][0] + right[0][0], left[0][1])]
            return left + right
        if isinstance(e, ast.JoinedStr):
            text = ""
            for v in e.values:
                if isinstance(v, ast.Constant):
                    text += str(v.value)
                elif isinstance(v, ast.FormattedValue):
                    val = self._constant(v.value, depth + 1)
                    if not isinstance(val, (int, float)) or isinstance(val, bool):
                        return None
                    text += str(val)
            return [(text, e.lineno)]
        if isinstance(e, ast.Name):
            value = self._single_assignment(e.id)
            return None if value is None else self._strings(value, depth + 1)
        return None

    def _constant(self, e: ast.expr, depth: int) -> object:
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name) and depth < 20:
            v = self._single_assignment(e.id)
            return None if v is None else self._constant(v, depth + 1)
        return None

    def _single_assignment(self, name: str) -> ast.expr | None:
        scopes = [*reversed(self.fn_stack), self.f.tree]
        for scope in scopes:
            stores = [n for n in _walk_scope(scope) if isinstance(n, ast.Name)
                      and n.id == name and isinstance(n.ctx, (ast.Store, ast.Del))]
            if not stores:
                continue
            if len(stores) > 1:
                return None
            parent = self.f.parent.get(stores[0])
            if isinstance(parent, (ast.Assign, ast.AnnAssign)) and parent.value is not None and \
                    (isinstance(parent, ast.AnnAssign) or len(parent.targets) == 1):
                return parent.value
            return None
        return None
