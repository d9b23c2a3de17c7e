"""The verifier's static policy (sandbox.policy): attack corpus, honest corpus, precision cases.

Corpus files live in tests/candidates/{attacks,honest}; each docstring names its problem
(``Problem: level1/relu`` or a path under tests/candidates/problems) and its expected outcome
(``Expected: rejected by policy: <rule>[, <rule>]`` or ``Expected: caught at run time: ...``).
Run-time attacks must pass the policy: the verifier's run-time checks are what catch them.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox.policy import RULES, PolicyResult, check_source, detect_backend

CANDIDATES = Path(__file__).parent / "candidates"
REPO = CANDIDATES.parent.parent


def _meta(path: Path) -> tuple[str, str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    problem = re.search(r"^Problem:\s*(\S+)", doc, re.MULTILINE)
    expected = re.search(r"^Expected:\s*(.+)$", doc, re.MULTILINE)
    assert problem and expected, f"{path.name}: docstring needs Problem: and Expected: lines"
    return problem.group(1), expected.group(1)


def _expected_rules(expected: str) -> set[str]:
    return {r.strip() for r in expected.split(":", 1)[1].split(",")}


ATTACKS = sorted((CANDIDATES / "attacks").glob("*.py"))
HONEST = sorted((CANDIDATES / "honest").glob("*.py"))
POLICY_ATTACKS = [p for p in ATTACKS if _meta(p)[1].startswith("rejected by policy")]
RUNTIME_ATTACKS = [p for p in ATTACKS if _meta(p)[1].startswith("caught at run time")]


def _ids(p: Path) -> str:
    return p.stem


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------
def test_corpus_is_complete_and_classified() -> None:
    assert len(POLICY_ATTACKS) + len(RUNTIME_ATTACKS) == len(ATTACKS)
    assert len(RUNTIME_ATTACKS) >= 10 and len(POLICY_ATTACKS) >= 30 and len(HONEST) >= 4
    for p in ATTACKS:
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        assert doc.startswith("Attack:"), f"{p.name}: docstring must name the attack class"
    for p in POLICY_ATTACKS:
        assert _expected_rules(_meta(p)[1]) <= set(RULES), p.name


@pytest.mark.parametrize("path", ATTACKS + HONEST, ids=_ids)
def test_corpus_problem_exists(path: Path) -> None:
    problem, _ = _meta(path)
    if problem.endswith(".py"):
        assert (REPO / problem).is_file(), problem
    else:
        from kbench.problems import load

        assert load(problem)


@pytest.mark.parametrize("path", POLICY_ATTACKS, ids=_ids)
def test_policy_attack_is_rejected(path: Path) -> None:
    expected = _expected_rules(_meta(path)[1])
    result = check_source(path.read_text())
    assert not result.ok
    assert expected <= result.rules, f"wanted {sorted(expected)}; got:\n{result.reason()}"
    for v in result.violations:
        assert v.rule in RULES
        assert v.line is None or v.message.startswith(f"line {v.line}: ")
    assert len(result.reason().splitlines()) == len(result.violations)


@pytest.mark.parametrize("path", RUNTIME_ATTACKS, ids=_ids)
def test_runtime_attack_passes_policy(path: Path) -> None:
    result = check_source(path.read_text())
    assert result.ok, result.reason()
    assert result.backend == "triton"


@pytest.mark.parametrize("path", HONEST, ids=_ids)
def test_honest_candidate_passes(path: Path) -> None:
    source = path.read_text()
    result = check_source(source)
    assert result.ok and result.violations == (), result.reason()
    assert result.reason() == ""
    want = "cuda" if "cuda" in path.stem else "triton"
    assert result.backend == want == detect_backend(source)


# Triton's interpreter must be switched on before triton is first imported (this process has
# imported it already, for the policy), so the honest Triton corpus runs in one fresh child.
_RUN_HONEST = r"""
import importlib.util, json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from kbench.problems import load, load_file
from sandbox.compare import compare_outputs

