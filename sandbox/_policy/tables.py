"""What the static policy allows and forbids, and how dotted names resolve."""

from __future__ import annotations

import functools
import importlib
import inspect
import types
from collections.abc import Iterable

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
# Modules a candidate may import. Those in _ROOT_ONLY may be used only through the names
# listed there; the rest through any public name (private names are internals everywhere).
_ROOTS = ("torch", "triton", "math", "typing", "functools", "dataclasses", "logging", "enum",
          "importlib", "operator", "contextlib", "itertools", "collections", "copy", "warnings",
          "packaging", "abc", "numbers", "re")
_ROOT_ONLY: dict[str, tuple[str, ...]] = {
    # optional-dependency probes; import_module / spec_from_file_location load code by name
    "importlib": ("importlib.util", "importlib.util.find_spec", "importlib.metadata",
                  "importlib.metadata.version", "importlib.metadata.PackageNotFoundError"),
    # loggers and levels; FileHandler, handlers, config and basicConfig(filename=) write files
    # (no Handler/Filter/Formatter classes to subclass: they would receive log records)
    "logging": tuple(f"logging.{n}" for n in (
        "getLogger", "Logger", "NullHandler", "StreamHandler", "Formatter", "getLevelName",
        "debug", "info", "warning", "warn", "error", "exception", "critical", "log", "NOTSET",
        "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")),
    "contextlib": tuple(f"contextlib.{n}" for n in (
        "contextmanager", "nullcontext", "ExitStack", "suppress", "AbstractContextManager",
        "ContextDecorator", "closing")),
    "packaging": ("packaging.version", "packaging.version.parse", "packaging.version.Version",
                  "packaging.version.InvalidVersion"),
    # (no catch_warnings: its records name the frames up the stack)
    "warnings": ("warnings.warn", "warnings.simplefilter", "warnings.filterwarnings"),
}
# Attribute names refused on any object. Tensor storages read and share files
# (``x.untyped_storage().from_file(...)``); log records carry the caller's frames and stack
# (a handler, filter or formatter of the candidate's would receive them).
_ESCAPE_ATTRS = {
    "untyped_storage": "forbidden-name", "storage": "forbidden-name",
    "from_file": "forbidden-name", "share_memory_": "forbidden-name",
    "addFilter": "introspection", "filters": "introspection", "handlers": "introspection",
    "findCaller": "introspection", "makeRecord": "introspection", "manager": "introspection",
    "callHandlers": "introspection",
}
# Host compute that is neither a kernel nor an ATen op the trace sees (in runtime code).
_HOST_COMPUTE_ATTRS = {"numpy", "map_", "map2_", "apply_"}
# Log handlers and formatters a logger may be given (the library's own, never a custom one).
_LOG_PLUMBING = {"logging.NullHandler", "logging.StreamHandler", "logging.Formatter"}
# Public names of allowed modules that still evaluate code or look attributes up by string.
_ROOT_DENIED = ("operator.attrgetter", "operator.methodcaller", "dataclasses.make_dataclass")
_THREAD_MODULES = {"threading", "_thread", "multiprocessing", "concurrent", "asyncio", "queue",
                   "sched", "selectors"}
_FORBIDDEN_BUILTINS = {"__import__", "eval", "exec", "compile", "open", "globals", "locals",
                       "vars", "getattr", "setattr", "delattr", "breakpoint", "input",
                       "__builtins__", "memoryview", "dir", "exit", "quit", "help"}
_DUNDER_NAMES_OK = {"__name__", "__all__", "__slots__"}
# Protocol methods a class may define: none of them runs behind the harness's back (no
# attribute hooks, finalizers, pickling, torch-function hooks or class-creation hooks).
_DUNDER_DEFS_OK = {"__init__", "__repr__", "__str__", "__post_init__", "__call__", "__getitem__",
                   "__len__", "__iter__", "__next__", "__contains__", "__enter__", "__exit__",
                   "__eq__", "__ne__", "__hash__", "__lt__", "__le__", "__gt__", "__ge__",
                   "__bool__"}
