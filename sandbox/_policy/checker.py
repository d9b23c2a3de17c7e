"""The AST visitor that applies every rule and records violations."""

from __future__ import annotations

import ast
import re
import string
import types

from sandbox._cuda_policy import scan_flags, scan_source
from sandbox._policy.facts import _Facts, _walk_scope
from sandbox._policy.infer import _callee_name, _Env
from sandbox._policy.records import Violation
from sandbox._policy.tables import (
    _ALLOWED_MODULES,
    _DUNDER_DEFS_OK,
    _DUNDER_NAMES_OK,
    _FLAG_KWARGS,
    _FORBIDDEN_BUILTINS,
    _FRAME_ATTRS,
    _LOAD_INLINE,
    _MUTATING,
    _SAFE_WITH_MODULES,
    _SELF_MUTATORS,
    _SOURCE_KWARGS,
    _TENSOR_BUILTINS,
    _THREAD_MODULES,
    _ambiguous_methods,
    _aten_names,
    _canonical,
    _compute_methods,
    _is_compute_ref,
    _is_dunder,
    _qual_rule,
    _resolve,
    _tensor_methods,
    _torch_call_rule,
)

# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------
# Device code a load_inline extension can launch: its own kernels, or CUTLASS/CuTe templates.
_DEVICE_CODE = re.compile(r"__global__|<<<|\bcutlass\b|\bcute\s*::")


