"""Facts about a candidate's source gathered before checking (kernels, scopes, names)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from sandbox._policy.tables import (
    _LOAD_INLINE,
    _MISSING,
    _MODULE_TENSORS,
    _TENSOR_ATTRS,
    _TENSOR_OK,
    _TORCH_NON_TENSOR,
    _canonical,
    _resolve,
)


# --------------------------------------------------------------------------------------------
# File-level facts
# --------------------------------------------------------------------------------------------
def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of one scope: does not descend into nested functions, lambdas or classes."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(n))


def _stored_names(node: ast.AST) -> set[str]:
    return {n.id for n in _walk_scope(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, (ast.Store, ast.Del))} | {
        n.name for n in _walk_scope(node)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs,
            *([a.kwarg] if a.kwarg else [])]


class _Facts:
    """What the whole file defines: import aliases, classes, kernels, extensions, tensors."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.parent: dict[ast.AST, ast.AST] = {}
        for n in ast.walk(tree):
            for c in ast.iter_child_nodes(n):
                self.parent[c] = n
        self.aliases: dict[str, str] = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    top = a.name.split(".")[0]
                    self.aliases[a.asname or top] = a.name if a.asname else top
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                for a in n.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{n.module}.{a.name}"
        bindings: dict[str, int] = {}
        for n in ast.walk(tree):
            name = n.id if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load) else \
                n.arg if isinstance(n, ast.arg) else getattr(n, "name", None) \
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
            if name:
                bindings[name] = bindings.get(name, 0) + 1
        for _ in range(3):  # aliases bound once: mm = torch.matmul; F2 = F; cuda = torch.cuda
            for n in ast.walk(tree):
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and \
                        isinstance(n.targets[0], ast.Name) and bindings[n.targets[0].id] == 1 and \
                        isinstance(n.value, (ast.Name, ast.Attribute)):
                    q = self.qual(n.value)
                    if q:
                        self.aliases.setdefault(n.targets[0].id, q)
        self.module_names = _stored_names(tree)
        self.classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.nn_classes: set[str] = set()
        for _ in range(len(self.classes) + 1):
            for name, c in self.classes.items():
                if any(self._is_nn_base(b) for b in c.bases):
                    self.nn_classes.add(name)
        self.autograd_classes: set[str] = set()
        for _ in range(len(self.classes) + 1):
            for name, c in self.classes.items():
                if any((isinstance(b, ast.Name) and b.id in self.autograd_classes) or
                       self.qual(b) in ("torch.autograd.Function",
                                        "torch.autograd.function.Function") for b in c.bases):
                    self.autograd_classes.add(name)
        self.owned_attrs: set[str] = set()
        for c in self.classes.values():
            self.owned_attrs |= _stored_names(c)
            for n in ast.walk(c):
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    self.owned_attrs.add(n.target.id)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                self.owned_attrs.add(n.attr)
        self.jit: set[ast.AST] = set()
        self.kernel_lines: list[int] = []
        self.has_load_inline = False
        self.ext_functions: set[str] = set()
        self.ext_attrs: set[str] = set()
        self.ext_factories: set[str] = set()
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    self.qual(d.func if isinstance(d, ast.Call) else d) == "triton.jit"
                    for d in n.decorator_list):
                self.jit.add(n)
            elif isinstance(n, ast.Call) and self.qual(n.func) == "triton.jit":
                self.kernel_lines.append(n.lineno)
                for a in n.args:
                    if isinstance(a, ast.Name) and a.id in self.functions:
                        self.jit.add(self.functions[a.id])
            elif isinstance(n, ast.Call) and self.qual(n.func) == _LOAD_INLINE:
                self.has_load_inline = True
                self.kernel_lines.append(n.lineno)
                for kw in n.keywords:
                    if kw.arg == "functions":
                        self.ext_functions |= {
                            c.value for c in ast.walk(kw.value)
                            if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                p = self.parent.get(n)
                if isinstance(p, ast.Assign):
                    for t in p.targets:
                        if isinstance(t, ast.Attribute):
                            self.ext_attrs.add(t.attr)
                if isinstance(p, ast.Return):
                    fn = self.enclosing_function(n)
                    if fn is not None:
                        self.ext_factories.add(fn.name)
        self.kernel_lines += [f.lineno for f in self.jit]
        # self attributes holding tensors (parameters, buffers, tensors made in __init__)
        self.tensor_attrs: set[str] = set()
        self.returns_tensor: set[str] = set()  # filled by _infer
        assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                   and n.value is not None]
        for n in assigns:
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            assert n.value is not None
            if not self._builds_tensor(n.value):
                continue
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and \
                        t.value.id == "self":
                    self.tensor_attrs.add(t.attr)
        for n in ast.walk(tree):  # self.register_buffer("name", t)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args and \
                    isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str) and \
                    n.func.attr in ("register_buffer", "register_parameter"):
                self.tensor_attrs.add(n.args[0].value)
        # names of builtins this file really redefines (def/class, never plain assignment)
        assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                    and isinstance(n.ctx, ast.Store)}
        self.own_defs = {n.name for n in ast.walk(tree) if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))} - assigned

    # -- helpers ------------------------------------------------------------------------------
    def qual(self, node: ast.AST) -> str | None:
        """Canonical dotted name of a Name/Attribute chain rooted at an import alias."""
        if isinstance(node, ast.Name):
            q = self.aliases.get(node.id)
            return _canonical(q) if q else None
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value)
            return _canonical(f"{base}.{node.attr}") if base else None
        return None

    def enclosing_function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        p = self.parent.get(node)
        while p is not None and not isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
            p = self.parent.get(p)
        return p

    def _is_nn_base(self, b: ast.expr) -> bool:
        if isinstance(b, ast.Name) and b.id in self.nn_classes:
            return True
        q = self.qual(b)
        if not q or not q.startswith("torch.nn"):
            return False
        obj = _resolve(q)
        if obj is _MISSING:
            return q == "torch.nn.Module"
        import torch

        return isinstance(obj, type) and issubclass(obj, torch.nn.Module)

    def _builds_tensor(self, e: ast.expr) -> bool:
        if isinstance(e, ast.Call):
            q = self.qual(e.func)
            last = q.split(".")[-1] if q else ""
            if q and q.startswith("torch.") and (last[:1].islower() or "Parameter" in q):
                return last not in _TORCH_NON_TENSOR
            if isinstance(e.func, ast.Attribute) and e.func.attr in _TENSOR_OK:
                return self._builds_tensor(e.func.value)
        if isinstance(e, ast.Attribute):
            on_self = isinstance(e.value, ast.Name) and e.value.id == "self"
            return e.attr in _MODULE_TENSORS or e.attr in _TENSOR_ATTRS or \
                (on_self and e.attr in self.tensor_attrs)
        return False


# --------------------------------------------------------------------------------------------
# Per-function inference: which local names hold tensors, persistent state, ctx
