"""Make Triton's CPU interpreter run real kernel code the way the GPU does.

Called once by the sandbox child on CPU runs (``TRITON_INTERPRET=1``), before the candidate is
imported; never in the orchestrator, never on GPU runs. :func:`install` applies each fix below
that this Triton version's internals allow (each checks what it patches and is skipped, never
half-applied, if they differ; none is tried before Triton 3.0):

* **autotune** -- there is no driver to benchmark configs with: every config ties, the first
  is kept (all a correctness check needs), and the on-disk tuning cache is bypassed.
* **scalar arguments** -- a Python ``float`` kernel argument becomes an fp32 scalar tensor as
  on the GPU (``eps.to(tl.float32)`` works; ``x_bf16 * eps`` promotes to fp32), and a scalar
  tensor serves as a Python int (``range(pid, n, step)``) under NumPy 2 on older Triton.
* **bf16 arithmetic** -- the interpreter keeps bf16 as raw ``uint16`` bit patterns, and its
  arithmetic, comparisons, math, ``tl.dot``, ``tl.sum``/``tl.cumsum``/argmax ran on the bits
  (triton-lang/triton#11584). bf16 operands are widened to fp32 (exact) and results rounded
  back to nearest-even; casts to bf16 from fp32, ints or fp64 round to nearest-even.
  (fp16 already computes natively in numpy.)
* **libdevice** -- ``triton.language.extra.libdevice`` is a stub module the GPU compiler swaps
  for CUDA's; here it (and ``triton.language.extra.cuda.libdevice``) dispatches through
  CUDA's own signature tables to numpy/torch implementations of the ``__nv_*`` functions
  (rsqrt, sqrt, tanh, erf, exp, exp2, log, log2, pow, the ``fast_*`` variants, rounding-mode
  arithmetic and conversions, ...). Functions CUDA lacks fail as they do on the GPU.
* **reductions and NaN** -- argmax/argmin combine pairwise in index order with the GPU's rule
  (NaN never compares greater or equal), so an all-NaN row gives an index instead of raising;
  ``tl.max``/``tl.min`` ignore NaN unless every element is NaN (``maxnum``, as on the GPU).
* **``and`` / ``or`` / ``not`` on tensors** -- Python's operators would take a tensor's truth
  value (always true) and silently drop a mask; they become elementwise ``logical_and`` /
  ``logical_or`` / ``not_`` as the GPU compiler makes them, still short-circuiting on
  compile-time values (``HAS_BIAS and tl.load(b)``).
* **constexpr op tensor** -- ``C * x`` with a module-level ``C = tl.constexpr(...)`` on the
  left made a constexpr wrapping the tensor, which the next ``tl`` call could not convert;
  the tensor's own (reflected) operator now handles it, as the GPU compiler does.
* **``.value``** -- constexpr arguments arrive as plain values here, so ``DTYPE.value`` /
  ``BLOCK.value`` (a constexpr's value on the GPU) returns the value itself.
* **CUDA device queries** -- ``torch.cuda.device(...)`` / ``device_of`` become no-op context
  managers (there is no current CUDA device to switch; CPU tensors run where they are),
  ``torch.cuda.synchronize`` a no-op (CPU work is synchronous), and ``get_device_properties``,
  ``get_device_capability``, ``get_device_name``, ``current_device`` and Triton's
  ``driver.active`` describe one virtual device: sm_80, a warp of 32, one multiprocessor per
  CPU core. Code that branches on the architecture is checked on its sm_80 path.

What still cannot run here is recognised by :func:`unsupported`, which the child reports as
``cannot be checked on CPU: <what>`` (status ``unsupported``), never as a kernel fault.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = ["install", "unsupported", "InterpreterGap", "APPLIED", "SKIPPED"]

APPLIED: list[str] = []  # names of the fixes install() applied
SKIPPED: dict[str, str] = {}  # fix -> why it was skipped


class InterpreterGap(NotImplementedError):
    """Raised where the interpreter cannot run something a GPU would (no CPU emulation)."""


def install() -> None:
    """Apply every fix this Triton allows; only in an interpreter (CPU) child, only once."""
    if os.environ.get("TRITON_INTERPRET") != "1" or APPLIED or SKIPPED:
        return
    try:
        import triton

        version = tuple(int(p) for p in re.findall(r"\d+", triton.__version__)[:2])
    except Exception as e:  # noqa: BLE001 - no usable Triton: nothing to fix
        SKIPPED["all"] = f"triton unavailable: {e!r}"
        version = (0, 0)
    fixes: list[tuple[str, Callable[[], None]]] = [("cuda_device", _cuda_device)]
    if version >= (3, 0):
        fixes = [("autotune", _autotune), ("float_args", _float_args), ("bf16", _bf16),
                 ("libdevice", _libdevice), ("reductions", _reductions),
                 ("constexpr_ops", _constexpr_ops), ("aliases", _aliases),
                 ("warmup", _warmup), ("ast", _ast), ("driver", _driver), *fixes]
    elif "all" not in SKIPPED:
        SKIPPED["triton"] = f"Triton {triton.__version__} predates the 3.x interpreter"
    for name, fix in fixes:
        try:
            fix()
            APPLIED.append(name)
        except _Differ as e:
            SKIPPED[name] = str(e)
        except Exception as e:  # noqa: BLE001 - a fix that cannot apply is skipped, never fatal
            SKIPPED[name] = repr(e)


class _Differ(Exception):
    """This Triton's internals are not the ones a fix was written against."""


