"""The AST visitor that applies every rule and records violations.

What it still refuses is what is dangerous or unambiguous by construction (see
``sandbox.policy``); PyTorch compute in forward, however it is reached, is left to the run-time
op trace, and what a forward keeps across calls to fresh inputs and the output audits.
"""

from __future__ import annotations

import ast
import builtins
import string
import types

from sandbox._policy.facts import _Facts, _walk_scope
from sandbox._policy.infer import _Env
from sandbox._policy.inline import _SourceStrings
from sandbox._policy.records import Violation
from sandbox._policy.tables import (
    _CUDA_OK,
    _DUNDER_DEFS_OK,
    _DUNDER_NAMES_OK,
    _DUNDER_READ_OK,
    _ESCAPE_ATTRS,
    _FORBIDDEN_BUILTINS,
    _FRAME_ATTRS,
    _FUNCTOOLS_CACHING,
    _HOST_COMPUTE_ATTRS,
    _LOAD_INLINE,
    _LOG_PLUMBING,
    _MISSING,
    _MUTATING,
    _PRIVATE_CALLS_OK,
    _SELF_MUTATORS,
    _TORCH_READ_ONLY,
    _TORCH_SCOPED,
    _TRITON_BASES,
    _canonical,
    _compute_methods,
    _import_rule,
    _is_compute_ref,
    _is_dunder,
    _qual_rule,
    _resolve,
    _tensor_methods,
)

# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------
# Handlers that swallow any failure of a kernel (a narrow `except ImportError` does not).
_BROAD_EXCEPTIONS = {"Exception", "BaseException", "RuntimeError"}
# ExitStack methods that register an exit callback judged by its return value: a true one
# swallows the with-block's error, and any callable can return one (``push(slice)``, a class,
# a lambda). enter_context(cm) and callback(fn) cannot: the first defers to cm's own __exit__
# (judged where cm is defined), the second ignores what fn returns.
_EXIT_PUSH_ATTRS = {"push", "push_async_exit"}
_AUTOGRAD_BASES = ("torch.autograd.Function", "torch.autograd.function.Function")
_MODULE_BASES = ("torch.nn.Module", "torch.nn.modules.module.Module")


