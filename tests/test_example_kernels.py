"""The shipped Triton examples compile as torch.compile would compile them: Inductor types a
Python float passed to a non-constexpr kernel parameter as fp64 (eager Triton: fp32), so a
kernel must not let such a value promote its fp32 loop-carried state (pytorch/pytorch#190340).
Each example's launches are captured on CPU (the launch itself replaced) and lowered to
Triton IR for an H100 target with floats typed fp64: the frontend runs, no GPU needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from kbench.problems import load

EXAMPLES = Path(__file__).resolve().parents[1] / "kbench" / "examples"
TRITON_EXAMPLES = sorted(p for p in EXAMPLES.glob("*/*.py") if not p.stem.endswith("_cuda"))

_PTR = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
        torch.float64: "fp64", torch.int8: "i8", torch.uint8: "u8", torch.int16: "i16",
        torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
_LAUNCH_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg", "grid", "warmup"}


def _launches(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """(JITFunction, its arguments by name) of every launch the example's forward makes on
    the problem's first small CPU shape."""
    from triton.runtime.jit import JITFunction

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # real JITFunctions
    spec_ = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    (problem,) = load(f"{path.parent.name}/{path.stem}")
    shape = next(iter(problem.cpu_shapes.values()))
    torch.manual_seed(0)
    model = mod.ModelNew(*problem.make_init_inputs(shape))
    seen: list[tuple[Any, dict[str, Any]]] = []

    def run(self: JITFunction, *args: Any, **kwargs: Any) -> None:
        named = dict(zip(self.arg_names, args))
        named.update({k: v for k, v in kwargs.items() if k not in _LAUNCH_OPTIONS})
        seen.append((self, named))

    monkeypatch.setattr(JITFunction, "run", run)
    with torch.no_grad():
        model(*problem.make_inputs(shape, 0, "cpu"))
    return seen


def _ttir(kernel: Any, args: dict[str, Any]) -> None:
    """Lower ``kernel`` at ``args`` to Triton IR, Python floats typed fp64 as Inductor does."""
    from triton._C.libtriton import ir
    from triton.backends import backends
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig: dict[str, str] = {}
    consts: dict[tuple[int, ...], Any] = {}
    for i, p in enumerate(kernel.params):
        v = args.get(p.name, p.default)
        if p.is_constexpr or v is None:
            sig[p.name] = "constexpr"
            consts[(i,)] = v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + _PTR[v.dtype]
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
        elif isinstance(v, float):
            sig[p.name] = "fp64"  # Inductor's type for a Python float; eager Triton's is fp32
        else:
            raise TypeError(f"{p.name}: {type(v).__name__}")
    target = GPUTarget("cuda", 90, 32)
    backend = backends["nvidia"].compiler(target)
    options = backend.parse_options({})
    ctx = ir.context()
    ir.load_dialects(ctx)
    backend.load_dialects(ctx)
    ASTSource(kernel, sig, constexprs=consts).make_ir(
        target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
        ctx)


@pytest.mark.parametrize("path", TRITON_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_kernels_compile_with_python_floats_typed_fp64(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launches = _launches(path, monkeypatch)
    assert launches, f"{path.name}: no launch captured"
    for kernel, args in launches:
        _ttir(kernel, args)