def _need(obj: Any, *names: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise _Differ(f"{getattr(obj, '__name__', obj)} lacks {missing}")


def _interp() -> Any:
    from triton.runtime import interpreter

    _need(interpreter, "InterpreterBuilder", "TensorHandle", "interpreter_semantic",
          "_get_np_dtype")
    return interpreter


# ------------------------------------------------------------------------------------------
# autotune
# ------------------------------------------------------------------------------------------
def _autotune() -> None:
    from triton.runtime.autotuner import Autotuner

    _need(Autotuner, "do_bench")
    Autotuner.do_bench = property(lambda self: lambda fn, quantiles=None, **kw: [1.0, 1.0, 1.0])
    if hasattr(Autotuner, "check_disk_cache"):  # keys its cache by the GPU target
        def check_disk_cache(self: Any, tuning_key: Any, configs: Any, bench_fn: Any) -> bool:
            bench_fn()
            return False

        Autotuner.check_disk_cache = check_disk_cache


# ------------------------------------------------------------------------------------------
# float arguments
# ------------------------------------------------------------------------------------------
def _float_args() -> None:
    import numpy as np
    import triton.language as tl

    interp = _interp()
    _need(interp, "_implicit_cvt")
    convert = interp._implicit_cvt
    handle = interp.TensorHandle

    def _implicit_cvt(arg: Any) -> Any:
        if isinstance(arg, float):  # the GPU passes every float argument as fp32
            return tl.tensor(handle(np.array([arg], dtype=np.float32), tl.float32), tl.float32)
        return convert(arg)

    interp._implicit_cvt = _implicit_cvt  # GridExecutor and tuples look it up at call time

    if hasattr(interp, "_patch_lang_tensor"):  # Triton < 3.7: int() of a 1-element array,
        patch_tensor = interp._patch_lang_tensor  # which NumPy 2 refuses (range(pid, n, step))

        def _patch_lang_tensor(tensor: Any, scope: Any) -> None:
            patch_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__",
                           lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

        interp._patch_lang_tensor = _patch_lang_tensor


# ------------------------------------------------------------------------------------------
# bf16
# ------------------------------------------------------------------------------------------
_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
           "lshift", "rshift", "lt", "le", "gt", "ge")


def _constexpr_ops() -> None:
    """``constexpr <op> tensor`` defers to the tensor's reflected operator."""
    import triton.language as tl

    for name in _BINARY:
        dunder = f"__{name}__"
        orig = getattr(tl.constexpr, dunder, None)
        if orig is None:
            continue

        def op(self: Any, other: Any, _orig: Any = orig) -> Any:
            if isinstance(other, tl.tensor):
                return NotImplemented
            return _orig(self, other)

        setattr(tl.constexpr, dunder, op)


class _Globals:
    """A kernel's module globals as attributes, so that the interpreter's patch scope can
    replace one and put it back."""

    def __init__(self, d: dict[str, Any]) -> None:
        object.__setattr__(self, "_d", d)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._d[name] = value

    def __delattr__(self, name: str) -> None:
        del self._d[name]


def _aliases() -> None:
    """A builtin of ``triton.language`` kept under another global name (Unsloth's
    ``triton_cast = tl.cast``) is patched for the interpreter like the module's own member;
    the compiler accepts the alias, and the interpreter called it unpatched ("Did you forget
    to add @triton.jit ?")."""
    import triton.language as tl
    from triton.runtime import interpreter as it

    orig = getattr(it, "_patch_lang", None)
    patch_attr = getattr(it, "_patch_attr", None)
    is_builtin = getattr(tl.core, "is_builtin", None)
    if orig is None or patch_attr is None or is_builtin is None:
        raise _Differ("no _patch_lang/_patch_attr/is_builtin in this Triton's interpreter")

    def patch_lang(fn: Any) -> Any:
        scope = orig(fn)
        glob = fn.__globals__
        aliases = [(k, v) for k, v in glob.items() if is_builtin(v)]
        if aliases:
            proxy = _Globals(glob)
            for name, member in aliases:
                patch_attr(proxy, name, member, it.interpreter_builder, scope)
        return scope

    it._patch_lang = patch_lang


class _NotCompiled:
    """What ``kernel.warmup(...)`` gives in the interpreter (Triton returns None): nothing
    was compiled, so the registers, shared memory or binary a GPU's compiled kernel reports
    (Triton's tutorial 02 reads ``n_regs`` to size its grid) do not exist on CPU."""

    def __getattr__(self, name: str) -> Any:
        raise InterpreterGap(f"the compiled kernel's {name} (from JITFunction.warmup) exists "
                             "only on a GPU: Triton's interpreter compiles nothing")