class _Checker(_SourceStrings, ast.NodeVisitor):
    def __init__(self, facts: _Facts, envs: dict[ast.AST, _Env]) -> None:
        self.f = facts
        self.envs = envs
        self.env = envs[facts.tree]
        self.fn_stack: list[ast.AST] = []
        self.out: list[Violation] = []
        self._seen: set[tuple[str, int | None, str]] = set()
        self._bound: set[str] | None = None
        self._binding_counts: tuple[dict[str, int], dict[str, set[str]]] | None = None
        # names bound by imports that are themselves refused (reported once, at the import)
        self.bad_aliases: set[str] = set()
        for n in ast.walk(facts.tree):
            if isinstance(n, ast.Import):
                self.bad_aliases |= {a.asname or a.name.split(".")[0] for a in n.names
                                     if _import_rule(a.name)}
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                self.bad_aliases |= {a.asname or a.name for a in n.names
                                     if _from_import_rule(n.module, a.name)}

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
            rule = _import_rule(a.name)
            if rule:
                self.add(rule[0], node, rule[1])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add("forbidden-import", node, "relative imports are not allowed")
            return
        if mod == "__future__":
            return
        for a in node.names:
            rule = _from_import_rule(mod, a.name)
            if rule:
                self.add(rule[0], node, rule[1])

    # -- names and attributes -----------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _FORBIDDEN_BUILTINS and isinstance(node.ctx, ast.Load) and \
                node.id not in self.f.own_defs and not self.env.is_local(node.id):
            self._check_builtin(node)
        elif _is_dunder(node.id) and node.id not in _DUNDER_NAMES_OK | _FORBIDDEN_BUILTINS:
            self.add("dunder-access", node, f"uses {node.id}; dunder names are off limits")
        if not isinstance(self.f.parent.get(node), ast.Attribute):
            q = self.f.qual(node)
            if q:
                self._check_ref(q, node)

    def _check_builtin(self, node: ast.Name) -> None:
        """getattr/setattr with a constant attribute name are plain attribute accesses, and
        ``getattr(torch, device).is_available()`` is a device probe; every other use of a
        builtin that evaluates code or reaches the interpreter is refused."""
        call = self.f.parent.get(node)
        ok = False
        if node.id in ("getattr", "setattr") and isinstance(call, ast.Call) and \
                call.func is node and not call.keywords and \
                not any(isinstance(a, ast.Starred) for a in call.args) and \
                len(call.args) in ((2, 3) if node.id == "getattr" else (3,)):
            obj, name = call.args[0], call.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                ok = self._check_const_attr(call, obj, name.value, node.id == "setattr")
            elif node.id == "getattr" and self.f.qual(obj) == "torch":
                probe = self.f.parent.get(call)  # getattr(torch, device).is_available()
                ok = isinstance(probe, ast.Attribute) and probe.attr in _CUDA_OK and \
                    isinstance(self.f.parent.get(probe), ast.Call) and \
                    self.f.parent[probe].func is probe  # type: ignore[attr-defined]
        if not ok:
            self.add("forbidden-name", node, f"uses {node.id}(); it can evaluate code, read "
                     "files or reach the interpreter. Write the code out directly (getattr and "
                     "setattr are fine with a constant attribute name)")

    def _check_const_attr(self, call: ast.Call, obj: ast.expr, attr: str, store: bool) -> bool:
        """``getattr(obj, "attr")`` / ``setattr(obj, "attr", v)``: the checks of ``obj.attr``."""
        if not attr.isidentifier():
            return False
        node = ast.Attribute(value=obj, attr=attr, ctx=ast.Store() if store else ast.Load())
        ast.copy_location(node, call)
        self.f.parent[node] = self.f.parent.get(call, call)
        self._check_attr(node, called=isinstance(self.f.parent.get(call), ast.Call)
                         and self.f.parent[call].func is call)  # type: ignore[attr-defined]
        if store:
            self._check_store(node, call.args[2])
        return True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_attr(node, called=self._called(node))
        self.generic_visit(node)

    def _called(self, node: ast.AST) -> bool:
        """Is ``node`` called where it stands: the function of a call, or a bare decorator
        (``@torch.compiler.disable`` calls it with the function, as ``@f()`` calls f())?"""
        parent = self.f.parent.get(node)
        return (isinstance(parent, ast.Call) and parent.func is node) or self._is_decorator(node)

    def _check_attr(self, node: ast.Attribute, called: bool) -> None:
        attr = node.attr
        parent = self.f.parent.get(node)
        store = isinstance(node.ctx, (ast.Store, ast.Del))
        if _is_dunder(attr) and (attr not in _DUNDER_READ_OK or store) and attr != "__init__":
            self.add("dunder-access", node, f"accesses .{attr}; of dunder attributes only "
                     f"{', '.join(sorted(_DUNDER_READ_OK - _DUNDER_DEFS_OK))} and protocol "
                     "methods may be read, and none written")
        elif attr in _FRAME_ATTRS:
            self.add("introspection", node, f"accesses .{attr} (frames and code objects)")
        elif attr.startswith("_") and not _is_dunder(attr) and self.f.qual(node.value) is None \
                and attr not in self.f.owned_attrs and \
                not (attr in _PRIVATE_CALLS_OK and called and not store):
            self.add("introspection", node, f"accesses the private attribute .{attr}, which this "
                     "file does not define")
        elif attr in _ESCAPE_ATTRS:
            what = ("tensor storages read and share files" if _ESCAPE_ATTRS[attr] ==
                    "forbidden-name" else "log records carry the caller's frames")
            self.add(_ESCAPE_ATTRS[attr], node, f"accesses .{attr}: {what}; work on tensors "
                     "through their own methods and log through logger.debug/info/warning")
        elif attr in _HOST_COMPUTE_ATTRS and self.runtime:
            self.add("reference-call", node, f"{self.where} uses .{attr}: computing on the host "
                     "is outside both your kernel and the op trace; compute in your kernel")
        elif attr in _EXIT_PUSH_ATTRS and not store:
            self.add("try-except", node, f"uses .{attr}: ExitStack.{attr} registers an exit "
                     "callback whose true return value swallows the errors of the with-block (a "
                     "silent fallback), and any callable can return one; use "
                     "stack.enter_context(cm) or stack.callback(fn)")
        elif attr in ("addHandler", "setFormatter") and not self._log_plumbing(node):
            self.add("introspection", node, f"calls .{attr} with a handler or formatter of its "
                     "own, which would receive log records (and the caller's frames); use "
                     "logging.NullHandler()/StreamHandler()/Formatter(...) or leave logging "
                     "alone")
        if not (isinstance(parent, ast.Attribute) and parent.value is node):
            q = self.f.qual(node)
            if q:
                self._check_ref(q, node, called)
            elif self.runtime and attr in _compute_methods() and not called and not store and \
                    self.env.is_tensor(node.value):
                self.add("reference-call", node, f"takes the tensor method .{attr} (a PyTorch op) "
                         "as a value; PyTorch ops handed to other code escape the op trace. "
                         "Call your kernel instead")

    def _check_ref(self, q: str, node: ast.AST, called: bool | None = None) -> None:
        store = isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del))
        if q in _TORCH_READ_ONLY and store and isinstance(node, ast.Attribute):  # (not an alias)
            self.add("internals", node, f"assigns to {q}, changing the precision the reference "
                     "and the baselines are held to; read it to choose your kernel's precision, "
                     "never set it")
            return
        rule = None if q in _TORCH_SCOPED and self._scoped(q, node) else _qual_rule(q)
        if rule:
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if not (rule[0] in ("forbidden-import", "concurrency")
                    and getattr(root, "id", "") in self.bad_aliases):
                self.add(rule[0], node, rule[1])  # (a refused import is reported once, above)
            return
        if called is None:
            called = self._called(node)
        if store:
            return  # assignments to torch names are monkeypatching, reported by _check_store
        if q == "contextlib.suppress" and not called and not self._alias_binding(node):
            self.add("try-except", node, "uses contextlib.suppress as a value (a base class, an "
                     "argument, a stored object): what it suppresses cannot be judged there. "
                     "Call it in a with statement, naming the specific errors you expect")
            return
        if not called and _is_compute_ref(q):
            self.add("reference-call", node, f"refers to {q} without calling it: PyTorch ops "
                     "may not be stored or passed around (code that calls them for you escapes "
                     "the op trace); compute in your kernel")
        elif not called and isinstance(_resolve(q), types.ModuleType) and not self._module_ok(node):
            self.add("introspection", node, f"uses the module {q} as a value; call its "
                     "functions directly")

    def _scoped(self, q: str, node: ast.AST) -> bool:
        """Is scoped mode switch ``q`` (:data:`_TORCH_SCOPED`) called as a ``with`` item's
        context expression (with no ``as``: autocast's __enter__ returns the object, which
        could be entered again by hand and never left), or (autocast) as a decorator?"""
        call = self.f.parent.get(node)
        if not (isinstance(call, ast.Call) and call.func is node):
            return False
        item = self.f.parent.get(call)
        if isinstance(item, ast.withitem) and item.context_expr is call:
            return item.optional_vars is None
        return q != "torch.set_grad_enabled" and \
            isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
            call in item.decorator_list

    def _alias_binding(self, node: ast.AST) -> bool:
        """Is ``node`` the value of ``name = node``, a tracked alias (judged where used)?"""
        parent = self.f.parent.get(node)
        return isinstance(parent, ast.Assign) and len(parent.targets) == 1 and \
            isinstance(parent.targets[0], ast.Name) and parent.targets[0].id in self.f.aliases

    def _module_ok(self, node: ast.AST) -> bool:
        """A module may be named as a value only by a tracked alias, or probed with
        hasattr/getattr."""
        if self._alias_binding(node):
            return True
        parent = self.f.parent.get(node)
        return isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and \
            parent.func.id in ("hasattr", "getattr") and bool(parent.args) and \
            parent.args[0] is node

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
        if not self._is_decorator(node) and node.args and (
                _is_cache_factory(q) or (isinstance(func, ast.Call) and
                                         _is_cache_factory(self.f.qual(func.func)))):
            self._check_cached(node, node.args[0])  # functools.cache(f), lru_cache(8)(f)
        if q == "importlib.util.find_spec":
            self._check_find_spec(node)
        if q == "contextlib.suppress" and not self._with_item(node):
            broad = self._suppressed(node)
            if broad:
                self.add("try-except", node, f"creates contextlib.suppress({broad}) outside a "
                         "with statement: entered elsewhere (ExitStack.enter_context, a stored "
                         "object) it swallows the errors of whatever it wraps. Write `with "
                         "contextlib.suppress(SpecificError):` around the code it guards")
        if self.runtime:
            self._check_mutation(node, q)
        self.generic_visit(node)

    def _log_plumbing(self, node: ast.Attribute) -> bool:
        call = self.f.parent.get(node)
        if not (isinstance(call, ast.Call) and call.func is node and len(call.args) == 1):
            return False
        arg = call.args[0]
        return isinstance(arg, ast.Call) and self.f.qual(arg.func) in _LOG_PLUMBING and \
            all(isinstance(a, ast.Constant) for a in [*arg.args, *(k.value for k in arg.keywords)])

    def _check_find_spec(self, node: ast.Call) -> None:
        """``find_spec("name") is not None`` only: a spec's loader reads files and loads code,
        and a dotted name imports its parent packages."""
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str) and \
            "." not in arg.value
        parent = self.f.parent.get(node)
        tested = (isinstance(parent, ast.Compare) and parent.left is node and
                  all(isinstance(o, (ast.Is, ast.IsNot)) for o in parent.ops)) or \
            isinstance(parent, (ast.BoolOp, ast.UnaryOp)) or \
            (isinstance(parent, (ast.If, ast.IfExp, ast.While)) and parent.test is node)
        if not (literal and tested):
            self.add("forbidden-name", node, "uses importlib.util.find_spec other than as "
                     "`find_spec(\"name\") is not None` with a literal top-level name: a spec's "
                     "loader reads files and loads code")

    def _is_decorator(self, node: ast.AST) -> bool:
        parent = self.f.parent.get(node)
        return isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
            node in parent.decorator_list

    def _check_cached(self, at: ast.AST, fn: ast.AST | None) -> None:
        """A cache in front of a function is a result cache if the function takes or returns
        tensors; caching settings derived from sizes, dtypes and device properties is fine."""
        if isinstance(fn, ast.Name):
            fn = self.f.functions.get(fn.id)
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self.add("caching", at, "caches a function this file does not define; cache only "
                     "your own helpers of sizes, dtypes and device properties")
            return
        env = self.envs.get(fn)
        tensors = sorted(p for p in (env.params if env else ()) if env and
                         env.has(p, "tensors") and p != env.self_name)
        returns = isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
            fn.name in self.f.returns_tensor
        if tensors or returns:
            what = f"tensor arguments ({', '.join(tensors)})" if tensors else "a tensor result"
            self.add("caching", at, f"caches {getattr(fn, 'name', 'a lambda')}, which has {what}, "
                     "across calls: a result cache. Cache only settings derived from sizes, "
                     "dtypes and device properties")

    def _holds_tensor(self, e: ast.AST) -> bool:
        return self.env.is_tensor(e) or self.env.is_container(e)

    def _check_mutation(self, node: ast.Call, q: str | None) -> None:
        env, func = self.env, node.func
        target: ast.expr | None = None
        method = ""
        if isinstance(func, ast.Attribute) and q is None:
            target, method = func.value, func.attr
            if env.is_self(target) and method in _SELF_MUTATORS and env.cls in self.f.nn_classes:
                self.add("caching", node, f"{self.where} calls self.{method}(), changing the "
                         "module between calls; do that in __init__")
                return
        elif q and q.startswith("torch.Tensor.") and node.args:  # torch.Tensor.copy_(t, ...)
            target, method = node.args[0], q.rsplit(".", 1)[1]
        if target is None or not env.is_shared(target) or self._in_init():
            return
        args = [*node.args, *(k.value for k in node.keywords)]
        if method.endswith("_") and method in _tensor_methods():
            self.add("caching", node, f"{self.where} calls .{method}() on a tensor that outlives "
                     f"the call ({_short(target)}); forward must not keep tensors across calls")
        elif method in _MUTATING and any(self._holds_tensor(a) for a in args):
            self.add("caching", node, f"{self.where} keeps a tensor in {_short(target)} across "
                     f"calls (.{method}()): a result cache. Keep only settings across calls")

    def _in_init(self) -> bool:
        fn = self.fn_stack[-1] if self.fn_stack else None
        return isinstance(fn, ast.FunctionDef) and fn.name == "__init__"

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

    # -- statements ---------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_store(t, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target, node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target, node.value)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_store(t, None)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._check_store(node.target, None)
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._check_store(node.optional_vars, None)
        self.generic_visit(node)

    def _check_store(self, t: ast.expr, value: ast.expr | None) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._check_store(e, None if value is None else value)
            return
        if isinstance(t, ast.Starred):
            self._check_store(t.value, value)
            return
        env = self.env
        if env.kind == "jit":
            return
        if isinstance(t, ast.Name):
            if self.runtime and t.id in env.globals_decl and value is not None and \
                    self._holds_tensor(value):
                self.add("caching", t, f"{self.where} keeps a tensor in the global {t.id} "
                         "across calls: a result cache. Keep only settings across calls")
            return
        if not isinstance(t, (ast.Attribute, ast.Subscript)):
            return
        root: ast.expr = t
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        text = _short(t)
        is_attr = isinstance(t, ast.Attribute)
        if not isinstance(root, ast.Name):
            if is_attr:
                self.add("monkeypatch", t, f"assigns to {text} on a computed object; set "
                         "attributes only on objects you create")
        elif self.f.qual(root):
            self.add("monkeypatch", t, f"assigns to {text}, which belongs to an imported module; "
                     "never patch torch/triton or the harness")
        elif self.runtime and env.is_shared(t):
            if value is not None and self._holds_tensor(value) and not self._in_init():
                self.add("caching", t, f"{self.where} keeps a tensor in {text} across calls: a "
                         "result cache (inputs are fresh on every call). Keep only settings "
                         "across calls, or allocate per call")
        elif env.is_self(root) or env.is_local(root.id):
            if is_attr and root.id in env.params and not env.is_self(root) and \
                    not (env.has(root.id, "ctx") and not env.has(root.id, "tensors")) and \
                    (self.where == "forward"
                                                     or env.has(root.id, "tensors")):
                self.add("monkeypatch", t, f"sets {text} on an object passed in; set attributes "
                         "only on objects you create (ctx of an autograd Function is yours)")
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

    def visit_Try(self, node: ast.Try) -> None:
        """Exceptions may be caught; what may not is every failure of code that handles tensors
        (``except Exception: return torch.relu(x)``): that fallback hides a broken kernel.
        Module-level guards (optional imports, probes) run before any input exists."""
        yields = _yields(node.body)
        if self.fn_stack and (yields or self._touches_tensors(node.body)):
            for h in node.handlers:
                broad = self._broad(h.type)
                if not broad or self._only_reraises(h):
                    continue
                if yields:
                    self.add("try-except", h, f"catches {broad} around a yield: as a context "
                             "manager (contextlib.contextmanager) this generator swallows every "
                             "error of its with-block, a failing kernel included. Catch the "
                             "specific error you expect, re-raise, or restore state in a "
                             "finally block")
                else:
                    self.add("try-except", h, f"catches {broad} around code that handles "
                             "tensors: a fallback path hides a failing kernel. Catch the "
                             "specific error you expect (ImportError, OutOfResources ...) or "
                             "let errors surface")
        if self.fn_stack and any(isinstance(n, (ast.Return, ast.Break, ast.Continue))
                                 for s in node.finalbody for n in ast.walk(s)):
            self.add("try-except", node, "returns from a finally block, which swallows any "
                     "error of the try block; let errors surface")
        self.generic_visit(node)

    visit_TryStar = visit_Try

    def _only_reraises(self, h: ast.ExceptHandler) -> bool:
        """A handler that only re-raises hides nothing: the error still leaves the try
        (``except Exception as e: raise RuntimeError(f"... {e}") from e``). Its body must be
        message assignments (a name bound to a string) and then ``raise``: bare, of the caught
        exception, or of a catch-all class (Exception, RuntimeError, BaseException, not
        rebound in this file) ``from`` the caught exception or None. Only a catch-all handler
        further out -- refused itself around code that handles tensors -- could then turn it
        into a fallback; a ``raise ValueError(...)`` could be caught by an ``except
        ValueError`` outside, and so could any error of the handler's own making, so its
        messages are built only from what cannot fail (:class:`_Message`)."""
        *pre, last = h.body
        if not isinstance(last, ast.Raise):
            return False
        bound = self._bound_names()
        msg = _Message(self.env, h.name, bound)
        for s in pre:
            if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and
                    isinstance(s.targets[0], ast.Name) and s.targets[0].id != h.name and
                    s.targets[0].id not in self.env.params and msg.text(s.value)):
                return False
            msg.names.add(s.targets[0].id)
        exc, cause = last.exc, last.cause
        if cause is not None and not (
                (isinstance(cause, ast.Name) and cause.id == h.name) or
                (isinstance(cause, ast.Constant) and cause.value is None)):
            return False
        if exc is None or (isinstance(exc, ast.Name) and h.name and exc.id == h.name):
            return True
        cls = exc.func if isinstance(exc, ast.Call) else exc
        if not (isinstance(cls, ast.Name) and cls.id in _BROAD_EXCEPTIONS and
                cls.id not in bound):
            return False
        return not isinstance(exc, ast.Call) or (
            not exc.keywords and all(msg.value(a) for a in exc.args))

    def _bound_names(self) -> set[str]:
        """Every name this file binds anywhere (assignments, defs, imports, parameters)."""
        if self._bound is None:
            out: set[str] = set()
            for n in ast.walk(self.f.tree):
                if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                    out.add(n.id)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.add(n.name)
                elif isinstance(n, ast.alias):
                    out.add(n.asname or n.name.split(".")[0])
                elif isinstance(n, ast.arg):
                    out.add(n.arg)
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    out.add(n.name)
                elif isinstance(n, (ast.Global, ast.Nonlocal)):
                    out.update(n.names)
            self._bound = out
        return self._bound

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            e = item.context_expr
            if isinstance(e, ast.Call) and self.f.qual(e.func) == "contextlib.suppress" and \
                    self.fn_stack:
                broad = self._suppressed(e)
                if broad and _yields(node.body):
                    self.add("try-except", node, f"suppresses {broad} around a yield: as a "
                             "context manager (contextlib.contextmanager) this generator "
                             "swallows every error of its with-block, a failing kernel included")
                elif broad and self._touches_tensors(node.body):
                    self.add("try-except", node, f"suppresses {broad} around code that handles "
                             "tensors: a fallback path hides a failing kernel")
        self.generic_visit(node)

    def _with_item(self, call: ast.Call) -> bool:
        item = self.f.parent.get(call)
        return isinstance(item, ast.withitem) and item.context_expr is call

    def _suppressed(self, call: ast.Call) -> str | None:
        """The catch-all class ``contextlib.suppress(...)`` is given, if any."""
        if call.keywords:
            return "keyword arguments"
        return next((b for a in call.args if (b := self._broad(a))), None)

    def _broad(self, t: ast.expr | None, depth: int = 0) -> str | None:
        """The catch-all an ``except`` clause (``except:`` is BaseException) or a
        ``suppress(...)`` argument names: Exception, BaseException or RuntimeError (kernel
        failures are RuntimeErrors), however it is spelled -- an import alias, a module-level
        name or tuple bound once (judged by its value), or anything computed (a parameter, a
        local, a call, an unpacked sequence), which could be any class. Builtin classes
        below RuntimeError, the file's own exception classes and those of imported modules
        are narrow."""
        if t is None:
            return "every exception (bare except)"
        if isinstance(t, ast.Starred):
            return f"the exceptions in {_short(t.value)}"
        if isinstance(t, ast.Tuple):
            return next((b for e in t.elts if (b := self._broad(e, depth))), None)
        name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
        if name in _BROAD_EXCEPTIONS:
            return name
        computed = f"the computed exception class {_short(t)}"
        root = t
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name):
            return computed
        stores, imports = self._bindings()
        n_store, n_import = stores.get(root.id, 0), len(imports.get(root.id, ()))
        if n_import:
            if n_store or n_import > 1:  # rebound, or imported as two different things
                return computed
            obj = _resolve(self.f.qual(t) or "")
            if obj is _MISSING or not isinstance(obj, type):
                return None  # (not a class: matching it raises TypeError)
            return _short(t) if issubclass(RuntimeError, obj) else None
        if isinstance(t, ast.Attribute):
            return computed
        if not n_store:  # a builtin (an undefined name raises NameError when matched)
            obj = getattr(builtins, t.id, None)
            return t.id if isinstance(obj, type) and issubclass(RuntimeError, obj) else None
        if n_store == 1 and t.id in self.f.classes:
            return None  # the file's own class: only the file's own code raises it
        value = self._module_value(t.id) if n_store == 1 and depth < 4 else None
        return computed if value is None else self._broad(value, depth + 1)

    def _bindings(self) -> tuple[dict[str, int], dict[str, set[str]]]:
        """How often each name is bound in this file by assignments, defs and parameters;
        and what imports bind it to (``import torch`` twice binds one module)."""
        if self._binding_counts is None:
            stores: dict[str, int] = {}
            imports: dict[str, set[str]] = {}
            for n in ast.walk(self.f.tree):
                if isinstance(n, ast.Import):
                    for a in n.names:
                        key = a.asname or a.name.split(".")[0]
                        imports.setdefault(key, set()).add(a.name if a.asname else key)
                    continue
                if isinstance(n, ast.ImportFrom):
                    for a in n.names:
                        imports.setdefault(a.asname or a.name, set()).add(
                            f"{'.' * n.level}{n.module}.{a.name}")
                    continue
                if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
                    key = n.id
                elif isinstance(n, ast.arg):
                    key = n.arg
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    key = n.name
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    key = n.name
                elif isinstance(n, (ast.Global, ast.Nonlocal)):
                    for g in n.names:  # (rebinding through global counts twice: computed)
                        stores[g] = stores.get(g, 0) + 1
                    continue
                else:
                    continue
                stores[key] = stores.get(key, 0) + 1
            self._binding_counts = (stores, imports)
        return self._binding_counts

    def _module_value(self, name: str) -> ast.expr | None:
        """The value of the module-level ``name = value`` that is ``name``'s only binding."""
        for n in self.f.tree.body:
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and \
                    isinstance(n.targets[0], ast.Name) and n.targets[0].id == name:
                return n.value
        return None

    def _touches_tensors(self, body: list[ast.stmt]) -> bool:
        for s in body:
            for n in ast.walk(s):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Subscript):
                    return True  # a kernel launch: kernel[grid](...)
                if isinstance(n, ast.Name) and self.env.is_tensor(n):
                    return True
        return False

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
        for d in node.decorator_list:
            self.visit(d)
        for b in [*node.bases, *node.keywords]:
            self.visit(b)
        for stmt in node.body:
            self.visit(stmt)

    def _check_base(self, cls: ast.ClassDef, b: ast.expr) -> None:
        q = self.f.qual(b)
        if not q or q in _MODULE_BASES or q in _AUTOGRAD_BASES or q in _TRITON_BASES or \
                q.startswith("typing."):
            return
        import torch

        obj = _resolve(q)
        if q == "torch.Tensor" or (isinstance(obj, type) and issubclass(obj, torch.Tensor)):
            self.add("tensor-subclass", cls, f"class {cls.name} subclasses {q}; return plain "
                     "torch.Tensor outputs computed by your kernel")
        elif isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            return  # what its forward runs is traced like any other
        elif q.startswith(("logging.", "warnings.")):
            self.add("introspection", cls, f"class {cls.name} subclasses {q}, which would "
                     "receive log records (and the caller's frames); log through a logger")
        elif q.startswith(("torch.", "triton.")):
            self.add("internals", cls, f"class {cls.name} subclasses {q}; subclass nn.Module, "
                     "torch.autograd.Function, triton.KernelInterface or "
                     "triton.runtime.Autotuner")

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if isinstance(node, ast.AsyncFunctionDef):
            self.add("concurrency", node, f"defines async function {node.name}; run synchronously")
        if node.name in ("__torch_function__", "__torch_dispatch__"):
            self.add("tensor-subclass", node, f"defines {node.name}: intercepting torch calls is "
                     "a lazy-tensor trick; return plain tensors")
        elif _is_dunder(node.name) and node.name not in _DUNDER_DEFS_OK:
            self.add("dunder-access", node, f"defines {node.name}; of dunder methods only "
                     f"{', '.join(sorted(_DUNDER_DEFS_OK))} may be defined")
        if node.name in ("__exit__", "__aexit__"):
            why = _exit_suppresses(node)
            if why:
                self.add("try-except", node, f"{node.name} {why}")
        for d in node.decorator_list:
            self.visit(d)
            if _is_cache_factory(self.f.qual(d.func if isinstance(d, ast.Call) else d)):
                self._check_cached(d, node)
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


