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
import functools
import importlib
import inspect
import string
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sandbox._cuda_policy import scan_flags, scan_source

__all__ = ["RULES", "Violation", "PolicyResult", "check_source", "detect_backend"]

RULES: dict[str, str] = {
    "forbidden-import": "imports (or reaches) a module other than torch, triton, math, typing, "
                        "functools, dataclasses",
    "forbidden-name": "uses a builtin or API that evaluates code, reads files or reaches the "
                      "interpreter (eval, exec, open, getattr, torch.load, cpp_extension.load ...)",
    "dunder-access": "touches a dunder attribute or defines a dunder method other than __init__",
    "introspection": "reaches frames, code objects, private attributes, module objects or "
                     "format-string attribute lookups",
    "try-except": "catches exceptions: a silent fallback hides a broken kernel",
    "concurrency": "side streams, CUDA graphs, events, threads, processes or async code",
    "monkeypatch": "assigns to or deletes attributes of modules, classes or objects it does "
                   "not own",
    "internals": "uses torch/triton internals, global torch state or harness tools",
    "tensor-subclass": "subclasses torch.Tensor or defines __torch_function__/__torch_dispatch__",
    "reference-call": "computes with PyTorch (ops, tensor methods, operators, nn modules) in "
                      "runtime code instead of in the kernel",
    "caching": "keeps state across calls (writes to self or globals in forward, lru_cache ...)",
    "no-kernel": "defines no @triton.jit kernel and no load_inline extension",
    "cuda-vendor": "CUDA source calls a vendor library or ATen compute",
    "cuda-unsafe": "CUDA source reaches the OS, threads, side streams, Python or the linker",
    "cuda-dynamic": "load_inline arguments are not string constants the policy can read",
    "too-complex": "the source nests too deeply to be analysed",
    "policy-error": "the checker itself failed (a bug in kbench): the source is rejected unchecked",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` is a :data:`RULES` id; ``message`` says where and what to do."""

    rule: str
    message: str
    line: int | None


@dataclass(frozen=True)
class PolicyResult:
    """The policy's answer for one source: its backend and every violation found."""

    backend: str  # "triton" | "cuda" | "unknown"
    violations: tuple[Violation, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(v.rule for v in self.violations)

    def reason(self) -> str:
        """Every violation, one per line (empty when the source passes)."""
        return "\n".join(f"[{v.rule}] {v.message}" for v in self.violations)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
_ROOTS = ("torch", "triton", "math", "typing", "functools", "dataclasses")
_ALLOWED_MODULES = {"torch", "torch.nn", "torch.nn.functional", "torch.cuda",
                    "torch.utils.cpp_extension", "triton", "triton.language", "math", "typing",
                    "functools", "dataclasses", "__future__"}
_THREAD_MODULES = {"threading", "_thread", "multiprocessing", "concurrent", "asyncio", "queue",
                   "sched", "selectors"}
_FORBIDDEN_BUILTINS = {"__import__", "eval", "exec", "compile", "open", "globals", "locals",
                       "vars", "getattr", "setattr", "delattr", "breakpoint", "input",
                       "__builtins__", "memoryview", "dir", "exit", "quit", "help"}
_DUNDER_NAMES_OK = {"__name__", "__all__", "__slots__"}
_DUNDER_DEFS_OK = {"__init__", "__repr__", "__str__", "__post_init__"}
_FRAME_ATTRS = {"gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await",
                "ag_frame", "ag_code", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
                "f_trace", "tb_frame", "tb_next", "func_globals", "func_code", "co_code",
                "co_consts", "co_names", "co_varnames", "co_filename"}
_TORCH_CONCURRENCY = ("torch.cuda.Stream", "torch.cuda.stream", "torch.cuda.set_stream",
                      "torch.cuda.ExternalStream", "torch.cuda.StreamContext", "torch.cuda.streams",
                      "torch.cuda.graphs", "torch.cuda.graph", "torch.cuda.CUDAGraph",
                      "torch.cuda.make_graphed_callables", "torch.cuda.Event", "torch.Stream",
                      "torch.Event", "torch.multiprocessing", "torch.futures")
_TORCH_INTERNAL = ("torch.compile", "torch.jit", "torch.ops", "torch.backends", "torch.library",
                   "torch.fx", "torch.export", "torch.overrides", "torch.autograd.graph",
                   "torch.autograd.profiler", "torch.profiler", "torch.distributed", "torch.hub",
                   "torch.package", "torch.testing", "torch.classes", "torch.func", "torch.random",
                   "torch.manual_seed", "torch.seed", "torch.initial_seed", "torch.get_rng_state",
                   "torch.use_deterministic_algorithms", "torch.autocast", "torch.amp",
                   "torch.storage", "torch.UntypedStorage", "torch.TypedStorage", "torch.nn.utils",
                   "torch.nn.modules.module", "torch.cpu", "torch.mps", "torch.xpu",
                   "torch.accelerator", "torch.monitor", "torch.onnx", "torch.vmap", "torch.cond")
_FILE_IO = ("torch.load", "torch.save", "torch.from_file", "torch.serialization",
            "torch.utils.cpp_extension.load", "typing.get_type_hints", "typing.ForwardRef",
            "functools.singledispatch", "functools.singledispatchmethod")
_CUDA_OK = {"current_device", "is_available", "get_device_properties", "device_count",
            "synchronize", "current_stream", "default_stream", "device", "get_device_name",
            "get_device_capability", "is_bf16_supported", "OutOfMemoryError"}
_TRITON_OK = ("triton.jit", "triton.autotune", "triton.Config", "triton.heuristics", "triton.cdiv",
              "triton.next_power_of_2", "triton.language", "triton.runtime.driver",
              "triton.reinterpret", "triton.constexpr_function", "triton.JITFunction")
_FUNCTOOLS_CACHING = {"lru_cache", "cache", "cached_property"}
_PRIVATE_OK = {"torch.nn.init._calculate_fan_in_and_fan_out",  # nn.Linear's reset_parameters
               "torch.nn.init._calculate_correct_fan"}
_SELF_MUTATORS = {"register_buffer", "register_parameter", "add_module", "register_module",
                  "register_forward_hook", "register_forward_pre_hook",
                  "register_full_backward_hook",
                  "apply", "load_state_dict", "to", "cuda", "cpu", "half", "float", "double",
                  "bfloat16", "requires_grad_", "train", "eval", "zero_grad", "share_memory"}
_TORCH_OK_CALLS = {
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "arange", "tensor", "as_tensor", "as_strided", "cat", "concat", "concatenate",
    "stack", "finfo", "iinfo", "device", "dtype", "Size", "is_tensor", "is_floating_point",
    "is_complex", "numel", "get_default_dtype", "broadcast_shapes", "result_type",
    "promote_types", "can_cast", "no_grad", "inference_mode",
}
_TORCH_NON_TENSOR = {"finfo", "iinfo", "device", "dtype", "Size", "is_tensor", "is_floating_point",
                     "is_complex", "numel", "get_default_dtype", "broadcast_shapes", "result_type",
                     "promote_types", "can_cast", "no_grad", "inference_mode"}
# torch.Tensor methods that only describe, allocate or move data.
_TENSOR_OK = {
    "size", "dim", "numel", "stride", "storage_offset", "data_ptr", "element_size",
    "is_contiguous", "contiguous", "view", "view_as", "reshape", "reshape_as", "flatten",
    "unflatten", "squeeze", "unsqueeze", "expand", "expand_as", "t", "transpose", "permute",
    "movedim", "moveaxis", "swapaxes", "swapdims", "narrow", "select", "chunk", "split",
    "split_with_sizes", "tensor_split", "unbind", "unfold", "as_strided", "to", "type", "float",
    "half", "bfloat16", "double", "int", "long", "short", "bool", "byte", "char", "cuda", "cpu",
    "clone", "copy_", "fill_", "zero_", "new_empty", "new_empty_strided", "new_zeros", "new_ones",
    "new_full", "new_tensor", "item", "tolist", "get_device", "detach", "requires_grad_",
    "is_floating_point", "is_complex", "is_signed", "nelement", "ndimension", "dim_order",
    "pin_memory", "is_pinned", "const_data_ptr",
}
_TENSOR_SCALAR = {"size", "dim", "numel", "stride", "storage_offset", "data_ptr", "element_size",
                  "is_contiguous", "item", "tolist", "get_device", "is_floating_point",
                  "is_complex", "is_signed", "nelement", "ndimension", "dim_order", "is_pinned",
                  "const_data_ptr"}
_TENSOR_ATTRS = {"T", "mT", "H", "mH", "data", "real", "imag", "grad"}
_TENSOR_EVIDENCE = {"shape", "dtype", "device", "numel", "stride", "data_ptr", "contiguous",
                    "is_contiguous", "element_size", "ndim", "storage_offset", "view", "reshape",
                    "is_cuda", "new_empty", "new_zeros", "T", "mT", "unsqueeze", "squeeze",
                    "permute", "transpose", "flatten", "expand", "dim"}
_MODULE_TENSORS = {"weight", "bias", "running_mean", "running_var", "in_proj_weight",
                   "in_proj_bias"}
_NON_MODULE_ATTRS = _MODULE_TENSORS | {
    "num_batches_tracked", "eps", "momentum", "in_features", "out_features", "in_channels",
    "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "normalized_shape",
    "num_features", "p", "negative_slope", "dim", "training", "padding_mode", "output_padding",
    "elementwise_affine", "affine", "track_running_stats", "num_heads", "embed_dim", "head_dim",
    "num_embeddings", "embedding_dim", "padding_idx", "inplace", "approximate", "beta",
    "threshold", "alpha", "lambd", "min_val", "max_val", "upscale_factor", "scale_factor", "mode",
    "align_corners", "parameters", "named_parameters", "buffers", "named_buffers", "state_dict",
    "hidden_size", "input_size", "num_layers", "batch_first", "bidirectional", "dropout",
}
_MODULE_ITER = {"children", "modules", "named_children", "named_modules", "values", "items",
                "get_submodule"}
_ITER_BUILTINS = {"enumerate", "zip", "list", "tuple", "reversed", "iter", "next", "sorted", "dict"}
_SAFE_WITH_MODULES = _ITER_BUILTINS | {"len", "isinstance", "print", "str", "repr", "id", "type",
                                       "hasattr", "callable"}
_TENSOR_BUILTINS = {"abs", "pow", "round", "sum", "max", "min", "divmod", "sorted", "any", "all"}
_ELEMENT_OF = {"next", "min", "max", "sum", "abs", "pow", "round"}  # builtins returning an element
_CONTAINER_OF = {"iter", "list", "tuple", "reversed", "sorted", "dict", "set", "frozenset",
                 "enumerate", "zip"}  # builtins returning a container of their arguments' items
_MUTATING = {"append", "extend", "insert", "remove", "pop", "popitem", "clear", "update",
             "setdefault", "add", "discard", "sort", "reverse", "__setitem__"}
_VENDORISH = {"mm", "matmul", "bmm", "addmm", "baddbmm", "einsum", "linear", "conv1d", "conv2d",
              "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
              "scaled_dot_product_attention", "tensordot", "mv", "dot", "addmv", "chain_matmul"}
_LOAD_INLINE = "torch.utils.cpp_extension.load_inline"
_SOURCE_KWARGS = ("cpp_sources", "cuda_sources", "sycl_sources")
_FLAG_KWARGS = ("extra_cflags", "extra_cuda_cflags", "extra_sycl_cflags", "extra_ldflags",
                "extra_include_paths")


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _under(q: str, prefixes: Iterable[str]) -> bool:
    return any(q == p or q.startswith(p + ".") for p in prefixes)


# --------------------------------------------------------------------------------------------
# Introspection of the trusted libraries (lazy: importing this module imports no torch)
# --------------------------------------------------------------------------------------------
@functools.cache
def _tensor_methods() -> frozenset[str]:
    import torch

    return frozenset(n for n in dir(torch.Tensor)
                     if not n.startswith("_") and callable(getattr(torch.Tensor, n, None)))


@functools.cache
def _compute_methods() -> frozenset[str]:
    """torch.Tensor methods that compute (everything callable that is not data movement)."""
    return _tensor_methods() - _TENSOR_OK


@functools.cache
def _ambiguous_methods() -> frozenset[str]:
    """Compute methods that lists, dicts, sets and strings also have (flag only on tensors)."""
    py: set[str] = set()
    for t in (list, dict, set, str, bytes, tuple, int, float):
        py.update(n for n in dir(t) if not n.startswith("_"))
    return frozenset(_compute_methods() & py)


@functools.cache
def _aten_names() -> frozenset[str]:
    """Op names ATen exposes as free functions (what ``relu(x)`` finds by ADL in C++)."""
    import torch
    import torch.nn.functional

    def ops(mod: object, prefix: str = "") -> set[str]:
        return {prefix + n for n in dir(mod) if not n.startswith("_") and n.islower()
                and callable(getattr(mod, n, None)) and not isinstance(getattr(mod, n), type)}

    funcs = ops(torch) | ops(torch.nn.functional) | ops(torch._C._nn)
    funcs |= ops(torch.linalg, "linalg_") | ops(torch.special, "special_") | ops(torch.fft, "fft_")
    return frozenset((funcs | _compute_methods()) - _TORCH_OK_CALLS - _TENSOR_OK)


def _root_module(name: str) -> types.ModuleType | None:
    if name not in _ROOTS:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # triton is optional off Linux: fall back to textual names
        return None


@functools.lru_cache(maxsize=4096)
def _canonical(q: str) -> str:
    """Follow module re-exports: ``F.torch._C`` -> ``torch._C``, ``torch.os`` -> ``os``."""
    parts = q.split(".")
    obj = _root_module(parts[0])
    if obj is None:
        return q
    name = parts[0]
    for i, seg in enumerate(parts[1:], 1):
        nxt = vars(obj).get(seg)
        if not isinstance(nxt, types.ModuleType):
            return ".".join([name, *parts[i:]])
        obj, name = nxt, nxt.__name__
    return name


_MISSING = object()


@functools.lru_cache(maxsize=4096)
def _resolve(q: str) -> object:
    """The object a canonical dotted name denotes, without triggering lazy imports."""
    parts = q.split(".")
    obj: object = _root_module(parts[0])
    if obj is None:
        return _MISSING
    for seg in parts[1:]:
        if isinstance(obj, types.ModuleType):
            obj = vars(obj).get(seg, _MISSING)
        elif isinstance(obj, type):
            obj = inspect.getattr_static(obj, seg, _MISSING)
        else:
            return _MISSING
        if obj is _MISSING:
            return _MISSING
    return obj


def _qual_rule(q: str) -> tuple[str, str] | None:
    """The rule a reference to canonical dotted name ``q`` breaks wherever it appears."""
    parts = q.split(".")
    top = parts[0]
    if top not in _ROOTS:
        return "forbidden-import", f"reaches the {top} module ({q})"
    if q not in _PRIVATE_OK and any(p.startswith("_") and not _is_dunder(p) for p in parts[1:]):
        return "internals", f"uses {q}, a private API"
    if _under(q, _FILE_IO):
        return "forbidden-name", (f"uses {q}, which reads files or evaluates code; pass CUDA "
                                  "source strings to load_inline instead")
    if top == "torch" and len(parts) > 1:
        if _under(q, _TORCH_CONCURRENCY):
            return "concurrency", (f"uses {q}: work on side streams, graphs or events escapes "
                                   "timing; launch on the current stream")
        if parts[1] == "utils":
            if len(parts) > 2 and not _under(q, ("torch.utils.cpp_extension",)):
                return "internals", f"uses {q}; only cpp_extension.load_inline is allowed"
            if len(parts) > 3 and q != _LOAD_INLINE:
                return "internals", f"uses {q}; only load_inline is allowed from cpp_extension"
            return None
        if _under(q, _TORCH_INTERNAL) or parts[1].startswith("set_"):
            return "internals", (f"uses {q} (torch internals, compilers or global state); "
                                 "write the kernel yourself")
        if parts[1] == "cuda" and len(parts) > 2 and parts[2] not in _CUDA_OK:
            return "internals", (f"uses {q}; from torch.cuda only {', '.join(sorted(_CUDA_OK))} "
                                 "are allowed")
    if top == "triton" and len(parts) > 1 and not _under(q, _TRITON_OK):
        return "internals", (f"uses {q}; kernels need only triton.jit/autotune/heuristics/Config/"
                             "cdiv/next_power_of_2 and triton.language")
    if top == "functools" and len(parts) > 1 and parts[1] in _FUNCTOOLS_CACHING:
        return "caching", f"uses {q}, which caches results across calls"
    return None


def _torch_call_rule(q: str) -> str | None:
    """Why calling canonical ``q`` in runtime code is a reference call, or None if it is fine."""
    parts = q.split(".")
    if parts[0] != "torch" or len(parts) < 2:
        return None
    if len(parts) == 2 and (parts[1] in _TORCH_OK_CALLS or parts[1] in _TENSOR_OK):
        return None
    if parts[1] in ("cuda", "utils") or q in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
        return None  # allowed or not is _qual_rule's business
    if parts[1] == "Tensor" and len(parts) == 3 and parts[2] in _TENSOR_OK:
        return None
    if parts[1] == "autograd" and len(parts) > 2 and parts[2] == "Function":
        return None
    name = parts[-1]
    if _under(q, ("torch.nn",)) and not _under(q, ("torch.nn.functional",)) and name[:1].isupper():
        return f"builds or runs the torch.nn module {q}; use its weights in your kernel"
    what = "a vendor-library op" if name in _VENDORISH else "a PyTorch op"
    return f"calls {q} ({what}); compute it in your kernel"


def _is_nn_class(q: str) -> bool:
    """torch.nn.Linear, torch.nn.Sequential ... (not functional, init or Parameter)."""
    last = q.split(".")[-1]
    return q.startswith("torch.nn.") and last[:1].isupper() and "Parameter" not in last and \
        not _under(q, ("torch.nn.functional", "torch.nn.init", "torch.nn.utils"))


def _is_compute_ref(q: str) -> bool:
    """True if ``q`` names a torch function or method that computes (for non-call references)."""
    if not q.startswith("torch.") or _torch_call_rule(q) is None:
        return False
    obj = _resolve(q)
    return obj is not _MISSING and callable(obj) and not isinstance(obj, type)


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
    """What the whole file defines: import aliases, classes, kernels, extensions, modules."""

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
        # self attributes / class attributes / globals holding torch.nn modules or tensors
        self.module_attrs: set[str] = set()
        self.module_globals: set[str] = set()
        self.tensor_attrs: set[str] = set()
        self.returns_tensor: set[str] = set()  # filled by _infer
        assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                   and n.value is not None]
        for _ in range(4):
            for n in assigns:
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                assert n.value is not None
                mod, ten = self._builds_module(n.value), self._builds_tensor(n.value)
                at_top = self.enclosing_function(n) is None
                in_class = isinstance(self.parent.get(n), ast.ClassDef)
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and \
                            t.value.id == "self":
                        if mod:
                            self.module_attrs.add(t.attr)
                        if ten:
                            self.tensor_attrs.add(t.attr)
                    elif isinstance(t, ast.Name) and mod and at_top:
                        (self.module_attrs if in_class else self.module_globals).add(t.id)
        for n in ast.walk(tree):  # self.register_buffer("name", t), self.add_module("name", m)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args and \
                    isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
                if n.func.attr in ("register_buffer", "register_parameter"):
                    self.tensor_attrs.add(n.args[0].value)
                elif n.func.attr in ("add_module", "register_module"):
                    self.module_attrs.add(n.args[0].value)
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

    def _builds_module(self, e: ast.expr) -> bool:
        """Does ``e`` evaluate to (a container of) torch.nn modules, or an nn class?"""
        if isinstance(e, (ast.Name, ast.Attribute, ast.Call)):
            q = self.qual(e.func if isinstance(e, ast.Call) else e)
            if q:
                return _is_nn_class(q)
        if isinstance(e, ast.Name):
            return e.id in self.module_globals
        if isinstance(e, ast.Attribute):
            if isinstance(e.value, ast.Name) and e.value.id == "self":
                return e.attr in self.module_attrs
            return e.attr not in _NON_MODULE_ATTRS and self._builds_module(e.value)
        if isinstance(e, ast.Subscript):
            return self._builds_module(e.value)
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            return any(self._builds_module(x) for x in e.elts)
        if isinstance(e, ast.Dict):
            return any(self._builds_module(v) for v in e.values)
        if isinstance(e, ast.IfExp):
            return self._builds_module(e.body) or self._builds_module(e.orelse)
        if isinstance(e, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            return self._builds_module(e.elt)
        return False

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
# Per-function inference: which local names hold tensors, nn modules, persistent state
# --------------------------------------------------------------------------------------------
_FnNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


class _Env:
    """Names of one function (or the module) and what they hold, flow-insensitively."""

    def __init__(self, facts: _Facts, node: ast.AST, kind: str, cls: str | None,
                 outer: _Env | None, param_kinds: dict[str, set[str]]) -> None:
        self.f, self.node, self.kind, self.cls, self.outer = facts, node, kind, cls, outer
        self.tensors: set[str] = set()
        self.containers: set[str] = set()
        self.modules: set[str] = set()
        self.shared: set[str] = set()
        self.exts: set[str] = set()
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
        for p in params:
            if p.arg == self.self_name:
                continue
            kinds = param_kinds.get(p.arg, set())
            ann = ast.unparse(p.annotation) if p.annotation is not None else None
            d = defaults.get(p.arg)
            no_default = d is None or (isinstance(d, ast.Constant) and d.value is None)
            if "tensor" in kinds or (ann is not None and "Tensor" in ann) or (
                    is_forward and ann is None and no_default):
                self.tensors.add(p.arg)
            if "module" in kinds:
                self.modules.add(p.arg)
            if "shared" in kinds or (d is not None and not isinstance(d, ast.Constant)):
                self.shared.add(p.arg)  # a default argument's object persists across calls
        for n in _walk_scope(fn):  # x.shape, x.stride(0) ... : x is a tensor
            if isinstance(n, ast.Attribute) and n.attr in _TENSOR_EVIDENCE and \
                    isinstance(n.value, ast.Name) and n.value.id in self.locals and \
                    n.value.id != self.self_name:
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
        return (len(self.tensors), len(self.containers), len(self.modules), len(self.shared),
                len(self.exts))

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
        if self.is_module(v):
            self.modules.add(t.id)
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
            if e.attr in _MODULE_TENSORS and self.is_module(e.value):
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

    def is_module(self, e: ast.AST) -> bool:
        f = self.f
        if isinstance(e, ast.Name):
            if self.is_local(e.id):
                return self.has(e.id, "modules")
            return e.id in f.module_globals
        if isinstance(e, ast.Attribute):
            if self.is_self(e.value):
                return e.attr in f.module_attrs
            return e.attr not in _NON_MODULE_ATTRS and self.is_module(e.value)
        if isinstance(e, ast.Subscript):
            return self.is_module(e.value)
        if isinstance(e, ast.Call):
            fn = e.func
            if isinstance(fn, ast.Attribute) and fn.attr in _MODULE_ITER:
                return self.is_module(fn.value) or (self.is_self(fn.value) and bool(f.module_attrs))
            if isinstance(fn, ast.Name) and fn.id in _ITER_BUILTINS:
                return any(self.is_module(a) for a in e.args)
            q = f.qual(fn)
            return bool(q and _is_nn_class(q))
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
        for kind, test in (("tensor", env.is_tensor), ("module", env.is_module),
                           ("shared", env.is_shared)):
            if test(arg):
                kinds.setdefault(name, set()).add(kind)


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------
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
        for key in _SOURCE_KWARGS:
            if key not in args:
                continue
            pieces = self._strings(args[key])
            if pieces is None:
                self.add("cuda-dynamic", args[key], f"{key} is not built from string constants; "
                         "pass literals or module-level string constants (no .format/.replace)")
                continue
            for text, line in pieces:
                for rule, offset, msg in scan_source(text, _compute_methods(), _aten_names()):
                    self.add(rule, line + offset, f"(CUDA source) {msg}")
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
        facts = _Facts(tree)
        envs = _infer(facts)
        checker = _Checker(facts, envs)
        checker.visit(tree)
        violations = checker.out
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