def _warmup() -> None:
    from triton.runtime import interpreter as it

    cls = getattr(it, "InterpretedFunction", None)
    orig = getattr(cls, "warmup", None)
    if orig is None:
        raise _Differ("no InterpretedFunction.warmup in this Triton")

    def warmup(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = orig(self, *args, **kwargs)
        return _NotCompiled() if out is None else out

    cls.warmup = warmup


def _widen(bits: Any) -> Any:
    """bf16 bit patterns (uint16) -> float32 values, exactly."""
    import numpy as np

    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _narrow(values: Any) -> Any:
    """float32 values -> bf16 bit patterns, rounded to nearest-even; NaN stays a quiet NaN."""
    import numpy as np

    x = np.asarray(values, dtype=np.float32)
    b = x.view(np.uint32)
    rounded = ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    quiet = ((b >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return np.where(np.isnan(x), quiet, rounded)


def _bf16() -> None:
    import numpy as np
    import triton.language as tl

    interp = _interp()
    builder = interp.InterpreterBuilder
    _need(builder, "binary_op", "unary_op", "ternary_op", "create_fma", "cast_impl",
          "create_fp_to_fp", "create_dot")
    handle, bf16, f32 = interp.TensorHandle, tl.bfloat16, tl.float32
    binary, unary, ternary = builder.binary_op, builder.unary_op, builder.ternary_op
    fma, cast, fp_to_fp, dot = (builder.create_fma, builder.cast_impl, builder.create_fp_to_fp,
                                builder.create_dot)

    def is_bf16(h: Any) -> bool:
        return getattr(h.dtype, "scalar", None) == bf16

    def wide(h: Any) -> Any:
        return handle(_widen(h.data), f32) if is_bf16(h) else h

    def back(out: Any, ty: Any) -> Any:
        out = np.asarray(out)
        if out.dtype == np.bool_:  # a comparison: its handle is a mask, not bf16 bits
            return handle(out, tl.int1)
        return handle(_narrow(out) if out.dtype == np.float32 else out, ty)

    def binary_op(self: Any, lhs: Any, rhs: Any, op: Any) -> Any:
        if is_bf16(lhs) or is_bf16(rhs):
            return back(op(wide(lhs).data, wide(rhs).data), lhs.dtype.scalar)
        return binary(self, lhs, rhs, op)

    def unary_op(self: Any, arg: Any, op: Any) -> Any:
        if is_bf16(arg):
            return back(op(wide(arg).data), arg.dtype.scalar)
        return unary(self, arg, op)

    def ternary_op(self: Any, lhs: Any, rhs: Any, other: Any, op: Any) -> Any:
        if op is not np.where and any(is_bf16(h) for h in (lhs, rhs, other)):
            return back(op(wide(lhs).data, wide(rhs).data, wide(other).data), other.dtype.scalar)
        return ternary(self, lhs, rhs, other, op)

    def create_fma(self: Any, x: Any, y: Any, z: Any) -> Any:
        if is_bf16(z) or np.asarray(z.data).dtype == np.float16:
            # as the GPU: the product of 16-bit values is exact in fp32, the sum rounds in
            # fp32, then once more to the 16-bit type
            a, b, c = (np.asarray(wide(h).data, dtype=np.float32) for h in (x, y, z))
            out = np.add(np.multiply(a, b), c, dtype=np.float32)
            return back(out, bf16) if is_bf16(z) else handle(out.astype(np.float16),
                                                              z.dtype.scalar)
        return fma(self, x, y, z)

    def cast_impl(self: Any, src: Any, ty: Any) -> Any:
        s, d = src.dtype.scalar, ty.scalar
        if np.asarray(src.data).dtype == np.bool_:  # masks may carry their operands' dtype
            s = tl.int1
        if d == bf16 and s != bf16 and s.is_floating() or d == bf16 and s.is_int():
            return handle(_narrow(np.asarray(src.data).astype(np.float32)), bf16)
        if s == bf16 and d != bf16 and (d.is_floating() or d.is_int()):
            return handle(_widen(src.data).astype(interp._get_np_dtype(ty)), d)
        return cast(self, src, ty)

    def create_fp_to_fp(self: Any, src: Any, ty: Any, rounding: Any) -> Any:
        if src.dtype.scalar == f32 and ty.scalar == bf16 and "RTZ" not in str(rounding):
            return handle(_narrow(src.data), bf16)
        return fp_to_fp(self, src, ty, rounding)

    def create_dot(self: Any, a: Any, b: Any, d: Any, *rest: Any) -> Any:
        return dot(self, wide(a), wide(b), d, *rest)  # bf16 products are exact in fp32

    builder.binary_op = binary_op
    builder.unary_op = unary_op
    builder.ternary_op = ternary_op
    builder.create_fma = create_fma
    builder.cast_impl = cast_impl
    builder.create_fp_to_fp = create_fp_to_fp
    builder.create_dot = create_dot
    if not hasattr(builder, "get_bf16"):  # Triton < 3.7 cannot make a bf16 constant
        builder.get_bf16 = lambda self, value: self.cast_impl(self.get_fp32(value), bf16)


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------
def _arg_reduce(cmp: Any, vals: Any, axis: int | None, keep_dims: bool,
                is_max: bool) -> tuple[Any, Any]:
    """(values, int32 indices) of argmax/argmin along ``axis``: adjacent pairs combined
    level by level, lower indices on the left, with Triton's combine rule (a strict
    comparison, ties to the lower index, NaN never winning as the left operand)."""
    import numpy as np

    shape = cmp.shape
    if axis is None:
        cmp, vals, ax = cmp.reshape(-1), vals.reshape(-1), 0
    else:
        ax = axis
    v, o = np.moveaxis(cmp, ax, -1), np.moveaxis(vals, ax, -1)
    i = np.broadcast_to(np.arange(v.shape[-1], dtype=np.int32), v.shape)
    while v.shape[-1] > 1:
        n = v.shape[-1] // 2 * 2
        a, b, ia, ib, oa, ob = v[..., 0:n:2], v[..., 1:n:2], i[..., 0:n:2], i[..., 1:n:2], \
            o[..., 0:n:2], o[..., 1:n:2]
        with np.errstate(invalid="ignore"):
            left = (a > b) if is_max else (a < b)
            left |= (a == b) & (ia < ib)
        rest = (v[..., n:], i[..., n:], o[..., n:])
        v = np.concatenate([np.where(left, a, b), rest[0]], axis=-1)
        i = np.concatenate([np.where(left, ia, ib), rest[1]], axis=-1)
        o = np.concatenate([np.where(left, oa, ob), rest[2]], axis=-1)
    val, idx = o[..., 0], i[..., 0]
    if keep_dims:
        if axis is None:
            val, idx = val.reshape((1,) * len(shape)), idx.reshape((1,) * len(shape))
        else:
            val, idx = np.expand_dims(val, axis), np.expand_dims(idx, axis)
    return val, idx


def _reductions() -> None:
    import numpy as np
    import triton.language as tl

    interp = _interp()
    _need(interp, "ReduceOps", "ScanOps")
    reduce_ops, scan_ops = interp.ReduceOps, interp.ScanOps
    _need(reduce_ops, "apply_impl", "to_tensor")
    _need(scan_ops, "cumsum", "cumprod")
    std = tl.standard
    _need(std, "_argmax_combine_tie_break_left", "_argmax_combine_tie_break_fast",
          "_argmin_combine_tie_break_left", "_argmin_combine_tie_break_fast",
          "_elementwise_max", "_elementwise_min", "_sum_combine")
    argmax = (std._argmax_combine_tie_break_left, std._argmax_combine_tie_break_fast)
    argmin = (std._argmin_combine_tie_break_left, std._argmin_combine_tie_break_fast)
    apply_impl, cumsum, cumprod = reduce_ops.apply_impl, scan_ops.cumsum, scan_ops.cumprod
    bf16 = tl.bfloat16

    def data(x: Any) -> Any:
        return _widen(x.handle.data) if x.dtype == bf16 else x.handle.data

    def result(self: Any, out: Any, dtype: Any) -> Any:
        if dtype == bf16 and np.asarray(out).dtype == np.float32:
            out = _narrow(out)
        return self.to_tensor(out, dtype)

    def new_apply_impl(self: Any, input: Any) -> Any:
        fn, x = self.combine_fn, input[0]
        if fn in argmax or fn in argmin:
            val, idx = _arg_reduce(data(x), x.handle.data, self.axis, self.keep_dims,
                                   is_max=fn in argmax)
            return self.to_tensor(val, x.dtype), self.to_tensor(idx, tl.int32)
        if fn is std._elementwise_max or fn is std._elementwise_min:
            op = np.fmax if fn is std._elementwise_max else np.fmin  # maxnum / minnum
            return result(self, op.reduce(data(x), axis=self.axis, keepdims=self.keep_dims),
                          x.dtype)
        if fn is std._sum_combine and x.dtype == bf16:
            return result(self, np.sum(data(x), axis=self.axis, keepdims=self.keep_dims,
                                       dtype=np.float32), x.dtype)
        return apply_impl(self, input)

    def scan(orig: Any, op: Any) -> Any:
        def run(self: Any, input: Any) -> Any:
            if input.dtype == bf16:
                return [result(self, op(data(input), axis=self.axis), input.dtype)]
            return orig(self, input)
        return run

    reduce_ops.apply_impl = new_apply_impl
    scan_ops.cumsum = scan(cumsum, np.cumsum)
    scan_ops.cumprod = scan(cumprod, np.cumprod)


# ------------------------------------------------------------------------------------------
# `and` / `or` / `not` on tensors, and `.value`
# ------------------------------------------------------------------------------------------
def _is_dynamic(v: Any) -> bool:
    import triton.language as tl

    return isinstance(v, tl.core.base_value) and not isinstance(v, (tl.constexpr, tl.tuple))


class _BoolChain:
    """One evaluation of ``a and b and ...`` (or ``or``) with the GPU compiler's semantics:
    compile-time operands short-circuit, tensors combine elementwise."""

    def __init__(self, op: str) -> None:
        self.op, self.tensors, self.stop, self.last = op, [], None, None
        self.stopped = False

    def step(self, value: Any) -> bool:
        """True to evaluate the next operand."""
        self.last = value
        decides = self.op == "or"  # a false operand decides `and`, a true one `or`
        if _is_dynamic(value):
            self.tensors.append(value)
            # A scalar that decides ends the chain (its value is combined all the same), so
            # that `pid < n and tl.load(p)` loads nothing for an idle program, as before.
            scalar = hasattr(value, "type") and not value.type.is_block() and \
                getattr(getattr(value, "handle", None), "data", None) is not None
            return not (scalar and bool(value.handle.data.reshape(-1)[0]) == decides)
        if bool(value) == decides:  # a compile-time value decides: it is the result
            self.stop, self.stopped = value, True
            return False
        return True

    def result(self, _: Any = None) -> Any:
        if self.stopped:
            return self.stop
        if not self.tensors:
            return self.last
        from triton.runtime.interpreter import interpreter_semantic as sem

        combine = sem.logical_and if self.op == "and" else sem.logical_or
        values = list(self.tensors)
        while len(values) >= 2:
            rhs, lhs = values.pop(), values.pop()
            values.append(combine(sem.to_tensor(lhs), sem.to_tensor(rhs)))
        return values[0]


def _kbench_range(*args: Any, step: Any = None, **_: Any) -> Any:
    """A loop over ``range`` / ``tl.range`` in a kernel: on the GPU its induction variable is
    an int32 tensor (``b.to(tl.int64)`` works), not a Python int. ``tl.static_range`` keeps
    Python ints, as it unrolls at compile time."""
    import operator

    import numpy as np
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    def plain(v: Any) -> int:
        return operator.index(v.value if isinstance(v, tl.constexpr) else v)

    bounds = [plain(a) for a in args] + ([plain(step)] if step is not None else [])
    for v in range(*bounds):
        yield tl.tensor(TensorHandle(np.array([v], dtype=np.int32), tl.int32), tl.int32)


def _kbench_not(value: Any) -> Any:
    if _is_dynamic(value):
        from triton.runtime.interpreter import interpreter_semantic as sem

        return sem.not_(value)
    return not value


def _kbench_value(obj: Any) -> Any:
    """``x.value``: a constexpr's value on the GPU; constexprs arrive unwrapped here."""
    import triton.language as tl

    try:
        return obj.value
    except AttributeError:
        if obj is None or isinstance(obj, (bool, int, float, str, tl.dtype)):
            return obj
        raise


class _Rewrites(ast.NodeTransformer):
    """The rewrites kbench adds to the interpreter's own (each is idempotent)."""

    count = 0

    def visit_For(self, node: ast.For) -> Any:
        node = self.generic_visit(node)
        it = node.iter
        if isinstance(it, ast.Call) and (
                (isinstance(it.func, ast.Name) and it.func.id == "range")
                or (isinstance(it.func, ast.Attribute) and it.func.attr == "range")):
            node.iter = ast.copy_location(ast.Call(
                func=ast.Name(id="_kbench_range", ctx=ast.Load()), args=it.args,
                keywords=it.keywords), it)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        node = self.generic_visit(node)
        if getattr(node, "_kbench", False):  # the steps of a chain made here
            return node
        _Rewrites.count += 1
        name = f"_kbench_chain_{_Rewrites.count}"
        op = "and" if isinstance(node.op, ast.And) else "or"
        chain = ast.NamedExpr(target=ast.Name(id=name, ctx=ast.Store()), value=ast.Call(
            func=ast.Name(id="_kbench_BoolChain", ctx=ast.Load()),
            args=[ast.Constant(value=op)], keywords=[]))
        steps = ast.BoolOp(op=ast.And(), values=[ast.Call(
            func=ast.Attribute(value=ast.Name(id=name, ctx=ast.Load()), attr="step",
                               ctx=ast.Load()), args=[v], keywords=[]) for v in node.values])
        steps._kbench = True  # type: ignore[attr-defined]
        # chain.result(<steps>): the walrus binds the chain before the steps run
        call = ast.Call(func=ast.Attribute(value=chain, attr="result", ctx=ast.Load()),
                        args=[steps], keywords=[])
        return ast.copy_location(call, node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        node = self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.copy_location(ast.Call(
                func=ast.Name(id="_kbench_not", ctx=ast.Load()), args=[node.operand],
                keywords=[]), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        node = self.generic_visit(node)
        if node.attr == "value" and isinstance(node.ctx, ast.Load):
            return ast.copy_location(ast.Call(
                func=ast.Name(id="_kbench_value", ctx=ast.Load()), args=[node.value],
                keywords=[]), node)
        return node


def _rewriter(base: type) -> type:
    class Rewriter(_Rewrites, base):  # type: ignore[misc, valid-type]
        def visit_Assign(self, node: ast.Assign) -> Any:
            # Triton < 3.7 does not visit an assignment's value: rewrite it here, then let
            # the interpreter's own transformer wrap it
            node.value = _Rewrites().visit(node.value)
            return base.visit_Assign(self, node)

    return Rewriter


def _ast() -> None:
    interp = _interp()
    _need(interp, "ASTTransformer", "FunctionRewriter")
    _need(interp.FunctionRewriter, "ast_transformer", "_compile_and_exec")
    # the rewritten kernel's globals receive the interpreter module's names it lacks
    interp._kbench_BoolChain = _BoolChain
    interp._kbench_not = _kbench_not
    interp._kbench_range = _kbench_range
    interp._kbench_value = _kbench_value
    interp.FunctionRewriter.ast_transformer = _rewriter(interp.ASTTransformer)()


# ------------------------------------------------------------------------------------------
# libdevice
# ------------------------------------------------------------------------------------------
def _libdevice() -> None:
    import triton.language as tl
    import triton.language.extra.libdevice as stub
    from triton.language.extra.cuda import libdevice as cuda

    interp = _interp()
    builder = interp.InterpreterBuilder
    _need(builder, "create_extern_elementwise")
    sem = interp.interpreter_semantic

    def create_extern_elementwise(self: Any, lib_name: Any, lib_path: Any, symbol: str,
                                  args: list[Any], ret_type: Any, is_pure: Any) -> Any:
        np_ty = interp._get_np_dtype(ret_type)
        out = _nv_call(symbol, [a.data for a in args], np_ty)
        return interp.TensorHandle(out, ret_type.scalar)

    builder.create_extern_elementwise = create_extern_elementwise

    def with_semantic(fn: Any) -> Any:
        def call(*args: Any, _semantic: Any = None, **kwargs: Any) -> Any:
            return fn(*args, _semantic=sem, **kwargs)
        call.__name__ = call.__qualname__ = fn.__name__
        call.__doc__ = fn.__doc__
        call.__wrapped__ = fn  # type: ignore[attr-defined]
        return call

    def missing(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise AttributeError(f"libdevice.{name} does not exist on CUDA GPUs (it is not in "
                                 "triton.language.extra.cuda.libdevice)")
        return call

    wrapped = {}
    for name, fn in list(vars(cuda).items()):
        if callable(fn) and tl.core.is_builtin(fn):
            wrapped[name] = with_semantic(fn)
            setattr(cuda, name, wrapped[name])
    for name, fn in list(vars(stub).items()):
        if callable(fn) and getattr(fn, "__module__", "") == stub.__name__:
            setattr(stub, name, wrapped.get(name) or missing(name))


def _round_to(r64: Any, np_ty: Any, mode: str | None) -> Any:
    """float64 results -> ``np_ty``, rounded as ``mode`` (rn/rz/rd/ru) says."""
    import numpy as np

    if np.dtype(np_ty).kind in "iub":
        return _to_int(r64, np_ty, mode or "rz")
    r = np.asarray(r64).astype(np_ty)
    if mode in (None, "rn") or np.dtype(np_ty) == np.float64:
        return r
    with np.errstate(invalid="ignore"):
        if mode == "rz":
            fix = np.abs(r.astype(np.float64)) > np.abs(r64)
            toward = np.zeros_like(r)
        elif mode == "rd":
            fix = r.astype(np.float64) > r64
            toward = np.full_like(r, -np.inf)
        else:
            fix = r.astype(np.float64) < r64
            toward = np.full_like(r, np.inf)
    return np.where(fix, np.nextafter(r, toward), r)


def _to_int(x: Any, np_ty: Any, mode: str) -> Any:
    """Float -> integer as the GPU's cvt does: rounded per ``mode``, saturated, NaN -> 0."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    r = {"rn": np.rint, "rz": np.trunc, "rd": np.floor, "ru": np.ceil}[mode](x)
    info = np.iinfo(np_ty)
    r = np.clip(np.nan_to_num(r, nan=0.0), float(info.min), float(info.max))
    return r.astype(np_ty)


def _torch(name: str) -> Callable[..., Any]:
    def run(*xs: Any) -> Any:
        import numpy as np
        import torch

        fn = torch
        for part in name.split("."):
            fn = getattr(fn, part)
        return fn(*(torch.from_numpy(np.array(x)) for x in xs)).numpy()
    return run


def _np_table() -> dict[str, Callable[..., Any]]:
    import math

    import numpy as np

    def vec(f: Callable[..., float]) -> Callable[..., Any]:
        return np.vectorize(f, otypes=[np.float64])

    def rnd(x: Any) -> Any:  # half away from zero
        return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))

    def hi(bits: int) -> Callable[..., Any]:
        def run(a: Any, b: Any) -> Any:
            signed = a.dtype.kind == "i"
            big = [int(x) * int(y) >> bits for x, y in zip(a.ravel(), b.ravel())]
            out = np.array([v & ((1 << bits) - 1) for v in big], dtype=f"uint{bits}")
            return (out.view(f"int{bits}") if signed else out).reshape(a.shape)
        return run

    def clz(x: Any) -> Any:
        bits = x.dtype.itemsize * 8
        u = x.view(f"uint{bits}")
        return np.array([bits - int(v).bit_length() for v in u.ravel()],
                        dtype=np.int32).reshape(x.shape)

    def popc(x: Any) -> Any:
        u = x.view(f"uint{x.dtype.itemsize * 8}")
        return np.array([bin(int(v)).count("1") for v in u.ravel()],
                        dtype=np.int32).reshape(x.shape)

    def brev(x: Any) -> Any:
        bits = x.dtype.itemsize * 8
        u = x.view(f"uint{bits}")
        out = np.array([int(f"{int(v):0{bits}b}"[::-1], 2) for v in u.ravel()],
                       dtype=u.dtype).reshape(x.shape)
        return out.view(x.dtype)

    def ffs(x: Any) -> Any:
        u = x.view(f"uint{x.dtype.itemsize * 8}")
        return np.array([(int(v) & -int(v)).bit_length() for v in u.ravel()],
                        dtype=np.int32).reshape(x.shape)

    sqrt = np.sqrt
    return {
        # float math, computed in float64 and rounded once
        "acos": np.arccos, "acosh": np.arccosh, "asin": np.arcsin, "asinh": np.arcsinh,
        "atan": np.arctan, "atanh": np.arctanh, "cbrt": np.cbrt, "ceil": np.ceil,
        "cos": np.cos, "cosh": np.cosh, "cospi": lambda x: np.cos(np.pi * x),
        "erf": _torch("erf"), "erfc": _torch("erfc"), "erfinv": _torch("erfinv"),
        "erfcinv": lambda x: _torch("erfinv")(1.0 - x), "erfcx": _torch("special.erfcx"),
        "exp": np.exp, "exp10": lambda x: np.power(10.0, x), "exp2": np.exp2,
        "expm1": np.expm1, "floor": np.floor, "lgamma": _torch("lgamma"),
        "tgamma": vec(lambda v: math.gamma(v) if v > 0 or v != int(v) else math.nan),
        "log": np.log, "log10": np.log10, "log1p": np.log1p, "log2": np.log2,
        "logb": lambda x: np.floor(np.log2(np.abs(x))),
        "ilogb": lambda x: np.floor(np.log2(np.abs(x))),
        "nearbyint": np.rint, "rint": np.rint, "round": rnd, "trunc": np.trunc,
        "llrint": np.rint, "llround": rnd,
        "normcdf": _torch("special.ndtr"), "normcdfinv": _torch("special.ndtri"),
        "j0": _torch("special.bessel_j0"), "j1": _torch("special.bessel_j1"),
        "y0": _torch("special.bessel_y0"), "y1": _torch("special.bessel_y1"),
        "cyl_bessel_i0": _torch("special.i0"), "cyl_bessel_i1": _torch("special.i1"),
        "rcbrt": lambda x: 1.0 / np.cbrt(x), "rsqrt": lambda x: 1.0 / sqrt(x),
        "rcp": lambda x: 1.0 / x, "sqrt": sqrt, "sin": np.sin, "sinh": np.sinh,
        "sinpi": lambda x: np.sin(np.pi * x), "tan": np.tan, "tanh": np.tanh,
        "saturate": lambda x: np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0),
        "isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite, "finite": np.isfinite,
        "signbit": np.signbit,
        "atan2": np.arctan2, "copysign": np.copysign, "fdim": lambda x, y: np.where(
            x > y, x - y, np.where(np.isnan(x) | np.isnan(y), np.nan, 0.0)),
        "fmod": np.fmod, "hypot": np.hypot, "rhypot": lambda x, y: 1.0 / np.hypot(x, y),
        "pow": np.power, "powi": np.power, "remainder": lambda x, y: x - y * np.rint(x / y),
        "div": np.divide, "add": np.add, "sub": np.subtract, "mul": np.multiply,
        "ldexp": lambda x, n: x * np.exp2(n), "scalbn": lambda x, n: x * np.exp2(n), "fma": lambda x, y, z: x * y + z,
        "norm3d": lambda a, b, c: sqrt(a * a + b * b + c * c),
        "rnorm3d": lambda a, b, c: 1.0 / sqrt(a * a + b * b + c * c),
        "norm4d": lambda a, b, c, d: sqrt(a * a + b * b + c * c + d * d),
        "rnorm4d": lambda a, b, c, d: 1.0 / sqrt(a * a + b * b + c * c + d * d),
        # integers, in their own type
        "abs": np.abs, "clz": clz, "popc": popc, "brev": brev, "ffs": ffs,
        "mulhi": hi(32), "umulhi": hi(32), "mul64hi": hi(64), "umul64hi": hi(64),
        "mul24": lambda a, b: (a.astype(np.int64) << 40 >> 40) * (b.astype(np.int64) << 40 >> 40),
        "umul24": lambda a, b: (a.astype(np.uint64) & 0xFFFFFF) * (b.astype(np.uint64) & 0xFFFFFF),
        "hadd": lambda a, b: (a.astype(np.int64) + b) >> 1,
        "rhadd": lambda a, b: (a.astype(np.int64) + b + 1) >> 1,
        "uhadd": lambda a, b: (a.astype(np.uint64) + b) >> 1,
        "urhadd": lambda a, b: (a.astype(np.uint64) + b + 1) >> 1,
        "sad": lambda a, b, c: np.abs(a.astype(np.int64) - b) + c,
        "usad": lambda a, b, c: np.abs(a.astype(np.int64) - b) + c,
    }


_INT_OPS = {"abs", "clz", "popc", "brev", "ffs", "mulhi", "umulhi", "mul64hi", "umul64hi",
            "mul24", "umul24", "hadd", "rhadd", "uhadd", "urhadd", "sad", "usad"}
_NATIVE = {"nextafter"}  # must run in the argument's own precision
_ALIASES = {"fabs": "abs", "fdividef": "div", "fdiv": "div", "ddiv": "div", "fadd": "add",
            "dadd": "add", "fsub": "sub", "dsub": "sub", "fmul": "mul", "dmul": "mul",
            "fsqrt": "sqrt", "dsqrt": "sqrt", "frcp": "rcp", "drcp": "rcp", "frsqrt": "rsqrt",
            "llabs": "abs", "brevll": "brev", "clzll": "clz", "popcll": "popc", "ffsll": "ffs",
            "isnand": "isnan", "isinfd": "isinf", "isfinited": "isfinite",
            "signbitd": "signbit", "finitef": "finite"}
_TABLE: dict[str, Callable[..., Any]] = {}


def _nv_call(symbol: str, args: list[Any], np_ty: Any) -> Any:
    """Evaluate libdevice's ``symbol`` on numpy arrays, returning ``np_ty``."""
    import numpy as np

    if not _TABLE:
        _TABLE.update(_np_table())
    name = symbol[5:] if symbol.startswith("__nv_") else symbol
    mode = None
    m = re.fullmatch(r"(.+)_(rn|rz|rd|ru)", name)
    if m:
        name, mode = m.group(1), m.group(2)
    name = name[5:] if name.startswith("fast_") else name
    args = list(np.broadcast_arrays(*args)) if len(args) > 1 else args
    conv = re.fullmatch(r"(float|double|int|uint|ll|ull)2(float|double|int|uint|ll|ull)", name)
    if conv:
        return _round_to(args[0].astype(np.float64), np_ty, mode or "rn")
    views = {"float_as_int": np.int32, "float_as_uint": np.uint32, "int_as_float": np.float32,
             "uint_as_float": np.float32, "double_as_longlong": np.int64,
             "longlong_as_double": np.float64}
    if name in views:
        return args[0].view(views[name])
    if name in ("double2hiint", "double2loint"):
        u = args[0].view(np.uint64)
        part = (u >> np.uint64(32)) if name == "double2hiint" else (u & np.uint64(0xFFFFFFFF))
        return part.astype(np.uint32).view(np.int32)
    if name == "hiloint2double":
        h, lo = args[0].view(np.uint32).astype(np.uint64), args[1].view(np.uint32)
        return ((h << np.uint64(32)) | lo.astype(np.uint64)).view(np.float64)
    if name in _NATIVE or name in ("nextafterf",):
        return np.nextafter(args[0], args[1]).astype(np_ty)
    name = _ALIASES.get(name, name)
    if name not in _TABLE and name.endswith("f") and (name[:-1] in _TABLE
                                                      or name[:-1] in _ALIASES):
        name = name[:-1]
    name = _ALIASES.get(name, name)
    fn = _TABLE.get(name)
    if fn is None:
        raise InterpreterGap(f"libdevice function {symbol} has no CPU emulation in kbench's "
                             "Triton interpreter")
    with np.errstate(all="ignore"):
        if name in _INT_OPS and all(a.dtype.kind in "iu" for a in args):
            return np.asarray(fn(*args)).astype(np_ty)
        out = np.asarray(fn(*(a.astype(np.float64) for a in args)))
        if out.dtype == np.bool_ or name in ("ilogb", "llrint", "llround"):
            return _round_to(out.astype(np.float64), np_ty, "rz")
        return _round_to(out.astype(np.float64), np_ty, mode)


# ------------------------------------------------------------------------------------------
# CUDA device queries
# ------------------------------------------------------------------------------------------
class _NoCudaDevice:
    """``torch.cuda.device(d)`` / ``device_of(t)`` on CPU: nothing to switch."""

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.idx = 0

    def __enter__(self) -> _NoCudaDevice:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


class _VirtualDeviceProperties:
    """What ``torch.cuda.get_device_properties`` answers on CPU runs: an sm_80-like device
    with one multiprocessor per CPU core (any count is correct; persistent kernels loop)."""

    name = "cpu (Triton interpreter, virtual sm_80)"
    major, minor = 8, 0
    warp_size = 32
    is_integrated = 0
    is_multi_gpu_board = 0
    max_threads_per_multi_processor = 2048
    max_threads_per_block = 1024
    regs_per_multiprocessor = 65536
    shared_memory_per_block = 49152
    shared_memory_per_block_optin = 166912
    shared_memory_per_multiprocessor = 167936
    L2_cache_size = 40 << 20
    clock_rate = 1410000
    memory_clock_rate = 1215000
    memory_bus_width = 5120
    uuid = "00000000-0000-0000-0000-000000000000"
    gcnArchName = "NVIDIA"
    pci_bus_id = pci_device_id = pci_domain_id = 0

    def __init__(self) -> None:
        self.multi_processor_count = max(1, os.cpu_count() or 1)
        try:
            self.total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            self.total_memory = 16 << 30

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}, multi_processor_count={self.multi_processor_count})")


def _cuda_device() -> None:
    import torch

    if torch.cuda.is_available():
        raise _Differ("a CUDA device is visible: its own answers stand")
    props = _VirtualDeviceProperties()
    cuda = torch.cuda
    cuda.device = _NoCudaDevice
    cuda.device_of = _NoCudaDevice
    cuda.current_device = lambda: 0
    cuda.synchronize = lambda device=None: None
    cuda.get_device_properties = lambda device=None: props
    cuda.get_device_capability = lambda device=None: (props.major, props.minor)
    cuda.get_device_name = lambda device=None: props.name


def _driver() -> None:
    import torch
    from triton.backends import DriverBase, backends
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    _need(driver, "set_active")
    if any(b.driver.is_active() for b in backends.values()):
        raise _Differ("a Triton driver is active: its own answers stand")
    props = _VirtualDeviceProperties()

    class _Utils:
        @staticmethod
        def get_device_properties(device: Any = None) -> dict[str, int]:
            return {"max_shared_mem": props.shared_memory_per_block_optin,
                    "max_num_regs": props.regs_per_multiprocessor,
                    "multiprocessor_count": props.multi_processor_count,
                    "warpSize": props.warp_size, "sm_clock_rate": props.clock_rate,
                    "mem_clock_rate": props.memory_clock_rate,
                    "mem_bus_width": props.memory_bus_width}

    class CpuInterpreterDriver(DriverBase):
        """Triton's ``driver.active`` on CPU runs: the virtual sm_80 device, CPU tensors."""

        utils = _Utils()

        @classmethod
        def is_active(cls) -> bool:
            return False

        def map_python_to_cpp_type(self, ty: str) -> str:
            raise InterpreterGap("Triton's interpreter builds no launchers")

        def get_current_target(self) -> Any:
            return GPUTarget("cuda", props.major * 10 + props.minor, props.warp_size)

        def get_active_torch_device(self) -> Any:
            return torch.device("cpu")

        def get_current_device(self) -> int:
            return 0

        def set_current_device(self, device: Any) -> None:
            return None

        def get_current_stream(self, device: Any = None) -> int:
            return 0

        def get_benchmarker(self) -> Any:
            return lambda fn, quantiles=None, **kw: [1.0] * len(quantiles or [0])

    driver.set_active(CpuInterpreterDriver())


# ------------------------------------------------------------------------------------------
# what still cannot run
# ------------------------------------------------------------------------------------------
_INTERPRETER_FILE = os.path.join("triton", "runtime", "interpreter.py")
_KNOWN = {
    "inline_asm": "inline assembly (tl.inline_asm_elementwise) does not run in Triton's "
                  "interpreter",
    "extern_elementwise": "an extern_elementwise library call does not run in Triton's "
                          "interpreter",
}
_CUDA_ONLY = ("Torch not compiled with CUDA enabled", "Found no NVIDIA driver",
              "No CUDA GPUs are available", "Expected a cuda device", "CUDA driver",
              "active drivers")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 32:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__context__, e.__cause__]
    return seen


def _raised_in_interpreter(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(_INTERPRETER_FILE)


def unsupported(exc: BaseException) -> str | None:
    """What the CPU interpreter could not run, if that is why ``exc`` was raised, else None.

    Recognises: a gap this module names (:class:`InterpreterGap`), a ``NotImplementedError``
    raised by Triton's interpreter itself (inline assembly, ...), and a call that needs a CUDA
    device or a GPU driver."""
    for e in _chain(exc):
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, InterpreterGap):
            return msg
        if isinstance(e, NotImplementedError) and _raised_in_interpreter(e):
            return next((v for k, v in _KNOWN.items() if k in msg),
                        f"{msg} (Triton's interpreter)")
    for e in _chain(exc):
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if any(s in msg for s in _CUDA_ONLY):
            return f"the candidate needs a CUDA device or GPU driver here ({msg[:200]})"
    return None