class _Message:
    """What a re-raising handler's message may be built from: nothing that can fail (an
    error of the handler's own making would leave it as another exception, one a narrow
    handler further out could catch). Strings: constants, message names bound before,
    f-strings without format specs, str()/repr() and ``+`` of strings; values: those, the
    caught exception, a tensor parameter and its shape/dtype/device/ndim, tuple() of a
    shape, type() of a value and its __name__/__qualname__."""

    def __init__(self, env: _Env, caught: str | None, bound: set[str]) -> None:
        self.env, self.caught, self.bound = env, caught, bound
        self.names: set[str] = set()  # names the handler bound to messages so far

    def _builtin(self, e: ast.expr, *names: str) -> bool:
        return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and \
            e.func.id in names and e.func.id not in self.bound and not e.keywords and \
            len(e.args) == 1 and not isinstance(e.args[0], ast.Starred)

    def text(self, e: ast.expr) -> bool:
        if isinstance(e, ast.Constant):
            return isinstance(e.value, str)
        if isinstance(e, ast.Name):
            return e.id in self.names
        if isinstance(e, ast.JoinedStr):
            return all(isinstance(v, ast.Constant) or (
                isinstance(v, ast.FormattedValue) and v.format_spec is None and
                self.value(v.value)) for v in e.values)
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            return self.text(e.left) and self.text(e.right)
        return self._builtin(e, "str", "repr") and self.value(e.args[0])  # type: ignore[attr-defined]

    def _tensor_param(self, e: ast.expr) -> bool:
        return isinstance(e, ast.Name) and e.id in self.env.params and self.env.is_tensor(e)

    def value(self, e: ast.expr) -> bool:
        if isinstance(e, ast.Constant) or self.text(e) or self._tensor_param(e):
            return True
        if isinstance(e, ast.Name):
            return e.id == self.caught
        if isinstance(e, ast.Attribute):
            if e.attr in ("__name__", "__qualname__"):
                return self._builtin(e.value, "type") and self.value(e.value)
            return e.attr in ("shape", "dtype", "device", "ndim") and self._tensor_param(e.value)
        if self._builtin(e, "type"):
            return self.value(e.args[0])  # type: ignore[attr-defined]
        return self._builtin(e, "tuple") and isinstance(e.args[0], ast.Attribute) and \
            e.args[0].attr == "shape" and self.value(e.args[0])  # type: ignore[attr-defined]


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."