# Dunder attributes that may be read: names, versions and the protocol methods above. The
# escape routes (__class__, __globals__, __dict__, __subclasses__, __code__ ...) stay closed.
_DUNDER_READ_OK = _DUNDER_DEFS_OK | {"__name__", "__qualname__", "__doc__", "__module__",
                                     "__version__"}
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
                   "torch.nn.modules.module", "torch.monitor", "torch.onnx", "torch.vmap",
                   "torch.cond")
_FILE_IO = ("torch.load", "torch.save", "torch.from_file", "torch.serialization",
            "torch.utils.cpp_extension.load", "typing.get_type_hints", "typing.ForwardRef",
            "functools.singledispatch", "functools.singledispatchmethod")
# Read-only device probes, the same for every device module (torch.cuda, torch.xpu, ...).
_CUDA_OK = {"current_device", "is_available", "get_device_properties", "device_count",
            "synchronize", "current_stream", "default_stream", "device", "get_device_name",
            "get_device_capability", "is_bf16_supported", "is_tf32_supported", "OutOfMemoryError",
            "is_initialized", "get_arch_list", "device_of", "current_device_index",
            "current_device_idx", "current_accelerator"}
_DEVICE_MODULES = ("cuda", "xpu", "npu", "mps", "cpu", "accelerator", "musa", "mlu", "hpu")
# autocast decorators for autograd Functions (they cast inputs only under autocast); probes
_TORCH_OK_NAMES = ("torch.amp.custom_fwd", "torch.amp.custom_bwd", "torch.cuda.amp.custom_fwd",
                   "torch.cuda.amp.custom_bwd", "torch.backends.cuda.is_built",
                   "torch.backends.mps.is_available", "torch.backends.mps.is_built",
                   "torch.jit.is_scripting", "torch.jit.is_tracing")
# Precision flags a kernel may read to pick its own precision (tl.dot's input_precision, as
# Inductor does). Reads only: writing them changes what the reference and the baselines are
# held to, so an assignment (or setattr, or del) stays an ``internals`` violation.
_TORCH_READ_ONLY = frozenset((
    "torch.backends.cuda.matmul.allow_tf32",
    "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction",
    "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction",
    "torch.backends.cuda.matmul.fp32_precision", "torch.backends.cudnn.allow_tf32",
    "torch.backends.cudnn.fp32_precision"))
# Scoped mode switches, allowed only as the context expression of a ``with`` item (autocast
# also as a function decorator, which enters it around each call): they change only the
# PyTorch ops run inside the block. Anywhere else (called bare, kept as a value, entered by
# hand) they stay ``internals``, like the global setters (``torch.set_autocast_enabled``).
# set_grad_enabled switches the mode when constructed, so it is never a decorator.
_TORCH_SCOPED = frozenset(("torch.set_grad_enabled", "torch.autocast", "torch.amp.autocast",
                           "torch.cuda.amp.autocast", "torch.cpu.amp.autocast"))
_TRITON_OK = ("triton.jit", "triton.autotune", "triton.Config", "triton.heuristics", "triton.cdiv",
              "triton.next_power_of_2", "triton.language", "triton.runtime.driver",
              "triton.reinterpret", "triton.constexpr_function", "triton.JITFunction",
              "triton.KernelInterface", "triton.OutOfResources", "triton.CompilationError",
              "triton.TritonError", "triton.must_use_result", "triton.__version__",
              # host-side TMA descriptors (tutorials 06/09, since block pointers went away)
              "triton.tools.tensor_descriptor.TensorDescriptor",
              # the function Triton's launcher calls for a kernel's global scratch (device-side
              # tl.make_tensor_descriptor); it runs in the candidate's frame, traced as forward
              "triton.set_allocator")
# Launch wrappers and their base classes (exact names: the modules hold caches and builders).
_TRITON_EXACT = {"triton.runtime", "triton.runtime.Autotuner", "triton.runtime.Heuristics",
                 "triton.runtime.Config", "triton.runtime.KernelInterface",
                 "triton.runtime.JITFunction", "triton.runtime.OutOfResources",
                 "triton.runtime.autotuner", "triton.runtime.autotuner.Autotuner",
                 "triton.runtime.autotuner.Heuristics", "triton.runtime.autotuner.Config",
                 "triton.runtime.autotuner.autotune", "triton.runtime.autotuner.heuristics",
                 "triton.runtime.jit", "triton.runtime.jit.JITFunction",
                 "triton.runtime.jit.KernelInterface", "triton.runtime.jit.jit",
                 "triton.runtime.errors", "triton.runtime.errors.OutOfResources",
                 "triton.tools.tensor_descriptor"}