if not torch.cuda.is_available():
    # Autotuning benchmarks need a GPU driver even under the interpreter; tie all configs.
    from triton.runtime.autotuner import Autotuner
    Autotuner.do_bench = property(lambda self: lambda fn, quantiles=None: [1.0, 1.0, 1.0])

results = {}
for path, problem in json.loads(sys.argv[1]):
    spec = load_file(problem) if problem.endswith(".py") else load(problem)[0]
    mod_spec = importlib.util.spec_from_file_location("honest_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    reasons = []
    for name, shape in spec.cpu_shapes.items():
        init = spec.make_init_inputs(shape)
        reference = spec.make_model(init, 1234, "cpu")
        torch.manual_seed(1234)
        model = module.ModelNew(*init).eval()
        inputs = spec.make_inputs(shape, 99, "cpu")
        with torch.no_grad():
            expected = reference(*[x.clone() for x in inputs])
            got = model(*inputs)
        mismatch, _ = compare_outputs(got, expected, *spec.tolerance)
        if mismatch is not None:
            reasons.append(f"{name}: {mismatch.reason}")
    results[path] = reasons
print("RESULTS=" + json.dumps(results))
"""

HONEST_TRITON = [p for p in HONEST if "triton" in p.stem]


@pytest.fixture(scope="module")
def honest_results() -> dict[str, list[str]]:
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    jobs = [(str(p), str(REPO / pr) if pr.endswith(".py") else pr)
            for p in HONEST_TRITON for pr in [_meta(p)[0]]]
    proc = subprocess.run([sys.executable, "-c", _RUN_HONEST, json.dumps(jobs)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS=")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULTS="):])


@pytest.mark.slow
@pytest.mark.parametrize("path", HONEST_TRITON, ids=_ids)
def test_honest_triton_candidate_is_correct_in_interpreter(
        path: Path, honest_results: dict[str, list[str]]) -> None:
    """The honest corpus must really be honest: Triton's interpreter, CPU shapes, every shape."""
    assert honest_results[str(path)] == []


# --------------------------------------------------------------------------------------------
# Precision cases: what honest kernels do must pass; near misses must not
# --------------------------------------------------------------------------------------------
_HEADER = '''
import math

import torch
import torch.nn as nn
import triton
import triton.language as tl
{imports}

@triton.jit
def _k(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=m), mask=m)


def _launch(x):
    y = torch.empty_like(x)
    _k[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BLOCK=256)
    return y

{extra}

class ModelNew(nn.Module):
    def __init__(self{init_args}):
        super().__init__()
{init}

    def forward(self, {args}):
{forward}
'''


def _src(forward: str, *, init: str = "pass", imports: str = "", extra: str = "",
         args: str = "x", init_args: str = "") -> str:
    return _HEADER.format(imports=imports, extra=textwrap.dedent(extra), args=args,
                          init_args=init_args, init=textwrap.indent(textwrap.dedent(init), " " * 8),
                          forward=textwrap.indent(textwrap.dedent(forward), " " * 8))


def _check(forward: str, **kw: str) -> PolicyResult:
    return check_source(_src(forward, **kw))


def _ok(forward: str, **kw: str) -> None:
    result = _check(forward, **kw)
    assert result.ok, result.reason()


def _rejected(rule: str, forward: str, **kw: str) -> PolicyResult:
    result = _check(forward, **kw)
    assert rule in result.rules, result.reason() or "passed"
    return result


def test_header_alone_passes() -> None:
    _ok("return _launch(x)")


def test_functional_alias_is_a_reference_call() -> None:
    r = _rejected("reference-call", "return F.softmax(x, dim=-1)",
                  imports="import torch.nn.functional as F")
    (v,) = r.violations
    assert "torch.nn.functional.softmax" in v.message and v.message.startswith(f"line {v.line}: forward")


def test_from_import_alias_is_fine_until_called() -> None:
    _ok("return _launch(x)", imports="from torch import matmul as mm")
    r = _rejected("reference-call", "return mm(x, x)", imports="from torch import matmul as mm")
    assert "torch.matmul" in r.reason()
    _rejected("reference-call", "return gelu(x)", imports="from torch.nn.functional import gelu")
    _rejected("reference-call", "return nnf.gelu(x)", imports="from torch.nn import functional as nnf")


def test_container_and_string_methods_are_fine() -> None:
    _ok("""
        shapes = []
        shapes.append(x.shape[0])
        shapes.extend([1, 2])
        meta = {"BLOCK": 256}
        meta.update({"num_warps": 4})
        block = meta.get("BLOCK", 128)
        keys = sorted(meta.keys()) + [k for k, v in meta.items()] + list(meta.values())
        order = [3, 1, 2]
        order.sort()
        pos = order.index(2) + order.count(1)
        tag = ", ".join("{}={}".format(k, v) for k, v in meta.items())
        parts = tag.split(", ")
        shapes.pop()
        assert block and keys and pos and parts
        return _launch(x)
    """)


def test_allocation_metadata_and_launch_math_are_fine() -> None:
    _ok("""
        x = x.contiguous()
        m, n = x.shape
        total = x.numel() * x.element_size()
        a = torch.empty((m, n), device=x.device, dtype=x.dtype)
        b = torch.zeros_like(x)
        c = torch.full((4,), 1.0)
        d = torch.cat([a.view(-1), b.reshape(-1)]).view(2, m, n).permute(0, 2, 1)
        e = x.to(torch.float16).float().transpose(0, 1).t().unsqueeze(0).squeeze(0)
        grid = (triton.cdiv(x.numel(), 256), max(1, min(m, 65535)), math.ceil(n / 2))
        block = triton.next_power_of_2(n)
        strides = (x.stride(0), x.stride(1), x.data_ptr() % 16 == 0, len(x.shape))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            s = torch.cuda.current_stream()
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            assert s is not None and props is not None
        assert total and c is not None and d is not None and e is not None and block and strides
        for i in range(m):
            grid = (grid[0] + i * 0,)
        return _launch(x)
    """)


def test_matmul_operator_rejected_in_forward_fine_in_init() -> None:
    init = """
        self.lin = nn.Linear(8, 8)
        self.register_buffer("gram", self.lin.weight @ self.lin.weight.t())
        nn.init.kaiming_uniform_(self.lin.weight, a=math.sqrt(5))
        self.scale = float(self.lin.weight.abs().max())
    """
    _ok("return _launch(x)", init=init)
    r = _rejected("reference-call", "return x @ self.gram", init=init)
    assert "@ operator" in r.reason()
    _rejected("reference-call", "y = _launch(x)\ny @= self.gram\nreturn y", init=init)


def test_init_may_not_hand_ops_or_modules_to_forward() -> None:
    _rejected("reference-call", "return self.act(x)", init="self.act = F.gelu",
              imports="import torch.nn.functional as F")
    _rejected("reference-call", "return self.act(x)", init="self.act = lambda t: t.sigmoid()")
    _rejected("reference-call", "return self.act(x)", init="self.act = nn.GELU()")
    _rejected("reference-call", "return self.act(x)", init="self.act = nn.Sequential(nn.GELU())")


def test_nn_submodules_only_through_their_weights() -> None:
    init = "self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])\nself.lin = nn.Linear(4, 4)"
    _ok("w, b = self.lin.weight, self.lin.bias\nreturn _launch(x) if w is not None and b is not None else x",
        init=init)
    _ok("for layer in self.layers:\n    x = _launch(x) if layer.weight.shape[0] else x\nreturn x", init=init)
    _rejected("reference-call", "for layer in self.layers:\n    x = layer(x)\nreturn x", init=init)
    _rejected("reference-call", "return self.layers[0].forward(x)", init=init)
    _rejected("reference-call", "return self.lin(x)", init=init)
    _rejected("reference-call", "return nn.functional.linear(x, self.lin.weight)", init=init)
    _rejected("reference-call", "return self.act(x)", init="self.add_module('act', nn.GELU())")


def test_own_modules_and_autograd_functions_are_fine() -> None:
    extra = '''
    class _Block(nn.Module):
        def forward(self, t):
            return _launch(t)


    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            ctx.save_for_backward(t)
            return _launch(t)
    '''
    _ok("return _Fn.apply(self.block(x))", init="self.block = _Block()", extra=extra)
    _rejected("reference-call", "return _Block()(x)", extra=extra)


def test_tensor_methods_from_torch_denylist() -> None:
    for call in ("x.sigmoid()", "x.logsumexp(-1)", "x.sum(dim=1)", "x.softmax(-1)", "x.add(1)",
                 "x.sort().values", "x.where(x > 0, 0.0)", "torch.Tensor.relu(x)", "x.clamp_(0)"):
        _rejected("reference-call", f"return {call}")
    _ok("y = x.new_empty(x.shape)\ny.zero_()\ny.copy_(x)\nreturn _launch(y.view_as(x).detach())")


def test_operators_on_tensors_but_not_on_sizes() -> None:
    _ok("n = x.numel() // 2 + x.shape[-1] * 3 - 1\nassert n > 0 and x.dim() == 2\nreturn _launch(x)")
    for expr in ("x + 1", "-x", "x * (x > 0)", "abs(x)", "max(x, x)", "_launch(x) / 2"):
        _rejected("reference-call", f"return {expr}")
    _rejected("reference-call", "y = _launch(x)\ny += 1\nreturn y")
    # tensors hidden in containers, builtins and immediately-called lambdas are still tensors
    for body in ("t = [x][0]\nreturn t * 2", "t = next(iter([x]))\nreturn -t",
                 "a, b = [x, x]\nreturn a + b", "d = {'k': x}\nreturn d['k'] > 0",
                 "return (lambda t: t * 2)(x)", "return sum([x, x])",
                 "xs = [x] + [x]\nfor t in xs:\n    x = t * 2\nreturn x"):
        _rejected("reference-call", body)
    _ok("outs = [_launch(x)]\nouts = outs + [x]\nreturn outs[0] if len(outs) * 2 > 1 else x")
    _rejected("reference-call", "y = [x][0]\nreturn y.relu()",  # a dummy method named relu
              extra="class _D:\n    def relu(self):\n        return 0\n")
    _ok("assert x is not None\nreturn _launch(x)")


def test_non_tensor_forward_arguments() -> None:
    _ok("return _launch(x) if scale * 2 > 0 else x", args="x, scale: float")
    _ok("return _launch(x) if k - 1 >= 0 else x", args="x, k=3")
    _rejected("reference-call", "return _launch(x) if k - 1 >= 0 else x", args="x, k")


def test_helpers_called_with_tensors_are_checked() -> None:
    extra = "def _post(t, n):\n    return t * 2 if n > 0 else t\n"
    _rejected("reference-call", "return _post(_launch(x), 3)", extra=extra)
    # a method's result is a tensor when the method returns one
    r = check_source(_src("return self.run(x) + 1").replace(
        "    def forward(self, x):", "    def run(self, t):\n        return _launch(t)\n\n    def forward(self, x):"))
    assert "reference-call" in r.rules, r.reason()
    _ok("return _post2(_launch(x), 3)", extra="def _post2(t, n):\n    return t if n * 2 > 0 else t\n")


def test_state_across_calls() -> None:
    _rejected("caching", "self.calls += 1\nreturn _launch(x)", init="self.calls = 0")
    _rejected("caching", "self.seen[x.data_ptr()] = 1\nreturn _launch(x)", init="self.seen = {}")
    _rejected("caching", "self.seen.append(1)\nreturn _launch(x)", init="self.seen = []")
    _rejected("caching", "c = self.seen\nc.add(1)\nreturn _launch(x)", init="self.seen = set()")
    _rejected("caching", "_SEEN.append(1)\nreturn _launch(x)", extra="_SEEN = []")
    _rejected("caching", "global _N\n_N = 1\nreturn _launch(x)", extra="_N = 0")
    _rejected("caching", "self.buf.copy_(x)\nreturn _launch(self.buf)", init="self.buf = torch.zeros(4)")
    _rejected("caching", "return _launch(x)", extra="@functools.lru_cache\ndef _f(n):\n    return n\n",
              imports="import functools")
    _rejected("caching", "return _launch(x)", imports="from functools import cache")
    _ok("hit = self.table.get(x.shape[0], 1)\nreturn _launch(x) if hit else x", init="self.table = {4: 1}")
    _rejected("caching", "self.register_buffer('last', x)\nreturn _launch(x)")
    _rejected("caching", "torch.Tensor.copy_(self.buf, x)\nreturn _launch(x)", init="self.buf = torch.zeros(4)")
    # a closure made in __init__ outlives every call: mutating what it closes over is a cache
    _rejected("caching", "return self.memo(_launch(x))",
              init="seen = {}\nself.memo = lambda t: seen.setdefault(t.data_ptr(), t)")
    _ok("acc = []\ndef note(v):\n    acc.append(v)\nnote(1)\nreturn _launch(x)")  # per-call closure


def test_init_idioms_are_fine() -> None:
    _ok("return _launch(x)", init="""
        self.weight = nn.Parameter(torch.empty(8, 8))
        self.bias = nn.Parameter(torch.empty(8))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.register_buffer("w_t", self.weight.t().contiguous() * 2.0)
    """)


def test_names_dunders_and_private_attributes() -> None:
    _ok("return _launch(x)", init="nn.Module.__init__(self)\nself._ext = None\nself._n = 1")
    _ok("return _launch(x) if self._n else x", init="self._n = 1")
    _rejected("dunder-access", "return _launch(x) if self.__class__ else x")
    _rejected("dunder-access", "return x.__dict__")
    _rejected("introspection", "return _launch(x) if x._version >= 0 else x")
    for name in ("getattr(torch, 'relu')", "eval('1')", "open('f')", "globals()", "vars(x)",
                 "compile('1', 'f', 'eval')", "__import__('os')", "exit()"):
        _rejected("forbidden-name", f"{name}\nreturn _launch(x)")
    _rejected("forbidden-name", "return _launch(x)", extra="getattr = getattr\n")
    _ok("return _launch(input)", args="input")  # a parameter named like a builtin is not it
    _rejected("dunder-access", "return _launch(x)", extra="def __getattr__(name):\n    return name\n")


def test_imports() -> None:
    for imp in ("import os", "import numpy as np", "from importlib import import_module",
                "import ctypes", "import pickle", "from . import x", "from torch import *"):
        _rejected("forbidden-import", "return _launch(x)", imports=imp)
    for imp in ("import threading", "from concurrent.futures import ThreadPoolExecutor"):
        _rejected("concurrency", "return _launch(x)", imports=imp)
    for imp in ("from torch.utils.cpp_extension import load_inline", "import typing",
                "from dataclasses import dataclass", "from triton.language.extra import libdevice",
                "import torch.nn.functional", "from __future__ import annotations"):
        _ok("return _launch(x)", imports=imp)
    _rejected("forbidden-name", "return _launch(x)", imports="from torch.utils.cpp_extension import load")
    _rejected("internals", "return _launch(x)", imports="from torch import _dynamo")
    # modules re-exported as attributes of allowed ones are still those modules
    _rejected("forbidden-import", "torch.nn.functional.importlib.import_module('os')\nreturn _launch(x)")
    _rejected("forbidden-import", "torch.builtins.print(1)\nreturn _launch(x)")
    _rejected("forbidden-import", "tl.core.builtins.print(1)\nreturn _launch(x)")
    _rejected("forbidden-import", "return _launch(x)", extra="_insp = triton.language.core.inspect\n")
    _rejected("reference-call", "return torch.nn.functional.torch.relu(x)")


def test_internals_streams_and_patching() -> None:
    _rejected("concurrency", "s = torch.cuda.Stream()\nreturn _launch(x)")
    _rejected("concurrency", "e = torch.cuda.Event(enable_timing=True)\nreturn _launch(x)")
    _rejected("concurrency", "cu = torch.cuda\ns = cu.Stream()\nreturn _launch(x)")  # alias
    _rejected("introspection", "m = torch.cuda\nm = m\nreturn _launch(x)")  # untrackable alias
    _rejected("internals", "torch.backends.cuda.matmul.allow_tf32 = True\nreturn _launch(x)")
    _rejected("internals", "torch.set_float32_matmul_precision('medium')\nreturn _launch(x)")
    _rejected("internals", "return torch.ops.aten.relu(x)")
    _rejected("internals", "return _launch(x)", extra="_do_bench = triton.testing.do_bench\n")
    _rejected("monkeypatch", "return _launch(x)", extra="torch.matmul = lambda a, b: a\n")
    _rejected("monkeypatch", "return _launch(x)", extra="del torch.relu\n")
    _rejected("monkeypatch", "return _launch(x)", extra="_launch.__wrapped__ = None\n")
    _rejected("monkeypatch", "return _launch(x)", extra="_k.fn = None\n")
    _ok("cfg = _Cfg()\ncfg.block = 128\nreturn _launch(x)",
        extra="class _Cfg:\n    block = 64\n\n_CFG = _Cfg()\n_CFG.block = 256\n")


def test_try_except_and_subclasses() -> None:
    _rejected("try-except", "try:\n    return _launch(x)\nexcept Exception:\n    return x")
    _rejected("try-except", "try:\n    return _launch(x)\nexcept* ValueError:\n    pass\nreturn x")
    _rejected("try-except", "try:\n    return _launch(x)\nfinally:\n    pass")
    _rejected("tensor-subclass", "return _launch(x)", extra="class T(torch.Tensor):\n    pass\n")
    _rejected("tensor-subclass", "return _launch(x)",
              extra="class T:\n    def __torch_dispatch__(self):\n        pass\n")
    _rejected("forbidden-name", "return type('T', (torch.Tensor,), {})(x)")


def test_format_strings() -> None:
    _ok("assert '{}x{}'.format(*x.shape)\nreturn _launch(x)")
    _rejected("introspection", "assert '{0.__class__}'.format(x)\nreturn _launch(x)")
    _rejected("introspection", "assert '{0[0]}'.format(x)\nreturn _launch(x)")


def test_no_kernel_and_backend_detection() -> None:
    plain = "import torch\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n"
    r = check_source(plain)
    assert r.rules == {"no-kernel"} and r.backend == "unknown" == detect_backend(plain)
    assert detect_backend(_src("return _launch(x)")) == "triton"


def test_syntax_errors_are_left_to_the_caller() -> None:
    assert check_source("def f(:\n") == PolicyResult("unknown", ())
    assert check_source("x = 1\x00\n") == PolicyResult("unknown", ())
    assert detect_backend("def f(:\n") == "unknown"


def test_a_checker_bug_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox.policy as policy

    def boom(*args: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(policy, "_infer", boom)
    r = check_source(_src("return _launch(x)"))
    assert r.rules == {"policy-error"} and "KeyError" in r.reason()


def test_never_raises_on_pathological_sources() -> None:
    deep = "y = " + " + ".join(["1"] * 50_000) + "\n"
    r = check_source(deep)
    assert isinstance(r, PolicyResult)
    assert r.rules <= {"too-complex", "no-kernel"}


# --------------------------------------------------------------------------------------------
# CUDA sources
# --------------------------------------------------------------------------------------------
_CUDA = '''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

SRC = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
{includes}
__device__ __forceinline__ float relu(float v) {{ return fmaxf(v, 0.f); }}

__global__ void k(const float* x, float* y, int64_t n) {{
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = relu(x[i]);
}}

torch::Tensor run(torch::Tensor x) {{
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    int64_t n = xc.numel();
    TORCH_CHECK(x.is_cuda() && x.dim() >= 1, "bad input");
{body}
    k<<<(n + 255) / 256, 256, 0, at::cuda::getCurrentCUDAStream()>>>(xc.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}}
"""

_ext = load_inline(name="t", cpp_sources="torch::Tensor run(torch::Tensor x);", cuda_sources={sources},
                   functions=["run"]{kwargs})


class ModelNew(nn.Module):
    def forward(self, x):
        return _ext.run(x)
'''


def _cuda(body: str = "", includes: str = "", sources: str = "SRC", kwargs: str = "") -> PolicyResult:
    return check_source(_CUDA.format(body=textwrap.indent(body, "    "), includes=includes,
                                     sources=sources, kwargs=kwargs))


def test_cuda_honest_shapes_pass() -> None:
    for body, includes in [
        ("", ""),
        ("auto z = torch::zeros({n}, xc.options().dtype(torch::kFloat32));", "#include <cub/cub.cuh>"),
        ("const at::cuda::OptionalCUDAGuard guard(x.device());", "#include <cutlass/cutlass.h>"),
        ("float m = std::max(1.0f, 2.0f);  // at::relu would be wrong here", "#include <vector>"),
    ]:
        r = _cuda(body, includes)
        assert r.ok and r.backend == "cuda", r.reason()
    assert _cuda(kwargs=', extra_cuda_cflags=["-O3", "--use_fast_math", "-DBLOCK=256"]').ok
    assert _cuda(sources='[SRC, "// more"]').ok


def test_cuda_vendor_and_aten_compute() -> None:
    for body in ("y = at::matmul(xc, xc);", "y = torch::relu(xc);", "y = xc.sum();",
                 "y = xc.clamp_min(0);", "y = xc * 2;", "y = 2 * xc;", "y = -xc;", "y += xc;",
                 "y = exp(xc);", "y = gelu(xc);",
                 "y = at::native::relu(xc);", "auto h = at::cuda::getCurrentCUDABlasHandle();",
                 "cub::DeviceReduce::Sum(nullptr, n, xc.data_ptr<float>(), y.data_ptr<float>(), n);"):
        assert "cuda-vendor" in _cuda(body).rules, body
    assert "cuda-vendor" in _cuda(includes="#include <cublas_v2.h>").rules
    assert "cuda-vendor" in _cuda(includes="using namespace at;").rules
    assert "cuda-vendor" in _cuda(kwargs=', extra_ldflags=["-lcublas"]').rules


def test_cuda_unsafe() -> None:
    for body in ('system("true");', "std::thread t([] {});", 'FILE* f = fopen("x", "r");',
                 "cudaStream_t s; cudaStreamCreate(&s);", 'void* h = dlopen("libc.so", 1);',
                 'py::module_::import("os");', 'auto s2 = at::cuda::getStreamFromPool();'):
        assert "cuda-unsafe" in _cuda(body).rules, body
    for inc in ("#include <unistd.h>", '#include "/etc/passwd"', "#include <sys/socket.h>"):
        assert "cuda-unsafe" in _cuda(includes=inc).rules, inc
    assert "cuda-unsafe" in _cuda("int CAT(a, b) = a##b;").rules
    assert "cuda-unsafe" in _cuda(kwargs=', extra_ldflags=["-L/tmp", "-lfoo"]').rules


def test_cuda_sources_must_be_readable() -> None:
    assert "cuda-dynamic" in _cuda(sources='SRC.replace("relu", "gelu")').rules
    assert "cuda-dynamic" in _cuda(sources="SRC + str(len(SRC))").rules
    assert "cuda-dynamic" in _cuda(kwargs=", **{}").rules
    r = _cuda(sources='SRC + "at::re" + "lu(x);"')
    assert "cuda-vendor" in r.rules, r.reason()
    src = _CUDA.format(body="", includes="", sources="SRC", kwargs="")
    r = check_source(src.replace("_ext = load_inline", "N = 256\n_ext = load_inline").replace(
        'cuda_sources=SRC', 'cuda_sources=f"#define NT {N}\\n" + SRC'))
    assert r.ok, r.reason()
