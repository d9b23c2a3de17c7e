"""Static policy: what a candidate's source may import, call and touch before it is ever run.

:func:`check_source` parses a candidate (``class ModelNew`` + Triton ``@triton.jit`` kernels or
``torch.utils.cpp_extension.load_inline`` CUDA) and returns a :class:`PolicyResult` whose
violations each name a rule id, a line and what to do instead. It never runs the candidate.

Rule ids (see :data:`RULES`): ``forbidden-import``, ``forbidden-name``, ``dunder-access``,
``introspection``, ``try-except``, ``concurrency``, ``monkeypatch``, ``internals``,
``tensor-subclass``, ``reference-call``, ``caching``, ``no-kernel``, ``cuda-vendor``,
``cuda-unsafe``, ``cuda-dynamic``, ``too-complex``, ``policy-error``.

Scopes and decisions:

* *Runtime code* is every function or lambda that is not a ``@triton.jit`` kernel and not the
  ``__init__`` of an ``nn.Module`` subclass: ``forward``, helpers, launchers, autotune hooks.
  There PyTorch may only allocate, describe and move data (``torch.empty``, ``.view``,
  ``.contiguous``, ``.to``, ``torch.cat`` ...); ops, compute methods, arithmetic and comparison
  operators on tensors, ``@``, and calling ``torch.nn`` modules are reference calls.
* ``__init__`` of an ``nn.Module`` may preprocess weights with any torch op (it never sees an
  input), but it may not store a torch op or an ``nn`` module for ``forward`` to call: storing
  ``F.relu`` is flagged where it is written, calling ``self.act = nn.ReLU()`` is flagged where
  ``forward`` calls it. Helpers called from ``__init__`` are runtime code: preprocess inline.
* Module level and class bodies run once at import with no inputs; only the file-wide rules
  (imports, names, internals, patching, ...) apply there.
* Tensor-ness is inferred, not known: ``forward``'s parameters are tensors unless annotated
  otherwise (``k: int``) or given a constant default; tensors flow through assignments, views,
  allocations and calls into the file's own helpers. An unannotated non-tensor ``forward``
  argument used in arithmetic is therefore flagged; annotate it.
* CUDA strings passed to ``load_inline`` must be string constants (literals, module-level or
  local constants, ``+`` and f-strings of numeric constants) so that ``sandbox._cuda_policy``
  can scan them; the backend is ``"cuda"`` whenever ``load_inline`` is called.
* What a static check cannot see is left to the run-time defences (see the attack corpus under
  ``tests/candidates/attacks``): returning inputs/views/untouched buffers, partial work, shape
  overfitting, precision loss, and state smuggled through tensors that a kernel writes. Type
  inference is heuristic, so a run-time trace of the ATen ops a forward dispatches is the
  backstop for PyTorch compute this module misses.
"""

from __future__ import annotations

import ast

from sandbox._policy.checker import _Checker
from sandbox._policy.facts import _Facts
from sandbox._policy.infer import _infer
from sandbox._policy.records import RULES, PolicyResult, Violation

__all__ = ["RULES", "Violation", "PolicyResult", "check_source", "detect_backend"]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
_TOO_COMPLEX = PolicyResult("unknown", (Violation(
    "too-complex", "the source nests too deeply to be analysed; flatten it", None),))


def _parse(source: str) -> ast.Module | PolicyResult:
    try:
        return ast.parse(source)
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
            violations.append(Violation("no-kernel", "no kernel: ModelNew must launch a Triton "
                                        "(@triton.jit) or CUDA (load_inline) kernel", None))
        backend = _backend(facts)
    except RecursionError:
        return _TOO_COMPLEX
    except Exception as e:  # noqa: BLE001 - a policy bug must not crash verify(); fail closed
        return PolicyResult("unknown", (Violation(
            "policy-error", f"the policy checker failed ({type(e).__name__}: {e}); the source "
            "was not checked, so it is rejected. Please report this", None),))
    violations.sort(key=lambda v: (v.line or 0, v.rule))
    return PolicyResult(backend, tuple(violations))