# Triton classes a candidate's launch wrapper may subclass.
_TRITON_BASES = {"triton.KernelInterface", "triton.runtime.KernelInterface",
                 "triton.runtime.jit.KernelInterface", "triton.runtime.Autotuner",
                 "triton.runtime.autotuner.Autotuner", "triton.runtime.Heuristics",
                 "triton.runtime.autotuner.Heuristics"}
_FUNCTOOLS_CACHING = {"lru_cache", "cache", "cached_property"}
_PRIVATE_OK = {"torch.nn.init._calculate_fan_in_and_fan_out",  # nn.Linear's reset_parameters
               "torch.nn.init._calculate_correct_fan"}
# Private methods that may be called (never read as values or assigned) on any object:
# Triton's CompiledKernel._init_handles loads a warmed-up kernel so that n_regs/n_spills can be
# read (tutorial 02, fused softmax); Triton calls it itself at the first launch.
_PRIVATE_CALLS_OK = {"_init_handles"}
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
    if top in _ROOT_ONLY and len(parts) > 1 and q not in _ROOT_ONLY[top]:
        if top == "importlib":
            return "forbidden-import", (f"uses {q}, which imports or loads code by name; write "
                                        "an import statement (guard optional ones with "
                                        "try/except ImportError or importlib.util.find_spec)")
        return "forbidden-name", (f"uses {q}; from {top} only "
                                  f"{', '.join(n.split('.', 1)[1] for n in _ROOT_ONLY[top])} "
                                  "are allowed (nothing that writes files or runs code)")
    if _under(q, _ROOT_DENIED):
        return "forbidden-name", (f"uses {q}, which looks attributes up by string; write a "
                                  "lambda or a def instead")
    if top == "torch" and len(parts) > 1:
        if q in _TORCH_OK_NAMES or q in _TORCH_READ_ONLY:
            return None  # (the checker refuses writes to _TORCH_READ_ONLY)
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
        if parts[1] in _DEVICE_MODULES and len(parts) > 2 and parts[2] not in _CUDA_OK:
            return "internals", (f"uses {q}; from torch.{parts[1]} only the device probes "
                                 f"{', '.join(sorted(_CUDA_OK))} are allowed")
    if top == "triton" and len(parts) > 1 and q not in _TRITON_EXACT and \
            not _under(q, _TRITON_OK):
        return "internals", (f"uses {q}; kernels need only triton.jit/autotune/heuristics/Config/"
                             "cdiv/next_power_of_2, triton.language, "
                             "triton.tools.tensor_descriptor.TensorDescriptor, "
                             "triton.set_allocator, and for launch wrappers "
                             "triton.KernelInterface / triton.runtime.Autotuner")
    return None


def _import_rule(name: str) -> tuple[str, str] | None:
    """The rule ``import name`` (or ``from name import ...``) breaks, if any."""
    if name == "__future__":
        return None
    top = name.split(".")[0]
    if top in _THREAD_MODULES:
        return "concurrency", (f"imports {name}: threads and processes hide work from timing; "
                               "do all work in your kernel on the current stream")
    if top not in _ROOTS:
        return "forbidden-import", (
            f"imports {name}; candidates may import torch, triton and the standard modules "
            f"{', '.join(r for r in _ROOTS if r not in ('torch', 'triton'))} (no os, sys, "
            "subprocess, socket, ctypes, pickle, inspect, gc, numpy ...)")
    return _qual_rule(_canonical(name))


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


def _is_compute_ref(q: str) -> bool:
    """True if ``q`` names a torch function or method that computes (for non-call references)."""
    if not q.startswith("torch.") or _torch_call_rule(q) is None:
        return False
    obj = _resolve(q)
    return obj is not _MISSING and callable(obj) and not isinstance(obj, type)


