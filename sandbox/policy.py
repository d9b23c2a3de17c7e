"""Static policy: what a candidate's source may import, call and touch before it is ever run.

:func:`check_source` parses a candidate (``class ModelNew`` + Triton ``@triton.jit`` kernels or
``torch.utils.cpp_extension.load_inline`` CUDA) and returns a :class:`PolicyResult` whose
violations each name a rule id, a line and what to do instead. It never runs the candidate.

Rule ids (see :data:`RULES`): ``forbidden-import``, ``forbidden-name``, ``dunder-access``,
``introspection``, ``try-except``, ``concurrency``, ``monkeypatch``, ``internals``,
``tensor-subclass``, ``reference-call``, ``caching``, ``no-kernel``, ``cuda-vendor``,
``cuda-unsafe``, ``cuda-dynamic``, ``too-complex``, ``policy-error``.

Run-time evidence decides; the static policy refuses only what is dangerous or unambiguous by
construction (issue 16):

* **The process and the harness**: subprocesses, sockets, ctypes and native-library loading
  (only torch, triton and harmless standard modules may be imported; ``importlib``,
  ``logging``, ``contextlib``, ``warnings`` and ``packaging`` only through the names in
  ``tables._ROOT_ONLY``); reading files (``open``, ``torch.load``, tensor storages,
  ``find_spec(...).loader``); reading the environment; ``exec``/``eval``/``compile`` and
  ``getattr``/``setattr`` with computed names (constant names are plain attribute accesses;
  ``getattr(torch, device).is_available()`` is a device probe); frames, code objects and
  other introspection (also through log records and ``warnings.catch_warnings``); dunders
  other than names, versions and protocol methods; pickles; threads, processes, side streams,
  CUDA graphs and events; tensor subclasses and ``__torch_function__``.
* **Patching**: assignments to attributes of imported modules or of their objects
  (``torch.allclose = ...``, ``triton.testing.do_bench = ...``), of the file's kernels, and of
  objects the harness passes in (forward's arguments). ``ctx.X = ...`` on the ``ctx`` of an
  autograd Function is the Function's own state and is fine.
* **Torch and Triton internals**: private APIs, compilers (``torch.compile``, ``torch.jit``,
  ``torch.ops``, ``torch.library``), global state (``torch.set_*``, ``torch.backends``),
  ``triton.testing``/``knobs``/caches. Device probes of every device module, autocast
  decorators, ``torch.jit.is_scripting``/``is_tracing``, reads (never writes) of the matmul
  precision flags, ``with torch.autocast(...)``/``torch.set_grad_enabled(...)`` blocks,
  Triton's ``TensorDescriptor`` and ``set_allocator``, ``kernel._init_handles()``, and
  launch wrappers subclassing ``triton.KernelInterface`` or
  ``triton.runtime.Autotuner``/``Heuristics`` are allowed.
* **Unambiguous by construction**: a catch-all ``except`` or ``contextlib.suppress``
  (Exception, BaseException, RuntimeError or bare, however spelled: an alias is judged by
  its value, a computed class counts as a catch-all) around code that handles tensors — the
  silent fallback — or around a generator's own ``yield`` (a ``contextlib.contextmanager``
  that swallows its with-block's errors); an ``__exit__`` that can return anything but None
  or a false constant (``return exc_type is not None``, a generator, a decorated one); a
  broad ``suppress`` anywhere but a with statement, or taken as a value; ``ExitStack.push``
  (any callable can return true; ``enter_context`` and ``callback`` are fine). A handler
  that only re-raises (``raise RuntimeError(f"...") from e``) hides nothing and is allowed,
  and so is try/finally;
  a tensor kept across calls in ``self``, a global, a mutable default or a closure, or an
  ``lru_cache`` in front of a function of tensors — a result cache (settings, configs and
  counters may be kept); a PyTorch op passed around as a value (Triton's autotuner hooks
  would call it where the op trace excuses Triton's own frames); host compute outside the
  op trace (``.numpy()``, ``Tensor.map_``); no kernel at all.

Everything else is judged by what runs (``sandbox._child``): the ATen ops every checked call
dispatches (PyTorch compute in forward, however it is reached — an op, a tensor method, an
operator, an ``nn`` module, an inherited forward, a branch only some shapes take), the Triton
and device kernels it launches (kernel provenance), fresh inputs on every call, output
aliasing and input-mutation audits, perturbed inputs, redrawn parameters and re-checked timed
outputs. Code that only looks like a cheat — ``ctx`` attributes, logging, guarded optional
imports, version and device probes, ``lru_cache``d settings helpers, arithmetic on Python ints
the inference might take for tensors, a torch op on a branch the problem never takes — is
therefore accepted here and judged there.

* *Runtime code* is every function or lambda that is not a ``@triton.jit`` kernel and not the
  ``__init__`` of an ``nn.Module`` subclass; module level, class bodies and ``__init__`` run
  before any input exists.
* CUDA strings passed to ``load_inline`` must be string constants (literals, module-level or
  local constants, ``+`` and f-strings of numeric constants) so that ``sandbox._cuda_policy``
  can scan them; the backend is ``"cuda"`` whenever ``load_inline`` is called.
"""

from __future__ import annotations

import ast
import threading

from sandbox._policy.checker import _Checker
from sandbox._policy.facts import _Facts
from sandbox._policy.infer import _infer
from sandbox._policy.records import RULES, PolicyResult, Violation
from sandbox._policy.tables import _torch_call_rule