class _Checker(ast.NodeVisitor):
    def __init__(self, facts: _Facts, envs: dict[ast.AST, _Env]) -> None:
        self.f = facts
        self.envs = envs
        self.env = envs[facts.tree]
        self.fn_stack: list[ast.AST] = []
        self.out: list[Violation] = []
        self._seen: set[tuple[str, int | None, str]] = set()

    def add(self, rule: str, node: ast.AST | int | None, msg: str) -> None:
        line = node if isinstance(node, int) or node is None else getattr(node, "lineno", None)
        key = (rule, line, msg)
        if key not in self._seen:
            self._seen.add(key)
            self.out.append(Violation(rule, f"line {line}: {msg}" if line else msg, line))

    @property
    def runtime(self) -> bool:
        return self.env.kind == "runtime"

    @property
    def where(self) -> str:
        """The innermost function being checked, for messages ("forward", "a lambda")."""
        fn = self.fn_stack[-1] if self.fn_stack else None
        return getattr(fn, "name", "a lambda")

    # -- imports ------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_import(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add("forbidden-import", node, "relative imports are not allowed")
            return
        if mod == "__future__":
            return
        for a in node.names:
            full = f"{mod}.{a.name}"
            if a.name == "*":
                self.add("forbidden-import", node, f"`from {mod} import *` hides names; "
                         "import them by name")
            elif full in _ALLOWED_MODULES or full.startswith("triton.language."):
                continue
            elif self._check_import(node, mod):
                rule = _qual_rule(_canonical(full))
                if rule:
                    self.add(rule[0], node, rule[1])

    def _check_import(self, node: ast.AST, name: str) -> bool:
        top = name.split(".")[0]
        if name in _ALLOWED_MODULES or name.startswith("triton.language."):
            return True
        if top in _THREAD_MODULES:
            self.add("concurrency", node, f"imports {name}: threads and processes hide work from "
                     "timing; do all work in your kernel on the current stream")
        else:
            self.add("forbidden-import", node, f"imports {name}; candidates may import only "
                     "torch, torch.nn(.functional), torch.utils.cpp_extension, triton(.language), "
                     "math, typing, functools, dataclasses")
        return False

    # -- names and attributes -----------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _FORBIDDEN_BUILTINS and isinstance(node.ctx, ast.Load) and \
                node.id not in self.f.own_defs and not self.env.is_local(node.id):
            self.add("forbidden-name", node, f"uses {node.id}(); it can evaluate code, read files "
                     "or reach the interpreter. Write the code out directly")
        elif _is_dunder(node.id) and node.id not in _DUNDER_NAMES_OK | _FORBIDDEN_BUILTINS:
            self.add("dunder-access", node, f"uses {node.id}; dunder names are off limits")
        if not isinstance(self.f.parent.get(node), ast.Attribute):
            q = self.f.qual(node)
            if q:
                self._check_ref(q, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        parent = self.f.parent.get(node)
        if _is_dunder(attr) and attr != "__init__":
            self.add("dunder-access", node, f"accesses .{attr}; dunder attributes are off limits")
        elif attr in _FRAME_ATTRS:
            self.add("introspection", node, f"accesses .{attr} (frames and code objects)")
        elif attr.startswith("_") and not _is_dunder(attr) and self.f.qual(node.value) is None \
                and attr not in self.f.owned_attrs:
            self.add("introspection", node, f"accesses the private attribute .{attr}, which this "
                     "file does not define")
        if not (isinstance(parent, ast.Attribute) and parent.value is node):
            q = self.f.qual(node)
            if q:
                self._check_ref(q, node)
            elif self.runtime and attr in _compute_methods() and \
                    not (isinstance(parent, ast.Call) and parent.func is node) and \
                    self.env.is_tensor(node.value):
                self.add("reference-call", node, f"takes the tensor method .{attr} (a PyTorch op) "
                         "as a value; compute it in your kernel")
        self.generic_visit(node)

    def _check_ref(self, q: str, node: ast.AST) -> None:
        rule = _qual_rule(q)
        if rule:
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            raw = self.f.aliases.get(getattr(root, "id", ""), "")
            if not (rule[0] == "forbidden-import" and raw.split(".")[0] == q.split(".")[0]):
                self.add(rule[0], node, rule[1])  # (a forbidden import is reported once, above)
            return
        parent = self.f.parent.get(node)
        called = isinstance(parent, ast.Call) and parent.func is node
        if isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)):
            return  # assignments to torch names are monkeypatching, reported by _check_store
        if not called and _is_compute_ref(q):
            self.add("reference-call", node, f"refers to {q} without calling it: PyTorch ops may "
                     "not be stored or passed around; compute in your kernel")
        elif not called and isinstance(_resolve(q), types.ModuleType) and not (
                isinstance(parent, ast.Assign) and len(parent.targets) == 1
                and isinstance(parent.targets[0], ast.Name)
                and parent.targets[0].id in self.f.aliases):  # a tracked alias is fine
            self.add("introspection", node, f"uses the module {q} as a value; call its "
                     "functions directly")

    # -- calls --------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        q = self.f.qual(func)
        if q == _LOAD_INLINE:
            self._check_load_inline(node)
        if isinstance(func, ast.Name) and func.id == "type" and len(node.args) == 3:
            self.add("forbidden-name", node, "type() with three arguments builds classes at "
                     "run time")
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map"):
            self._check_format(node)
        if self.runtime:
            self._runtime_call(node, q)
            self._check_mutation(node, q)
        self.generic_visit(node)

    def _check_mutation(self, node: ast.Call, q: str | None) -> None:
        env, func = self.env, node.func
        target: ast.expr | None = None
        method = ""
        if isinstance(func, ast.Attribute) and q is None:
            target, method = func.value, func.attr
            if env.is_self(target) and method in _SELF_MUTATORS:
                self.add("caching", node, f"{self.where} calls self.{method}(), changing the "
                         "module between calls; do that in __init__")
                return
        elif q and q.startswith("torch.Tensor.") and node.args:  # torch.Tensor.copy_(t, ...)
            target, method = node.args[0], q.rsplit(".", 1)[1]
        if target is not None and env.is_shared(target) and (
                method in _MUTATING or (method.endswith("_") and method in _tensor_methods())):
            self.add("caching", node, f"{self.where} calls .{method}() on state that outlives "
                     f"the call ({_short(target)}); forward must not remember anything")

    def _runtime_call(self, node: ast.Call, q: str | None) -> None:
        env, func = self.env, node.func
        if q:
            if _qual_rule(q) is None:
                why = _torch_call_rule(q)
                if why:
                    self.add("reference-call", node, f"{self.where} {why}")
            return
        if isinstance(func, ast.Name) and func.id in self.f.nn_classes:
            self.add("reference-call", node, f"{self.where} builds the module {func.id} per "
                     "call; build modules in __init__")
        elif isinstance(func, ast.Call) and _callee_name(func.func) == "type":
            self.add("reference-call", node, "calls the result of type(...); call your own "
                     "functions by name")
        if env.is_module(func):
            self.add("reference-call", node, f"{self.where} calls the torch.nn module "
                     f"{_short(func)} (the reference implementation); use its .weight/.bias "
                     "in your kernel")
        elif isinstance(func, ast.Attribute) and not env.is_ext(func.value):
            name = func.attr
            if name in _compute_methods():
                receiver_is_tensor = env.is_tensor(func.value)
                known_other = isinstance(func.value, (ast.Constant, ast.JoinedStr)) or \
                    name in self.f.ext_functions
                if receiver_is_tensor or (name not in _ambiguous_methods() and not known_other):
                    self.add("reference-call", node, f"{self.where} calls .{name}() on "
                             f"{ast.unparse(func.value)} (a PyTorch op); compute it in your kernel")
        if isinstance(func, ast.Name) and func.id in _TENSOR_BUILTINS and \
                func.id not in self.f.module_names and \
                any(env.is_tensor(a) or env.is_container(a) for a in node.args):
            self.add("reference-call", node, f"{self.where} applies {func.id}() to a tensor "
                     "(PyTorch computes it); do it in your kernel")
        callee_is_own = isinstance(func, ast.Name) and (func.id in self.f.functions or
                                                         func.id in _SAFE_WITH_MODULES)
        callee_is_own |= isinstance(func, ast.Attribute) and env.is_self(func.value)
        if not callee_is_own:
            for a in [*node.args, *(k.value for k in node.keywords)]:
                if env.is_module(a):
                    self.add("reference-call", node, f"{self.where} passes the torch.nn module "
                             f"{_short(a)} to code that may call it; pass its .weight/.bias")

    def _check_format(self, node: ast.Call) -> None:
        pieces = self._strings(node.func.value)  # type: ignore[attr-defined]
        if pieces is None:
            self.add("introspection", node, "calls .format on a computed string; format string "
                     "literals or use f-strings")
            return
        try:
            fields = [f for text, _ in pieces for _, f, _, _ in string.Formatter().parse(text) if f]
        except ValueError:
            fields = []
        if any("." in f or "[" in f for f in fields):
            self.add("introspection", node, "a format string looks up attributes or items; "
                     "use an f-string with plain names")

    # -- operators ----------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        if self.runtime:
            if isinstance(node.op, ast.MatMult):
                self.add("reference-call", node, f"{self.where} uses the @ operator (PyTorch "
                         "matmul, i.e. cuBLAS); compute the product in your kernel")
            elif self.env.is_tensor(node.left) or self.env.is_tensor(node.right):
                self.add("reference-call", node, f"{self.where} computes `{_short(node)}` with "
                         "PyTorch operators; do the arithmetic in your kernel")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if self.runtime and not isinstance(node.op, ast.Not) and self.env.is_tensor(node.operand):
            self.add("reference-call", node, f"{self.where} computes `{_short(node)}` with a "
                     "PyTorch operator; do it in your kernel")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if self.runtime and not all(isinstance(o, (ast.Is, ast.IsNot)) for o in node.ops) and \
                any(self.env.is_tensor(e) for e in [node.left, *node.comparators]):
            self.add("reference-call", node, f"{self.where} compares tensors (`{_short(node)}`) "
                     "with PyTorch; do it in your kernel")
        self.generic_visit(node)

    # -- statements ---------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_store(t)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target)
        if self.runtime and isinstance(node.op, ast.MatMult):
            self.add("reference-call", node, f"{self.where} uses @= (PyTorch matmul); compute "
                     "the product in your kernel")
        elif self.runtime and (self.env.is_tensor(node.target) or self.env.is_tensor(node.value)):
            self.add("reference-call", node, f"{self.where} updates a tensor with PyTorch "
                     f"(`{_short(node)}`); do it in your kernel")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_store(t)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._check_store(node.target)
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._check_store(node.optional_vars)
        self.generic_visit(node)

    def _check_store(self, t: ast.expr) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._check_store(e)
            return
        if isinstance(t, ast.Starred):
            self._check_store(t.value)
            return
        if not isinstance(t, (ast.Attribute, ast.Subscript)):
            return
        env = self.env
        root: ast.expr = t
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        text = _short(t)
        is_attr = isinstance(t, ast.Attribute)
        if env.kind == "jit":
            return
        if not isinstance(root, ast.Name):
            if is_attr:
                self.add("monkeypatch", t, f"assigns to {text} on a computed object; set "
                         "attributes only on objects you create")
        elif self.f.qual(root):
            self.add("monkeypatch", t, f"assigns to {text}, which belongs to an imported module; "
                     "never patch torch/triton or the harness")
        elif self.runtime and env.is_shared(t):
            self.add("caching", t, f"{self.where} writes {text}, state that outlives the call; "
                     "forward must not remember anything (set attributes only in __init__)")
        elif env.is_self(root) or env.is_local(root.id):
            if is_attr and root.id in env.params and not env.is_self(root):
                self.add("monkeypatch", t, f"sets {text} on an object passed in; set attributes "
                         "only on objects you create")
        elif is_attr and not (root.id in self.f.classes or self._module_object(root.id)):
            self.add("monkeypatch", t, f"sets {text} on an object this file does not create "
                     "(functions and kernels included)")

    def _module_object(self, name: str) -> bool:
        """Is module-level ``name`` bound to an instance of a class of this file?"""
        for n in self.f.tree.body:
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                 for t in n.targets):
                v = n.value
                if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and \
                        v.func.id in self.f.classes:
                    return True
        return False

    def visit_Try(self, node: ast.AST) -> None:
        self.add("try-except", node, "uses try/except; a fallback path hides a failing kernel. "
                 "Remove it and let errors surface")
        self.generic_visit(node)

    visit_TryStar = visit_Try

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        kw = "global" if isinstance(node, ast.Global) else "nonlocal"
        self.add("caching", node, f"`{kw} {', '.join(node.names)}` keeps state across calls; "
                 "build what you need at module level or in __init__ and never rebind it")

    visit_Nonlocal = visit_Global

    def visit_Await(self, node: ast.AST) -> None:
        self.add("concurrency", node, "uses async code; run the kernel synchronously")
        self.generic_visit(node)

    visit_AsyncFor = visit_AsyncWith = visit_Await

    # -- definitions --------------------------------------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for b in node.bases:
            self._check_base(node, b)
        for k in node.keywords:
            if k.arg == "metaclass":
                self.add("forbidden-name", node, "uses a metaclass; define plain classes")
        for n in node.body:
            targets = n.targets if isinstance(n, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id in ("__torch_function__", "__torch_dispatch__"):
                    self.add("tensor-subclass", n, f"sets {t.id}: tensors that intercept torch "
                             "calls are lazy-tensor tricks")
        self.generic_visit(node)

    def _check_base(self, cls: ast.ClassDef, b: ast.expr) -> None:
        q = self.f.qual(b)
        if not q or q in ("torch.nn.Module", "torch.nn.modules.module.Module",
                          "torch.autograd.Function", "torch.autograd.function.Function") or \
                q.startswith("typing."):
            return
        import torch

        obj = _resolve(q)
        if q == "torch.Tensor" or (isinstance(obj, type) and issubclass(obj, torch.Tensor)):
            self.add("tensor-subclass", cls, f"class {cls.name} subclasses {q}; return plain "
                     "torch.Tensor outputs computed by your kernel")
        elif isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            self.add("reference-call", cls, f"class {cls.name} subclasses {q} and inherits its "
                     "forward (the reference); subclass nn.Module")
        elif q.startswith(("torch.", "triton.")):
            self.add("internals", cls, f"class {cls.name} subclasses {q}; subclass nn.Module")

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if isinstance(node, ast.AsyncFunctionDef):
            self.add("concurrency", node, f"defines async function {node.name}; run synchronously")
        if node.name in ("__torch_function__", "__torch_dispatch__"):
            self.add("tensor-subclass", node, f"defines {node.name}: intercepting torch calls is "
                     "a lazy-tensor trick; return plain tensors")
        elif _is_dunder(node.name) and node.name not in _DUNDER_DEFS_OK:
            self.add("dunder-access", node, f"defines {node.name}; only __init__ (and __repr__) "
                     "may be defined")
        for d in node.decorator_list:
            self.visit(d)
        self._visit_args(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self._enter(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_args(node.args)
        self._enter(node, [node.body])

    def _visit_args(self, args: ast.arguments) -> None:
        for d in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(d)
        for p in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if p is not None and p.annotation is not None:
                self.visit(p.annotation)

    def _enter(self, node: ast.AST, body: list[ast.AST]) -> None:
        saved = self.env
        self.env = self.envs.get(node, saved)
        self.fn_stack.append(node)
        for stmt in body:
            self.visit(stmt)
        self.fn_stack.pop()
        self.env = saved

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


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