def _is_cache_factory(q: str | None) -> bool:
    return bool(q) and q.startswith("functools.") and q.split(".")[1] in _FUNCTOOLS_CACHING


def _from_import_rule(mod: str, name: str) -> tuple[str, str] | None:
    """``from mod import name``: judged by the name imported (``from torch.amp import
    custom_fwd`` is fine though most of torch.amp is not)."""
    if name == "*":
        return "forbidden-import", f"`from {mod} import *` hides names; import them by name"
    rule = _import_rule(mod)
    if rule and rule[0] in ("forbidden-import", "concurrency"):
        return rule
    q = _canonical(f"{mod}.{name}")
    return None if q in _TORCH_SCOPED else _qual_rule(q)  # (scoped: judged at each use)


def _own_nodes(body: list[ast.stmt]) -> list[ast.AST]:
    """The nodes of ``body`` in its own scope (not those of nested functions or classes)."""
    out: list[ast.AST] = []
    for s in body:
        if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out += [s, *_walk_scope(s)]
    return out


def _yields(body: list[ast.stmt]) -> bool:
    """Does ``body`` yield (its own function's yield)? contextlib.contextmanager throws the
    with-block's error in at that yield."""
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(body))


def _exit_suppresses(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """Why ``__exit__``/``__aexit__`` may return something true (any value but a None or
    false constant, so ``return exc_type is not None`` too), or None if it cannot."""
    swallows = "swallows the errors of the with-block (a silent fallback)"
    if fn.decorator_list:
        return f"is decorated: what it returns cannot be judged, and a true value {swallows}; " \
            "define it undecorated, returning None"
    if isinstance(fn, ast.AsyncFunctionDef) and fn.name == "__exit__":
        return f"is async: it returns a coroutine, which is true and {swallows}; return None"
    own = _own_nodes(fn.body)
    if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in own):
        return f"is a generator: it returns a generator object, which is true and {swallows}; " \
            "return None"
    if any(isinstance(r, ast.Return) and r.value is not None and not (
            isinstance(r.value, ast.Constant) and not r.value.value) for r in own):
        return f"may return a true value, which {swallows}; return None"
    return None
