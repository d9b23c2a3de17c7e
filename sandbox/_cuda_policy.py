"""Token-level policy for the C++/CUDA strings a candidate passes to ``load_inline``.

C++ cannot be parsed here, so these checks work on text with comments and string literals
blanked out (offsets and line breaks kept, so every finding has a line). They look for:

* vendor libraries and ATen compute: cuBLAS/cuDNN/cuSPARSE/cuFFT/cuSOLVER/cuTENSOR, device-wide
  CUB/Thrust algorithms, ``at::``/``torch::`` functions other than factories, types and the
  current-stream/device helpers, tensor methods that compute (``.sum(``, ``.matmul(``), ATen ops
  reached by argument-dependent lookup (``relu(x)`` on a ``torch::Tensor``), and arithmetic
  operators applied to ``torch::Tensor`` variables in host functions;
* escapes: process, file, socket and dynamic-linking calls, threads, side streams and CUDA
  graphs, the Python C API and pybind11's ``import``/``eval``, operator registration
  (``TORCH_LIBRARY``), token pasting (``##``, which hides identifiers), and includes of
  OS headers or of paths outside the include search path.

CUTLASS and block-level CUB primitives (``cub::BlockReduce``) are allowed: they are templates
compiled into the candidate's own kernel, not calls into a vendor's kernels. The scan is a
filter, not a proof; the sandbox's process isolation is what contains native code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["Finding", "scan_source", "scan_flags"]

Finding = tuple[str, int, str]  # (rule id, line offset within the scanned text (0-based), message)

_VENDOR = re.compile(r"\b(cublas\w*|cudnn\w*|cusparse\w*|cufft\w*|cusolver\w*|cutensor\w*)",
                     re.IGNORECASE)
_VENDOR_WORDS = ("cublas", "cudnn", "cusparse", "cufft", "cusolver", "cutensor")
_INCLUDE = re.compile(
    r"^[ \t]*#[ \t]*(include|include_next|import|embed)\b[ \t]*([<\"][^>\"\n]*[>\"])?",
    re.MULTILINE)
_UNSAFE_HEADERS = {"unistd.h", "fcntl.h", "dlfcn.h", "fstream", "thread", "future", "pthread.h",
                   "netdb.h", "spawn.h", "signal.h", "csignal", "Python.h", "pybind11/embed.h",
                   "pybind11/eval.h", "filesystem", "stdio_ext.h"}
_UNSAFE_HEADER_DIRS = ("sys/", "netinet/", "arpa/", "linux/", "asm/")
_CXX_LITERALS = re.compile(
    r'//[^\n]*|/\*.*?\*/|R"([^()\\\s]{0,16})\(.*?\)\1"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
    re.DOTALL)

# at::/torch:: names that allocate, describe or locate tensors rather than compute with them.
_ATEN_OK = {
    "Tensor", "TensorOptions", "ScalarType", "Device", "DeviceType", "IntArrayRef", "ArrayRef",
    "Scalar", "Half", "BFloat16", "Float8_e4m3fn", "Float8_e5m2", "Layout", "MemoryFormat", "Dtype",
    "acc_type", "opmath_type", "TensorAccessor", "PackedTensorAccessor32",
    "PackedTensorAccessor64", "GenericPackedTensorAccessor", "RestrictPtrTraits",
    "DefaultPtrTraits", "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "dtype", "device", "elementSize", "toString",
    "typeMetaToScalarType",
    "OptionalCUDAGuard", "CUDAGuard", "DeviceGuard", "OptionalDeviceGuard", "isFloatingType",
}
_ATEN_CUDA_OK = {
    "getCurrentCUDAStream", "getDefaultCUDAStream", "CUDAGuard", "OptionalCUDAGuard",
    "getCurrentDeviceProperties", "getDeviceProperties", "current_device", "device_count",
    "CUDAStream",
}
_ATEN_NS = re.compile(r"\b(at|torch)\s*::\s*((?:\w+\s*::\s*)*)(\w+)")
_C10_BAD = re.compile(r"\b(getStreamFromPool|Dispatcher|findSchema\w*|callBoxed|TORCH_LIBRARY\w*|"
                      r"c10\s*::\s*impl|OperatorHandle|RegisterOperators)\b")
_USING = re.compile(r"\busing\s+namespace\s+(at|torch|c10|thrust|cub)\b|"
                    r"\bnamespace\s+\w+\s*=\s*(at|torch|c10)\b")
_THRUST = re.compile(r"\bthrust\s*::\s*(\w+)\s*(?:<[^<>;(){}]*>\s*)?\(")
_THRUST_OK = {"complex", "pair", "tuple", "make_pair", "make_tuple", "get", "raw_pointer_cast",
              "device_pointer_cast", "plus", "minus", "multiplies", "maximum", "minimum",
              "identity", "abs", "exp", "log", "sqrt", "pow", "norm", "conj", "arg", "polar"}
_CUB_DEVICE = re.compile(r"\bcub\s*::\s*(Device\w+)")
_METHOD = re.compile(r"(?:\.|->)\s*(?:template\s+)?([A-Za-z_]\w*)\s*(?:<[^<>;(){}]*>\s*)?\(")
_CALL = re.compile(r"(?<![\w.:>])([A-Za-z_]\w*)\s*(?:<[^<>;(){}]*>\s*)?\(")
_DEFINE = re.compile(r"#\s*define\s+(\w+)")
_UNSAFE_CALLS = {
    "system", "popen", "dlopen", "dlsym", "dlmopen", "fork", "vfork", "execv", "execve", "execvp",
    "execvpe", "execl", "execle", "execlp", "fopen", "freopen", "fdopen", "socket", "connect",
    "getenv", "secure_getenv", "setenv", "putenv", "syscall", "mmap", "ptrace", "unlink", "chdir",
    "kill", "open", "openat", "read", "write", "pread", "pwrite", "lseek", "dup", "dup2", "ioctl",
    "close", "pthread_create", "posix_spawn", "cudaStreamCreate", "cudaStreamCreateWithFlags",
    "cudaStreamCreateWithPriority", "cudaStreamBeginCapture", "cudaLaunchHostFunc",
    "cudaStreamAddCallback", "cudaDeviceReset", "cudaGetDriverEntryPoint", "cuGetProcAddress",
    "cudaGraphLaunch", "cudaGraphInstantiate", "cudaGraphCreate", "cuStreamCreate",
}
_UNSAFE_IDENTS = re.compile(
    r"\bstd\s*::\s*(thread|jthread|async|ofstream|ifstream|fstream|filesystem|system|getenv)\b|"
    r"\b(Py[A-Z][A-Za-z]*_\w+|PyRun_\w+|Py_\w+|getStreamFromPool|cudaGraph\w*)\b|"
    r"\b(?:py|pybind11)\s*::\s*(eval|exec|eval_file|globals|module_?\s*::\s*import|import)\b|"
    r"\.\s*attr\s*\(|\b__builtin_\w*syscall")
_ASM_ESCAPE = re.compile(r"\bsyscall\b|\bsysenter\b|\bint\s+\$?0x80\b")
_MATH = {
    "abs", "fabs", "exp", "exp2", "exp10", "expm1", "log", "log2", "log10", "log1p", "sqrt",
    "rsqrt", "cbrt", "pow", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh",
    "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "erfcinv", "lgamma", "tgamma",
    "floor", "ceil", "round", "trunc", "rint", "nearbyint", "fmod", "remainder", "fmax", "fmin",
    "fma", "hypot", "copysign", "ldexp", "frexp", "nextafter", "isnan", "isinf", "isfinite",
    "signbit", "max", "min", "norm", "div", "sort", "fill", "equal", "swap", "any", "all",
}
_CXX_KEYWORDS = {
    "return", "else", "case", "throw", "new", "delete", "sizeof", "decltype", "typeid", "alignof",
    "co_return", "co_yield", "co_await", "not", "and", "or", "if", "while", "for", "switch", "do",
    "goto", "operator",
}
_CXX_NOT_TENSOR = {"resize", "data", "size", "index", "values", "sort", "split", "fill", "swap",
                   "type", "wait", "sync", "copy"}
_CXX_TENSOR_RETURNING = {"contiguous", "view", "reshape", "to", "clone", "detach", "transpose",
                         "permute", "t", "flatten", "squeeze", "unsqueeze", "expand", "narrow",
                         "select", "slice", "as_strided", "view_as", "reshape_as", "expand_as",
                         "cuda", "cpu", "float", "half"}
_TENSOR_DECL = re.compile(
    r"\b(?:at|torch)\s*::\s*Tensor\s*(?:const\s*)?[&*]?\s*(?:const\s*)?([A-Za-z_]\w*)")
_BINOPS = r"(?:\+|-(?!>)|\*|/|%|\^|\|\|?|&&?|==|!=|<=|>=|<(?!<)|(?<!-)>(?!>))"
_PREFIX_OPS = r"(?:\+|-|/|%|\^|\||!|~|==|!=|<=|>=|<(?!<)|(?<!-)>(?!>))"


def _blank(m: re.Match[str], keep_strings: bool) -> str:
    text = m.group(0)
    if keep_strings and text[:1] in "\"'R":
        return text
    return re.sub(r"[^\n]", " ", text)


def _strip(text: str, keep_strings: bool) -> str:
    return _CXX_LITERALS.sub(lambda m: _blank(m, keep_strings), text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos)


_DECLARATOR = re.compile(r"\b([A-Za-z_]\w*)[\s*&]+([A-Za-z_]\w*)\s*(?:<[^<>;(){}]*>\s*)?\(")


def _defined_names(code: str) -> set[str]:
    """Names the source itself declares as functions or macros (so calling them is not ADL):
    ``float relu(float v)`` declares relu; ``return relu(x)`` does not."""
    names = set(_DEFINE.findall(code))
    names |= {m.group(2) for m in _DECLARATOR.finditer(code) if m.group(1) not in _CXX_KEYWORDS}
    return names


def _host_tensor_functions(code: str) -> Iterator[tuple[str, int, int]]:
    """(header, body start, body end) of every function whose signature mentions a Tensor."""
    depth, fn_depth, start, header = 0, -1, 0, ""
    last_stop = 0
    for i, ch in enumerate(code):
        if ch == "{":
            if fn_depth < 0:
                head = code[last_stop:i]
                if re.search(r"\)\s*(?:const|noexcept|override|->[^{;]*|\s)*$", head) and \
                        re.search(r"\b(?:at|torch)\s*::\s*Tensor\b", head):
                    fn_depth, start, header = depth, i + 1, head
            depth += 1
            last_stop = i + 1
        elif ch == "}":
            depth -= 1
            last_stop = i + 1
            if depth == fn_depth:
                yield header, start, i
                fn_depth = -1
        elif ch == ";" and fn_depth < 0:
            last_stop = i + 1


def _tensor_operator_findings(code: str, adl_names: set[str]) -> Iterator[tuple[int, str]]:
    for header, start, end in _host_tensor_functions(code):
        body = code[start:end]
        tvars = set(_TENSOR_DECL.findall(header)) | set(_TENSOR_DECL.findall(body))
        factories = "|".join(sorted(n for n in _ATEN_OK if n[:1].islower()))
        views = "|".join(sorted(_CXX_TENSOR_RETURNING))
        for _ in range(4):  # auto y = torch::empty_like(x); auto z = y.contiguous(); ...
            pat = "|".join(map(re.escape, sorted(tvars))) or r"(?!x)x"
            more = set(re.findall(
                rf"\bauto\s*[&*]?\s*([A-Za-z_]\w*)\s*=\s*"
                rf"(?:(?:at|torch)\s*::\s*(?:{factories})\s*\("
                rf"|(?:{pat})\s*(?:;|\.\s*(?:{views})\s*\())", body))
            if more <= tvars:
                break
            tvars |= more
        if not tvars:
            continue
        clean = _TENSOR_DECL.sub(lambda m: " " * (m.start(1) - m.start()) + m.group(1), body)
        names = "|".join(map(re.escape, sorted(tvars)))
        suffix = re.compile(rf"\b({names})\s*({_BINOPS})(?!=?\s*[)\],;])")
        prefix = re.compile(rf"({_PREFIX_OPS}|(?<=[\w)\]])\s*\*)\s*\b({names})\b"
                            r"(?!\s*(?:\.|->|\[|\(|::))")
        adl = re.compile(rf"(?<![\w.:>])([A-Za-z_]\w*)\s*\(\s*({names})\b(?!\s*(?:\.|->|\[))")
        for m in suffix.finditer(clean):
            if m.group(2) == "&":
                continue  # reference declarations
            yield start + m.start(), f"applies `{m.group(2)}` to the tensor `{m.group(1)}`"
        for m in prefix.finditer(clean):
            yield start + m.start(), f"applies `{m.group(1).strip()}` to the tensor `{m.group(2)}`"
        for m in adl.finditer(clean):
            if m.group(1) in adl_names:
                yield start + m.start(), f"calls {m.group(1)}({m.group(2)}) on a tensor (ATen)"


def scan_source(text: str, compute_methods: frozenset[str],
                aten_names: frozenset[str]) -> list[Finding]:
    """Scan one C++/CUDA source string. ``compute_methods`` are torch.Tensor methods that
    compute; ``aten_names`` are op names ATen exposes as free functions."""
    out: list[Finding] = []
    nocomment = _strip(text, keep_strings=True)
    code = _strip(text, keep_strings=False)

    def add(rule: str, pos: int, msg: str) -> None:
        out.append((rule, _line(text, pos), msg))

    for m in _INCLUDE.finditer(nocomment):
        kind, target = m.group(1), (m.group(2) or "")
        path = target.strip('<>"')
        if kind != "include" or not path:
            add("cuda-unsafe", m.start(), f"uses #{kind} {target or '(computed)'}; only #include "
                "of named library headers is allowed")
        elif any(w in path.lower() for w in (*_VENDOR_WORDS, "blas")):
            add("cuda-vendor", m.start(), f"includes {target} (a vendor library); write the "
                "computation in your own kernel")
        elif (path.startswith("/") or ".." in path or path in _UNSAFE_HEADERS
              or path.startswith(_UNSAFE_HEADER_DIRS)):
            add("cuda-unsafe", m.start(), f"includes {target}; kernels need no OS, file, thread "
                "or Python headers")
    if "##" in code:
        add("cuda-unsafe", code.index("##"), "uses token pasting (##), which hides identifiers "
            "from the policy; write names out")
    for m in _ASM_ESCAPE.finditer(nocomment):
        add("cuda-unsafe", m.start(), "contains a system-call instruction")
    seen_vendor: set[str] = set()
    no_includes = _INCLUDE.sub(lambda m: " " * len(m.group(0)), code)
    for m in _VENDOR.finditer(no_includes):
        if m.group(1) not in seen_vendor:
            seen_vendor.add(m.group(1))
            add("cuda-vendor", m.start(), f"uses {m.group(1)} (a vendor library); write the "
                "computation in your own kernel")
    for m in _CUB_DEVICE.finditer(code):
        add("cuda-vendor", m.start(), f"calls cub::{m.group(1)}, a device-wide library algorithm; "
            "block-level CUB primitives are fine")
    for m in _THRUST.finditer(code):
        if m.group(1) not in _THRUST_OK:
            add("cuda-vendor", m.start(), f"calls thrust::{m.group(1)}, a library algorithm; "
                "implement it in your kernel")
    for m in _USING.finditer(code):
        add("cuda-vendor", m.start(), "opens or aliases a library namespace; write at::/torch:: "
            "names out so each call can be checked")
    for m in _ATEN_NS.finditer(code):
        ns = [s.strip() for s in m.group(2).split("::") if s.strip()]
        name = m.group(3)
        if ns and ns[0] == "cuda":
            ok = len(ns) == 1 and name in _ATEN_CUDA_OK
        elif ns:
            ok = ns[0] in _ATEN_OK or ns[0] in ("ScalarType", "DeviceType", "MemoryFormat")
        else:
            ok = name in _ATEN_OK or bool(re.fullmatch(r"k[A-Z]\w*", name))
        if not ok:
            full = "::".join([m.group(1), *ns, name])
            add("cuda-vendor", m.start(), f"calls {full} (ATen/PyTorch does the work); only "
                "allocation (torch::empty...), types and the current stream/device are allowed")
    for m in _C10_BAD.finditer(code):
        add("cuda-unsafe", m.start(), f"uses {m.group(1)} (side streams or operator "
            "registration/dispatch)")
    for m in _METHOD.finditer(code):
        name = m.group(1)
        if name in compute_methods and name not in _CXX_NOT_TENSOR:
            add("cuda-vendor", m.start(), f"calls .{name}() on a tensor (ATen computes it); "
                "compute it in your kernel")
    defined = _defined_names(code)
    for m in _CALL.finditer(code):
        name = m.group(1)
        if name in aten_names and name not in _MATH and name not in defined:
            add("cuda-vendor", m.start(), f"calls {name}(...), which resolves to the ATen op; "
                "compute it in your kernel")
    # names an ADL call on a tensor reaches that the bare-call check above lets through
    adl_names = _MATH | (set(aten_names) & defined)
    for pos, what in _tensor_operator_findings(code, adl_names):
        add("cuda-vendor", pos, f"{what} in host code (ATen computes it); compute it in your "
            "kernel")
    for m in _UNSAFE_IDENTS.finditer(code):
        add("cuda-unsafe", m.start(), f"uses {m.group(0).strip()} (threads, files, processes, "
            "side streams or the Python interpreter)")
    flat = re.sub(r"\bstd\s*::\s*", "", code)
    for m in _CALL.finditer(flat):
        name = m.group(1)
        if name in _UNSAFE_CALLS and name not in defined:
            add("cuda-unsafe", m.start(), f"calls {name}() (processes, files, sockets, dynamic "
                "linking or side streams); kernels need none of these")
    return out


_FLAG_BAD = re.compile(r"^(-L|-Wl,|-Xlinker|-fplugin|-specs|-B|@|-include|-imacros|-ccbin|"
                       r"--compiler-bindir|--linker-options|-Xnvlink|--dependency|-M)")


def scan_flags(flags: Iterable[str], what: str) -> list[tuple[str, str]]:
    """Check compiler/linker flags (``extra_cflags`` ...). Returns (rule, message) pairs."""
    out: list[tuple[str, str]] = []
    for flag in flags:
        f = flag.strip()
        low = f.lower()
        if any(w in low for w in _VENDOR_WORDS):
            out.append(("cuda-vendor", f"{what} names a vendor library ({f}); write the "
                        "computation in your own kernel"))
        elif f.startswith("-l") and f not in ("-lcudart", "-lcuda", "-lineinfo"):
            out.append(("cuda-unsafe", f"{what} links a library ({f}); only -lcudart/-lcuda"))
        elif _FLAG_BAD.match(f):
            out.append(("cuda-unsafe", f"{what} uses {f}, which changes what is linked or read"))
        elif f.startswith("-D") and re.search(r"::|[()\"'#]", f):
            out.append(("cuda-unsafe", f"{what} defines a macro with code ({f}); macros may "
                        "only hold names or numbers"))
    return out
