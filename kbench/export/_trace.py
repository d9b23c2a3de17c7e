"""Making a Triton candidate's launches traceable for ``torch.library.triton_op``.

``triton_op`` traces its body (fake tensors under ``torch.compile``), and a Triton kernel is
seen by that trace only when launched as ``wrap_triton(kernel)[grid](...)``. A candidate is
arbitrary code whose ``ModelNew.forward`` launches its kernels, directly or through helper
functions; rather than guess a single-launch function, the exporter rewrites every launch
site ``K[grid](...)`` of a module-level ``@triton.jit``/``@triton.autotune`` kernel ``K`` to
``_kbench_wrap_triton(K)[grid](...)`` and leaves every other character of the source as it
was (kernel bodies included: Triton reads them back with ``inspect``). Run eagerly the
wrapper is the kernel itself; traced, it records the launch.

This works from the source's syntax alone (the exporter never runs candidate code), so it
refuses, with the reason, what it cannot vouch for: a kernel used other than by launching it
(aliased, stored, passed on, ``.run``), a kernel whose outermost decorator is
``@triton.heuristics`` (``wrap_triton`` takes only jit and autotune kernels), host reads of
tensor values (``.item()``,
``.tolist()``, ``.data_ptr()``, ``.numpy()``: fake tensors have no values), or a C++/CUDA
extension built beside the kernels (its functions cannot take fake tensors). Such a
candidate is exported as an opaque ``torch.library.custom_op`` instead.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sandbox.policy import parse

__all__ = ["WRAP", "Traced", "rewrite_launches"]

WRAP = "_kbench_wrap_triton"
_DECORATORS = {"jit", "autotune", "heuristics"}
_HOST_READS = {"item", "tolist", "data_ptr", "numpy"}
_EXTENSIONS = {"load_inline", "cpp_extension", "ctypes", "cupy"}
_FOOTER = f"""

# Added by kbench export: the launches above go through torch.library.wrap_triton, so the op
# (a torch.library.triton_op) traces into these kernels; run eagerly it is the kernel itself.
from torch.library import wrap_triton as {WRAP}  # noqa: E402
"""


@dataclass(frozen=True)
class Traced:
    """The rewritten source (None when the candidate cannot be traced, ``why`` says why),
    the kernels it launches and how many launch sites were rewritten."""

    source: str | None
    kernels: tuple[str, ...]
    launches: int
    why: str | None = None


def _is_triton_decorator(d: ast.expr) -> bool:
    f = d.func if isinstance(d, ast.Call) else d
    if isinstance(f, ast.Attribute):
        return f.attr in _DECORATORS and isinstance(f.value, ast.Name) and f.value.id in (
            "triton", "tl")
    return isinstance(f, ast.Name) and f.id in _DECORATORS


def _triton_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)
            and any(_is_triton_decorator(d) for d in n.decorator_list)}


class _HostCode(ast.NodeVisitor):
    """Walks the code that runs on the host (everything but the Triton functions' bodies)."""

    def __init__(self, triton_fns: dict[str, ast.FunctionDef]) -> None:
        self.triton_fns = triton_fns
        self.sites: list[ast.Name] = []  # the K of each K[grid](...)
        self.problems: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if self.triton_fns.get(node.name) is node:
            for d in node.decorator_list:  # autotune configs etc. run on the host
                self.visit(d)
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if (isinstance(f, ast.Subscript) and isinstance(f.value, ast.Name)
                and f.value.id in self.triton_fns):
            self.sites.append(f.value)
            self.visit(f.slice)
            for a in [*node.args, *node.keywords]:
                self.visit(a)
            return
        if isinstance(f, ast.Attribute) and f.attr in _HOST_READS:
            self.problems.append(f"calls .{f.attr}() at line {node.lineno}: it reads tensor "
                                 "values on the host, which a trace over fake tensors cannot")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _EXTENSIONS:
            self.problems.append(f"uses {node.id} at line {node.lineno}: a C++/CUDA extension's "
                                 "functions cannot take the fake tensors of a trace")
        elif node.id in self.triton_fns and isinstance(node.ctx, ast.Load):
            self.problems.append(
                f"the kernel {node.id} is used at line {node.lineno} other than launched as "
                f"{node.id}[grid](...) (aliased, stored, passed on or called through a method), "
                "so its launches cannot all be wrapped")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._module(a.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._module(node.module or "", node.lineno)

    def _module(self, name: str, line: int) -> None:
        hit = _EXTENSIONS & set(name.split("."))
        if hit:
            self.problems.append(f"imports {name} at line {line}: a C++/CUDA extension's "
                                 "functions cannot take the fake tensors of a trace")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _EXTENSIONS:
            self.problems.append(f"uses {node.attr} at line {node.lineno}: a C++/CUDA "
                                 "extension's functions cannot take the fake tensors of a trace")
        self.generic_visit(node)


def rewrite_launches(source: str) -> Traced:
    """Rewrite each ``K[grid](...)`` launch of ``source`` to go through ``wrap_triton``.

    Example:
        >>> src = "import triton\\n@triton.jit\\ndef k(x): pass\\ndef f(x): k[(1,)](x)\\n"
        >>> t = rewrite_launches(src)
        >>> t.launches, "_kbench_wrap_triton(k)[(1,)](x)" in t.source
        (1, True)
    """
    try:
        tree = parse(source)
    except SyntaxError as e:
        return Traced(None, (), 0, f"its source does not parse ({e.msg}, line {e.lineno})")
    fns = _triton_functions(tree)
    host = _HostCode(fns)
    host.visit(tree)
    kernels = tuple(dict.fromkeys(n.id for n in host.sites))
    for k in kernels:
        outer = fns[k].decorator_list[0]
        f = outer.func if isinstance(outer, ast.Call) else outer
        if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) == "heuristics":
            host.problems.append(f"the kernel {k} is wrapped last by @triton.heuristics, which "
                                 "torch.library.wrap_triton does not take (only @triton.jit "
                                 "and @triton.autotune)")
    if host.problems:
        return Traced(None, kernels, len(host.sites), "; ".join(dict.fromkeys(host.problems)))
    if not host.sites:
        return Traced(None, (), 0, "no launch K[grid](...) of a module-level @triton.jit or "
                                   "@triton.autotune kernel was found")
    lines = source.splitlines(keepends=True)
    raw = [line.encode() for line in lines]  # ast offsets count UTF-8 bytes
    # Later sites first, so earlier offsets stay valid; a Name never spans lines.
    for n in sorted(host.sites, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        b = raw[n.lineno - 1]
        raw[n.lineno - 1] = (b[:n.col_offset] + f"{WRAP}(".encode()
                             + b[n.col_offset:n.end_col_offset] + b")" + b[n.end_col_offset:])
    text = b"".join(raw).decode()
    if not text.endswith("\n"):
        text += "\n"
    return Traced(text + _FOOTER, kernels, len(host.sites))
