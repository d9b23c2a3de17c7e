"""Heuristic inference of which values are tensors, per function scope.

The policy no longer refuses PyTorch compute on what it infers to be tensors (the run-time op
trace judges that); inference now only tells a tensor kept across calls (a result cache) from
settings kept across calls, and an autograd Function's ``ctx`` from objects passed in."""

from __future__ import annotations

import ast

from sandbox._policy.facts import _Facts, _params, _stored_names, _walk_scope
from sandbox._policy.tables import (
    _CONTAINER_OF,
    _ELEMENT_OF,
    _LOAD_INLINE,
    _MODULE_TENSORS,
    _TENSOR_ATTRS,
    _TENSOR_EVIDENCE,
    _TENSOR_SCALAR,
    _TORCH_NON_TENSOR,
)

# --------------------------------------------------------------------------------------------
_FnNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


class _Env:
    """Names of one function (or the module) and what they hold, flow-insensitively."""

    def __init__(self, facts: _Facts, node: ast.AST, kind: str, cls: str | None,
                 outer: _Env | None, param_kinds: dict[str, set[str]]) -> None:
        self.f, self.node, self.kind, self.cls, self.outer = facts, node, kind, cls, outer
        self.tensors: set[str] = set()
        self.containers: set[str] = set()
        self.shared: set[str] = set()
        self.exts: set[str] = set()
        self.ctx: set[str] = set()  # the ctx of an autograd Function (created per call)
        self.self_name = outer.self_name if outer else None
        self.params: set[str] = set()
        self.globals_decl = {g for n in _walk_scope(node)
                             if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names}
        self.locals = _stored_names(node) - self.globals_decl
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self._seed(node, param_kinds)
        self._propagate()

    # -- seeding ------------------------------------------------------------------------------
    def _seed(self, fn: _FnNode, param_kinds: dict[str, set[str]]) -> None:
        params = _params(fn)
        self.params = {p.arg for p in params}
        self.locals |= self.params
        is_method = self.cls is not None and isinstance(self.f.parent.get(fn), ast.ClassDef)
        static = isinstance(fn, ast.FunctionDef) and any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
        positional = [*fn.args.posonlyargs, *fn.args.args]
        if is_method and not static and positional:
            self.self_name = positional[0].arg
        elif self.self_name in self.params:
            self.self_name = None
        names = [p.arg for p in positional]
        defaults = dict(zip(names[::-1], fn.args.defaults[::-1], strict=False))
        defaults |= {p.arg: d for p, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults,
                                               strict=False) if d}
        is_forward = is_method and getattr(fn, "name", "") == "forward"
        if is_method and static and positional and self.cls in self.f.autograd_classes and \
                getattr(fn, "name", "") in ("forward", "backward", "setup_context", "jvp", "vjp"):
            self.ctx.add(positional[0].arg)
        for p in params:
            if p.arg == self.self_name or p.arg in self.ctx:
                continue
            kinds = param_kinds.get(p.arg, set())
            ann = ast.unparse(p.annotation) if p.annotation is not None else None
            d = defaults.get(p.arg)
            no_default = d is None or (isinstance(d, ast.Constant) and d.value is None)
            if "tensor" in kinds or (ann is not None and "Tensor" in ann) or (
                    is_forward and ann is None and no_default):
                self.tensors.add(p.arg)
            if "ctx" in kinds:
                self.ctx.add(p.arg)
            if "shared" in kinds or (d is not None and not isinstance(d, ast.Constant)):
                self.shared.add(p.arg)  # a default argument's object persists across calls
        for n in _walk_scope(fn):  # x.shape, x.stride(0) ... : x is a tensor
            if isinstance(n, ast.Attribute) and n.attr in _TENSOR_EVIDENCE and \
                    isinstance(n.value, ast.Name) and n.value.id in self.locals and \
                    n.value.id != self.self_name and n.value.id not in self.ctx:
                self.tensors.add(n.value.id)

    def _propagate(self) -> None:
        binds: list[tuple[ast.expr, ast.expr | None, bool]] = []
        for n in _walk_scope(self.node):
            if isinstance(n, ast.Assign):
                binds += [(t, n.value, False) for t in n.targets]
            elif isinstance(n, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and n.value:
                binds.append((n.target, n.value, False))
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                binds.append((n.target, n.iter, True))
            elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                binds.append((n.optional_vars, n.context_expr, False))
        for _ in range(8):
            before = self._sizes()
            for target, value, it in binds:
                self._bind(target, value, it)
            if before == self._sizes():
                break

    def _sizes(self) -> tuple[int, ...]:
        return (len(self.tensors), len(self.containers), len(self.shared), len(self.exts),
                len(self.ctx))

    def _bind(self, t: ast.expr, v: ast.expr | None, it: bool) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            if isinstance(v, (ast.Tuple, ast.List)) and len(v.elts) == len(t.elts) and not it:
                for a, b in zip(t.elts, v.elts, strict=True):
                    self._bind(a, b, False)
            elif it and isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and \
                    v.func.id in ("enumerate", "zip") and v.args:
                srcs = [None, v.args[0]] if v.func.id == "enumerate" else list(v.args)
                for a, b in zip(t.elts, srcs, strict=False):
                    if b is not None:
                        self._bind(a, b, True)
            else:  # unpacking a tensor's rows or a container's items
                for a in t.elts:
                    self._bind(a, v, it or (v is not None and self.is_container(v)))
            return
        if isinstance(t, ast.Starred):
            self._bind(t.value, v, it)
            return
        if not isinstance(t, ast.Name) or v is None:
            return
        if self.is_tensor(v) or (it and self.is_container(v)):
            self.tensors.add(t.id)
        elif self.is_container(v):
            self.containers.add(t.id)
        if not it and self.is_shared(v):
            self.shared.add(t.id)
        if not it and self.is_ext(v):
            self.exts.add(t.id)

    # -- queries ------------------------------------------------------------------------------
    def has(self, name: str, kind: str) -> bool:
        env: _Env | None = self
        while env is not None:
            if name in env.locals or env.outer is None:
                return name in getattr(env, kind)
            env = env.outer
        return False

    def owner(self, name: str) -> _Env | None:
        """The function whose local ``name`` is (None for module-level names and builtins)."""
        env: _Env | None = self
        while env is not None and env.kind != "module":
            if name in env.locals:
                return env
            env = env.outer
        return None

    def is_local(self, name: str) -> bool:
        return self.owner(name) is not None

    def is_self(self, e: ast.AST) -> bool:
        return isinstance(e, ast.Name) and self.self_name is not None and e.id == self.self_name

    def is_tensor(self, e: ast.AST) -> bool:
        f = self.f
        if isinstance(e, ast.Name):
            return self.has(e.id, "tensors")
        if isinstance(e, ast.Attribute):
            if self.is_self(e.value):
                return e.attr in f.tensor_attrs
            if e.attr in _MODULE_TENSORS:  # (a module's) weight, bias, running stats
                return True
            return e.attr in _TENSOR_ATTRS and self.is_tensor(e.value)
        if isinstance(e, ast.Subscript):
            return self.is_tensor(e.value) or self.is_container(e.value)
        if isinstance(e, ast.Call):
            q = f.qual(e.func)
            if q:
                name = q.split(".")[-1]
                return q.startswith("torch.") and name not in _TORCH_NON_TENSOR and \
                    not q.startswith("torch.cuda.") and (name[:1].islower() or "Parameter" in q)
            if isinstance(e.func, ast.Name) and e.func.id in _ELEMENT_OF and \
                    e.func.id not in f.module_names:
                return any(self.is_tensor(a) or self.is_container(a) for a in e.args)
            if isinstance(e.func, ast.Name) or (isinstance(e.func, ast.Attribute)
                                                and self.is_self(e.func.value)):
                return _callee_name(e.func) in f.returns_tensor  # the file's own helpers
            if isinstance(e.func, ast.Attribute):
                if self.is_ext(e.func.value):
                    return True
                return self.is_tensor(e.func.value) and e.func.attr not in _TENSOR_SCALAR
            return False
        if isinstance(e, ast.BinOp):
            return self.is_tensor(e.left) or self.is_tensor(e.right)
        if isinstance(e, ast.UnaryOp):
            return self.is_tensor(e.operand)
        if isinstance(e, ast.IfExp):
            return self.is_tensor(e.body) or self.is_tensor(e.orelse)
        if isinstance(e, ast.NamedExpr):
            return self.is_tensor(e.value)
        return False

    def is_container(self, e: ast.AST) -> bool:
        """A list/tuple/dict/set (or iterator) holding tensors: its items are tensors."""
        if isinstance(e, ast.Name):
            return self.has(e.id, "containers")
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            return any(self.is_tensor(x) or self.is_container(x) for x in e.elts)
        if isinstance(e, ast.Dict):
            return any(v is not None and (self.is_tensor(v) or self.is_container(v))
                       for v in e.values)
        if isinstance(e, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return self.is_tensor(e.elt) or self.is_container(e.elt)
        if isinstance(e, ast.DictComp):
            return self.is_tensor(e.value)
        if isinstance(e, ast.Starred):
            return self.is_tensor(e.value) or self.is_container(e.value)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and \
                e.func.id in _CONTAINER_OF and e.func.id not in self.f.module_names:
            return any(self.is_tensor(a) or self.is_container(a) for a in e.args)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and \
                e.func.attr in ("values", "items") and self.is_container(e.func.value):
            return True
        if isinstance(e, ast.Subscript):
            return self.is_container(e.value) and isinstance(e.slice, ast.Slice)
        if isinstance(e, ast.BinOp):  # outs + [y], [x] * 2
            return self.is_container(e.left) or self.is_container(e.right)
        if isinstance(e, ast.IfExp):
            return self.is_container(e.body) or self.is_container(e.orelse)
        return False

    def is_shared(self, e: ast.AST) -> bool:
        """Does ``e`` denote state that outlives one call (self, globals, mutable defaults)?"""
        root = e
        while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
            if isinstance(root, ast.Call):
                if not isinstance(root.func, ast.Attribute) or self.is_ext(root.func.value):
                    return False
                root = root.func
            root = root.value
        if not isinstance(root, ast.Name):
            return False
        if self.is_self(root):
            return root is not e
        owner = self.owner(root.id)
        if owner is not None:  # a local of this or an enclosing function
            return (owner is not self and owner.kind != "runtime") or owner.has(root.id, "shared")
        return root.id in self.f.module_names

    def is_ctx(self, e: ast.AST) -> bool:
        return isinstance(e, ast.Name) and self.has(e.id, "ctx")

    def is_ext(self, e: ast.AST) -> bool:
        if isinstance(e, ast.Name):
            return self.has(e.id, "exts")
        if isinstance(e, ast.Attribute) and self.is_self(e.value):
            return e.attr in self.f.ext_attrs
        if isinstance(e, ast.Call):
            if self.f.qual(e.func) == _LOAD_INLINE:
                return True
            return isinstance(e.func, ast.Name) and e.func.id in self.f.ext_factories
        return False


def _callee_name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _function_kind(facts: _Facts, fn: ast.AST) -> str:
    if fn in facts.jit:
        return "jit"
    parent = facts.parent.get(fn)
    if isinstance(fn, ast.FunctionDef) and fn.name == "__init__" and \
            isinstance(parent, ast.ClassDef) and parent.name in facts.nn_classes:
        return "init"
    return "runtime"


def _infer(facts: _Facts) -> dict[ast.AST, _Env]:
    """Environments of the module and of every function, with call-site propagation of
    parameter kinds (a helper called with a tensor gets a tensor parameter)."""
    param_kinds: dict[ast.AST, dict[str, set[str]]] = {}
    envs: dict[ast.AST, _Env] = {}

    def build(node: ast.AST, outer: _Env, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                build(child, outer, child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                env = _Env(facts, child, _function_kind(facts, child), cls, outer,
                           param_kinds.get(child, {}))
                envs[child] = env
                build(child, env, cls)
            else:
                build(child, outer, cls)

    for _ in range(3):
        envs.clear()
        envs[facts.tree] = module_env = _Env(facts, facts.tree, "module", None, None, {})
        build(facts.tree, module_env, None)
        for fn, env in envs.items():
            if fn is facts.tree:
                continue
            for n in _walk_scope(fn):
                if isinstance(n, ast.Return) and n.value is not None and env.is_tensor(n.value) \
                        and isinstance(fn, ast.FunctionDef):
                    facts.returns_tensor.add(fn.name)
                if isinstance(n, ast.Call):
                    _record_call(facts, env, n, param_kinds)
    return envs


def _record_call(facts: _Facts, env: _Env, call: ast.Call,
                 param_kinds: dict[ast.AST, dict[str, set[str]]]) -> None:
    target: ast.FunctionDef | ast.Lambda | None = None
    skip = 0
    if isinstance(call.func, ast.Lambda):  # (lambda t: ...)(x)
        target = call.func  # type: ignore[assignment]
    elif isinstance(call.func, ast.Name) and call.func.id in facts.functions:
        target = facts.functions[call.func.id]
    elif isinstance(call.func, ast.Attribute) and env.is_self(call.func.value) and env.cls:
        cdef = facts.classes.get(env.cls)
        target = next((m for m in (cdef.body if cdef else []) if isinstance(m, ast.FunctionDef)
                       and m.name == call.func.attr), None)
        skip = 1
    if target is None:
        return
    names = [p.arg for p in [*target.args.posonlyargs, *target.args.args]][skip:]
    pairs = list(zip(names, call.args, strict=False))
    pairs += [(k.arg, k.value) for k in call.keywords if k.arg]
    kinds = param_kinds.setdefault(target, {})
    for name, arg in pairs:
        for kind, test in (("tensor", env.is_tensor), ("shared", env.is_shared),
                           ("ctx", env.is_ctx)):
            if test(arg):
                kinds.setdefault(name, set()).add(kind)