__all__ = ["RULES", "Violation", "PolicyResult", "check_source", "detect_backend", "parse"]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
_TOO_COMPLEX = PolicyResult("unknown", (Violation(
    "too-complex", "the source nests too deeply to be analysed; flatten it", None),))


_PARSE_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, one thread at a time. CPython 3.11 keeps the AST constructor's
    recursion depth in state that all threads share: two parses at once can corrupt it, and
    one of them raises ``SystemError: AST constructor recursion depth mismatch``
    (python/cpython#106905; kbench's CI, 2026-12-07, two policy checks in two threads). A
    run parses candidates in several threads (policy checks, backend detection, the
    executors' submissions); a parse takes milliseconds."""
    with _PARSE_LOCK:
        return ast.parse(source, filename)


def _parse(source: str) -> ast.Module | PolicyResult:
    try:
        return parse(source)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes. The caller reports both.
        return PolicyResult("unknown", ())
    except (RecursionError, MemoryError):
        return _TOO_COMPLEX


def _backend(facts: _Facts) -> str:
    if facts.has_load_inline:
        return "cuda"  # needs a CUDA build even if it also has Triton kernels
    return "triton" if facts.jit else "unknown"


def detect_backend(source: str) -> str:
    """``"cuda"`` if the source calls load_inline, ``"triton"`` if it has a ``@triton.jit``
    kernel, else ``"unknown"`` (also for sources that do not parse)."""
    tree = _parse(source)
    if isinstance(tree, PolicyResult):
        return tree.backend
    try:
        return _backend(_Facts(tree))
    except RecursionError:
        return "unknown"


_HARNESS_FUNCTIONS = ("get_inputs", "get_init_inputs")


def _set_aside_harness_functions(tree: ast.Module) -> list[Violation]:
    """KernelBench-style candidates end with the problem's ``get_inputs()`` and
    ``get_init_inputs()``. Their bodies never run (the child disarms them after import and
    kbench makes inputs itself), so they are not checked; their decorators and defaults,
    which do run at import, still are. Any use of these names elsewhere is refused."""
    own: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name in _HARNESS_FUNCTIONS:
            own.update(id(n) for n in ast.walk(node))
            node.body = [ast.copy_location(ast.Pass(), node.body[0])]
    out = []
    for n in ast.walk(tree):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) \
            else n.value if isinstance(n, ast.Constant) else None
        if name in _HARNESS_FUNCTIONS and id(n) not in own:
            out.append(Violation("reference-call", f"uses {name}, the problem's input "
                                 "generator: kbench supplies the inputs; leave a trailing "
                                 f"{name}() unused or delete it", getattr(n, "lineno", None)))
    return out


def _torch_compute_note(facts: _Facts) -> str:
    """For a file without a kernel: the PyTorch calls doing its work instead, if any."""
    calls = sorted({(n.lineno, q) for n in ast.walk(facts.tree) if isinstance(n, ast.Call)
                    and (q := facts.qual(n.func)) and _torch_call_rule(q)})
    if not calls:
        return ""
    shown = ", ".join(f"{q} at line {line}" for line, q in calls[:3])
    return f"; it computes with PyTorch instead ({shown}): the reference the kernel replaces"


def _no_kernel(source: str, tree: ast.Module, facts: _Facts) -> str:
    """Why no kernel was found, starting with what is plainly missing."""
    if not tree.body:  # nothing but blanks and comments
        return "no kernel: the candidate file is empty (no code); write a class ModelNew that launches " \
            "a Triton (@triton.jit) or CUDA (load_inline) kernel"
    def binds(n: ast.AST) -> bool:
        return (isinstance(n, ast.ClassDef) and n.name == "ModelNew") or \
            (isinstance(n, ast.Name) and n.id == "ModelNew" and isinstance(n.ctx, ast.Store)) or \
            (isinstance(n, ast.alias) and (n.asname or n.name) == "ModelNew")

    if not any(binds(n) for n in ast.walk(tree)):
        return "no kernel: the candidate defines no class ModelNew; ModelNew must launch a " \
            "Triton (@triton.jit) or CUDA (load_inline) kernel"
    return ("no kernel: ModelNew must launch a Triton (@triton.jit) or CUDA (load_inline) "
            "kernel" + _torch_compute_note(facts))


def check_source(source: str) -> PolicyResult:
    """Check a candidate's source against every rule of :data:`RULES`. Never raises.

    A source that does not parse yields ``PolicyResult("unknown", ())``: syntax errors are the
    caller's to report (as compile errors), not policy violations.

    Example:
        >>> r = check_source("import os\\n")
        >>> r.ok, sorted(r.rules)
        (False, ['forbidden-import', 'no-kernel'])
    """
    tree = _parse(source)
    if isinstance(tree, PolicyResult):
        return tree
    try:
        harness = _set_aside_harness_functions(tree)
        facts = _Facts(tree)
        envs = _infer(facts)
        checker = _Checker(facts, envs)
        checker.visit(tree)
        violations = checker.out + harness
        if not facts.kernel_lines:
            violations.append(Violation("no-kernel", _no_kernel(source, tree, facts), None))
        backend = _backend(facts)
    except RecursionError:
        return _TOO_COMPLEX
    except Exception as e:  # noqa: BLE001 - a policy bug must not crash verify(); fail closed
        return PolicyResult("unknown", (Violation(
            "policy-error", f"the policy checker failed ({type(e).__name__}: {e}); the source "
            "was not checked, so it is rejected. Please report this", None),))
    violations.sort(key=lambda v: (v.line or 0, v.rule))
    return PolicyResult(backend, tuple(violations))
