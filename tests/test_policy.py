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


def test_pytorch_compute_in_forward_is_left_to_the_op_trace() -> None:
    """PyTorch ops, tensor methods, operators, ``@`` and torch.nn modules in forward are
    judged by what runs: the child traces every checked call's ATen ops and refuses compute
    (tests/test_op_trace.py; the ref_* and vendor_* attacks in tests/test_attacks_runtime.py).
    Statically they cannot be told from the same code on a branch the problem never takes,
    or from Python ints the inference took for tensors (issue 16)."""
    for body in ("return F.softmax(x, dim=-1)", "return x.relu()", "return x + 1",
                 "return x @ x", "return torch.matmul(x, x)", "return abs(x)",
                 "y = _launch(x)\ny += 1\nreturn y", "return torch.nn.functional.torch.relu(x)",
                 "return _launch(x) if k - 1 >= 0 else x.sum()"):
        _ok(body, imports="import torch.nn.functional as F", args="x, k=1")
    _ok("return self.act(x)", init="self.act = nn.GELU()")
    _ok("return self.lin(x)", init="self.lin = nn.Linear(4, 4)")
    # Python ints of an autograd Function's forward are not tensors to be refused
    _ok("return _Fn.apply(x, 3, 2)", extra='''
    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, num_channels, num_groups):
            per_group = num_channels // num_groups
            if num_channels % 2 != 0 or per_group == 1:
                raise ValueError("odd channels")
            return _launch(t)
    ''')


def test_ops_handed_around_are_refused() -> None:
    """A PyTorch op passed as a value can be called by Triton's own autotuner hooks, whose
    frames the op trace excuses; and numpy on the host is outside the trace altogether."""
    _rejected("reference-call", "return self.act(x)", init="self.act = F.gelu",
              imports="import torch.nn.functional as F")
    _rejected("reference-call", "return _launch(x)", extra="_mm = torch.matmul\n")
    _rejected("reference-call", "f = x.relu\nreturn _launch(x)")
    _rejected("reference-call", "f = getattr(x, 'relu')\nreturn _launch(x)")
    _rejected("reference-call", "return _launch(x)",
              extra="_HOOK = functools.partial(torch.relu_)\n", imports="import functools")
    _rejected("reference-call", "return torch.as_tensor(x.numpy().clip(0))")
    _ok("return mm(x, x)", imports="from torch import matmul as mm")  # called: the trace's
    _rejected("reference-call", "return _launch(x)", imports="from torch import matmul as mm",
              extra="_f = mm\n")


def test_autograd_function_ctx_is_the_functions_own() -> None:
    extra = '''
    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, eps):
            ctx.BLOCK_SIZE = 256
            ctx.num_warps = 4
            ctx.eps = eps
            _note(ctx, t)
            ctx.save_for_backward(t)
            return _launch(t)

        @staticmethod
        def backward(ctx, dy):
            ctx.seen = True
            return dy, None


    def _note(ctx, t):
        ctx.shape = t.shape
    '''
    _ok("return _Fn.apply(x, 1e-6)", extra=extra)
    # ...but objects the harness passes in are not
    _rejected("monkeypatch", "x.cached = 1\nreturn _launch(x)")
    _rejected("monkeypatch", "return _Fn.apply(x)", extra='''
    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            t.flag = True
            return _launch(t)
    ''')


def test_state_across_calls() -> None:
    """Inputs are fresh on every call, so a result cache fails at run time; what the policy
    still refuses is a tensor kept across calls (a result cache by construction)."""
    _rejected("caching", "self.seen[x.data_ptr()] = _launch(x)\nreturn _launch(x)",
              init="self.seen = {}")
    _rejected("caching", "self.last = _launch(x)\nreturn self.last")
    _rejected("caching", "c = self.seen\nc.append(x)\nreturn _launch(x)", init="self.seen = []")
    _rejected("caching", "_SEEN.append(_launch(x))\nreturn _launch(x)", extra="_SEEN = []")
    _rejected("caching", "global _LAST\n_LAST = _launch(x)\nreturn _LAST", extra="_LAST = None")
    _rejected("caching", "self.buf.copy_(x)\nreturn _launch(self.buf)", init="self.buf = torch.zeros(4)")
    _rejected("caching", "torch.Tensor.copy_(self.buf, x)\nreturn _launch(x)", init="self.buf = torch.zeros(4)")
    _rejected("caching", "return _f(x)", extra="@functools.lru_cache\ndef _f(t):\n    return _launch(t)\n",
              imports="import functools")
    _rejected("caching", "return _f(x)", imports="import functools",
              extra="def _g(t):\n    return _launch(t)\n\n_f = functools.lru_cache(maxsize=8)(_g)\n")
    _rejected("caching", "return _g(x.shape[0])", imports="import functools",
              extra="@functools.cache\ndef _g(n):\n    return torch.zeros(n)\n")
    _rejected("caching", "self.register_buffer('last', x)\nreturn _launch(x)")
    # a closure made in __init__ outlives every call
    _rejected("caching", "return self.memo(_launch(x))",
              init="seen = {}\nself.memo = lambda t: seen.setdefault(t.data_ptr(), t)")
    # settings kept across calls are fine: configs, counters, lazily built handles
    _ok("hit = self.table.get(x.shape[0], 1)\nreturn _launch(x) if hit else x", init="self.table = {4: 1}")
    _ok("self.calls += 1\nself.best[x.shape[-1]] = 128\nreturn _launch(x)",
        init="self.calls = 0\nself.best = {}")
    _ok("global _N\n_N = (_N or 0) + 1\nreturn _launch(x)", extra="_N = 0")
    _ok("return _launch(x) if _num_sms(x.device.index or 0) else x", imports="import functools",
        extra="@functools.lru_cache(maxsize=None)\ndef _num_sms(index: int) -> int:\n"
              "    return torch.cuda.get_device_properties(index).multi_processor_count\n")
    _ok("return _launch(x)", imports="from functools import cache")
    _ok("acc = []\ndef note(v):\n    acc.append(v)\nnote(x)\nreturn _launch(x)")  # per-call closure


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
    _ok("assert type(x).__name__ and _launch.__doc__ is None or True\nreturn _launch(x)")
    _ok("return _launch(x)", imports="from packaging import version",
        extra="_NEW = version.parse(torch.__version__) >= version.parse('2.1')\n"
              "_TRITON = triton.__version__\n")
    _rejected("dunder-access", "return _launch(x) if self.__class__ else x")
    _rejected("dunder-access", "return x.__dict__")
    _rejected("dunder-access", "return _launch(x)", extra="_launch.__doc__ = 'patched'\n")
    _rejected("introspection", "return _launch(x) if x._version >= 0 else x")
    for name in ("getattr(torch, 'rel' + 'u')", "eval('1')", "open('f')", "globals()", "vars(x)",
                 "compile('1', 'f', 'eval')", "__import__('os')", "exit()",
                 "setattr(x, name, 1)", "delattr(x, 'a')", "getattr(torch, name)"):
        _rejected("forbidden-name", f"name = 'a'\n{name}\nreturn _launch(x)")
    _rejected("dunder-access", "getattr(torch, '__dict__')\nreturn _launch(x)")
    _rejected("dunder-access", "getattr(x, '__class__')\nreturn _launch(x)")
    _rejected("forbidden-name", "return _launch(x)", extra="getattr = getattr\n")
    # constant attribute names are plain attribute accesses, with the same checks
    _ok("block = getattr(self, 'block', 128)\nsetattr(self, 'block', block)\nreturn _launch(x)")
    _rejected("internals", "getattr(torch, '_C')\nreturn _launch(x)")
    _rejected("forbidden-import", "getattr(torch, 'os').write(3, b'')\nreturn _launch(x)")
    _rejected("monkeypatch", "return _launch(x)", extra="setattr(torch, 'relu', None)\n")
    # device probes through the device module's name
    _ok("dev = 'cuda'\nif hasattr(torch, dev) and getattr(torch, dev).is_available():\n"
        "    getattr(torch, dev).synchronize()\nreturn _launch(x)")
    _ok("return _launch(input)", args="input")  # a parameter named like a builtin is not it
    _rejected("dunder-access", "return _launch(x)", extra="def __getattr__(name):\n    return name\n")
    _rejected("dunder-access", "return _launch(x)", extra="class _C:\n    def __del__(self):\n        pass\n")
    _ok("return _launch(x)", extra="class _C:\n    def __call__(self):\n        return 1\n\n"
                                   "    def __getitem__(self, grid):\n        return self\n")


def test_imports() -> None:
    for imp in ("import os", "import numpy as np", "from importlib import import_module",
                "import ctypes", "import pickle", "from . import x", "from torch import *",
                "import sys", "import inspect", "import gc", "import subprocess",
                "import importlib.machinery", "from logging import FileHandler",
                "import logging.handlers"):
        _rejected("forbidden-import" if "logging" not in imp else "forbidden-name",
                  "return _launch(x)", imports=imp)
    for imp in ("import threading", "from concurrent.futures import ThreadPoolExecutor"):
        _rejected("concurrency", "return _launch(x)", imports=imp)
    for imp in ("from torch.utils.cpp_extension import load_inline", "import typing",
                "from dataclasses import dataclass", "from triton.language.extra import libdevice",
                "import torch.nn.functional", "from __future__ import annotations",
                "import logging", "import enum", "import importlib.util", "import operator",
                "import contextlib", "import itertools", "from collections import namedtuple",
                "import copy", "import warnings", "from packaging import version",
                "from importlib.metadata import version as pkg_version",
                "from torch.autograd import Function", "from torch.amp import custom_fwd",
                "from triton.runtime import Autotuner", "from triton import KernelInterface"):
        _ok("return _launch(x)", imports=imp)
    _rejected("forbidden-name", "return _launch(x)", imports="from torch.utils.cpp_extension import load")
    _rejected("internals", "return _launch(x)", imports="from torch import _dynamo")
    _rejected("internals", "return _launch(x)", imports="import triton.testing")
    # an allowed module's other names, and modules re-exported as attributes, are still refused
    _rejected("forbidden-import", "importlib.import_module('os')\nreturn _launch(x)",
              imports="import importlib")
    _rejected("forbidden-import", "importlib.util.spec_from_file_location('m', 'p')\nreturn _launch(x)",
              imports="import importlib.util")
    _rejected("forbidden-name", "logging.basicConfig(filename='/tmp/x')\nreturn _launch(x)",
              imports="import logging")
    _rejected("forbidden-import", "logging.os.write(3, b'')\nreturn _launch(x)", imports="import logging")
    _rejected("forbidden-name", "f = operator.attrgetter('__class__')\nreturn _launch(x)",
              imports="import operator")
    _rejected("forbidden-import", "torch.nn.functional.importlib.import_module('os')\nreturn _launch(x)")
    _rejected("forbidden-import", "torch.builtins.print(1)\nreturn _launch(x)")
    _rejected("forbidden-import", "tl.core.builtins.print(1)\nreturn _launch(x)")
    _rejected("forbidden-import", "return _launch(x)", extra="_insp = triton.language.core.inspect\n")


def test_production_plumbing_is_fine() -> None:
    """What kernel libraries carry around their kernels (issue 16)."""
    _ok("logger.debug(f'rows={x.shape[0]}')\nreturn _launch(x)", imports=textwrap.dedent('''
    import enum
    import logging
    import operator
    from contextlib import contextmanager
    from functools import lru_cache, reduce

    try:
        from triton.language.extra import libdevice
    except ImportError:
        libdevice = None
    logger = logging.getLogger(__name__)
    HAS_XPU = hasattr(torch, "xpu") and torch.xpu.is_available()


    class Mode(enum.IntEnum):
        FAST = 0
        SAFE = 1


    @lru_cache(maxsize=None)
    def _device_settings(index: int) -> tuple[int, int]:
        props = torch.cuda.get_device_properties(index)
        return props.multi_processor_count, reduce(operator.mul, (1, 2), 1)


    @contextmanager
    def _device_guard(t):
        if t.is_cuda:
            with torch.cuda.device(t.device):
                yield
        else:
            yield
    '''))
    _ok("with _tuned(x) as cfg:\n    return _launch(x) if cfg else x", extra='''
    class _Launcher(triton.KernelInterface):
        def __init__(self, fn):
            self.fn = fn
            self.cache = {}

        def run(self, *args, grid, warmup=False, **kwargs):
            key = tuple(a.shape[0] for a in args if hasattr(a, "shape"))
            if key not in self.cache:
                self.cache[key] = dict(kwargs)
            return self.fn.run(*args, grid=grid, warmup=warmup, **self.cache[key])


    class _Tuner(triton.runtime.Autotuner):
        def prune_configs(self, kwargs):
            return [c for c in super().prune_configs(kwargs) if c.num_warps <= 8]


    def _tuned(t):
        return contextlib.nullcontext(_Launcher(_k))
    ''', imports="import contextlib")


def test_internals_streams_and_patching() -> None:
    _rejected("concurrency", "s = torch.cuda.Stream()\nreturn _launch(x)")
    _rejected("concurrency", "e = torch.cuda.Event(enable_timing=True)\nreturn _launch(x)")
    _rejected("concurrency", "cu = torch.cuda\ns = cu.Stream()\nreturn _launch(x)")  # alias
    _rejected("introspection", "m = torch.cuda\nm = m\nreturn _launch(x)")  # untrackable alias
    _rejected("internals", "torch.backends.cuda.matmul.allow_tf32 = True\nreturn _launch(x)")
    _rejected("internals", "torch.set_float32_matmul_precision('medium')\nreturn _launch(x)")
    _rejected("internals", "return torch.ops.aten.relu(x)")
    _rejected("internals", "torch.xpu.set_device(0)\nreturn _launch(x)")
    _ok("assert torch.xpu.is_available() or torch.cuda.is_available() or True\nreturn _launch(x)")
    _rejected("internals", "return _launch(x)", extra="_do_bench = triton.testing.do_bench\n")
    _rejected("internals", "return _launch(x)", extra="_c = triton.runtime.cache.get_cache_manager\n")
    _rejected("monkeypatch", "return _launch(x)", extra="torch.matmul = lambda a, b: a\n")
    _rejected("monkeypatch", "return _launch(x)", extra="del torch.relu\n")
    _rejected("monkeypatch", "return _launch(x)", extra="_launch.__wrapped__ = None\n")
    _rejected("monkeypatch", "return _launch(x)", extra="_k.fn = None\n")
    _rejected("monkeypatch", "return _launch(x)", extra="logger = print\nlogger.x = 1\n")
    _ok("cfg = _Cfg()\ncfg.block = 128\nreturn _launch(x)",
        extra="class _Cfg:\n    block = 64\n\n_CFG = _Cfg()\n_CFG.block = 256\n")


def test_try_except_and_subclasses() -> None:
    # a catch-all around code that handles tensors is the fallback attack ...
    _rejected("try-except", "try:\n    return _launch(x)\nexcept Exception:\n    return x")
    _rejected("try-except", "try:\n    return _launch(x)\nexcept:\n    return x")
    _rejected("try-except", "try:\n    return _launch(x)\nexcept (ValueError, RuntimeError):\n    return x")
    _rejected("try-except", "with contextlib.suppress(Exception):\n    return _launch(x)\nreturn x",
              imports="import contextlib")
    _rejected("try-except", "try:\n    y = _launch(x)\nfinally:\n    return x")
    # ... a narrow handler, a probe that touches no tensor, or an import guard is not
    _ok("try:\n    return _launch(x)\nexcept triton.OutOfResources:\n    return _launch(x)")
    _ok("try:\n    return _launch(x)\nfinally:\n    pass")
    _ok("return _launch(x) if _is_hip() else _launch(x)", extra='''
    def _is_hip():
        try:
            return torch.version.hip is not None
        except Exception:
            return False
    ''')
    _ok("return _launch(x)", imports="try:\n    from triton.language.extra.cuda import libdevice\n"
                                      "except ImportError:\n    libdevice = None")
    # a guard does not make a refused module importable: importing it runs its code
    _rejected("forbidden-import", "return _launch(x)",
              imports="try:\n    import flash_attn\nexcept ImportError:\n    flash_attn = None")
    _rejected("tensor-subclass", "return _launch(x)", extra="class T(torch.Tensor):\n    pass\n")
    _rejected("tensor-subclass", "return _launch(x)",
              extra="class T:\n    def __torch_dispatch__(self):\n        pass\n")
    _rejected("forbidden-name", "return type('T', (torch.Tensor,), {})(x)")
    _rejected("internals", "return _launch(x)", extra="class _G(torch.fx.Interpreter):\n    pass\n")
    _rejected("internals", "return _launch(x)", extra="class _C(triton.runtime.cache.FileCacheManager):\n    pass\n")
    _ok("return _launch(x)", extra="class _N(nn.LayerNorm):\n    def forward(self, t):\n        return _launch(t)\n")


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


def test_escapes_through_allowed_objects_are_refused() -> None:
    """What the relaxed imports and builtins could otherwise reach: files through tensor
    storages and module specs, the caller's frames through log records or warnings, host
    compute outside the op trace, a with-block that swallows errors."""
    _rejected("forbidden-name", "x.untyped_storage().from_file('job.json', False, 8)\n"
              "return _launch(x)")
    _rejected("reference-call", "y = getattr(x, 'numpy')()\nreturn _launch(x)")
    _rejected("reference-call", "x.cpu().map_(x, lambda a, b: a)\nreturn _launch(x)")
    _rejected("forbidden-name", "s = importlib.util.find_spec('torch')\nreturn _launch(x)",
              imports="import importlib.util")
    _rejected("forbidden-name", "assert importlib.util.find_spec('os.path') is None\n"
              "return _launch(x)", imports="import importlib.util")
    _ok("assert importlib.util.find_spec('flash_attn') is None or True\nreturn _launch(x)",
        imports="import importlib.util")
    _rejected("forbidden-name", "dev = 'cuda'\ngetattr(torch, dev).device\nreturn _launch(x)")
    log = "import logging\nlog = logging.getLogger(__name__)"
    _rejected("introspection", "log.addHandler(_Mine())\nreturn _launch(x)", imports=log,
              extra="class _Mine:\n    level = 0\n")
    _rejected("introspection", "log.addFilter(lambda r: True)\nreturn _launch(x)", imports=log)
    _rejected("introspection", "h = log.handlers\nreturn _launch(x)", imports=log)
    _rejected("forbidden-name", "return _launch(x)", imports=log,
              extra="class _F(logging.Filter):\n    pass\n")
    _rejected("forbidden-name", "return _launch(x)", imports="import warnings",
              extra="_W = warnings.catch_warnings(record=True)\n")
    _ok("log.addHandler(logging.NullHandler())\nlog.warning('rows=%d', x.shape[0])\n"
        "return _launch(x)", imports=log)
    _rejected("try-except", "with _G():\n    return _launch(x)\nreturn x",
              extra="class _G:\n    def __enter__(self):\n        return self\n\n"
                    "    def __exit__(self, *exc):\n        return True\n")


# --------------------------------------------------------------------------------------------
# Honest idioms an audit found refused (Triton tutorials, library launchers), and the cheats
# next to each that must stay refused
# --------------------------------------------------------------------------------------------
_TD = "from triton.tools.tensor_descriptor import TensorDescriptor"
_ALLOC = ("def _alloc(size, alignment, stream):\n"
          "    return torch.empty(size, device='cuda', dtype=torch.int8)\n\n\n"
          "triton.set_allocator(_alloc)\n")


def test_tensor_descriptors_are_fine() -> None:
    """Host-side TMA descriptors are Triton's route since block pointers went away (tutorials
    06 and 09): ``TensorDescriptor.from_tensor`` / ``TensorDescriptor(...)`` only describe a
    tensor for the kernel. The rest of triton.tools (compile, disasm, link ...) stays out."""
    _ok("a = TensorDescriptor.from_tensor(x, [16, 16])\n"
        "b = TensorDescriptor(x, x.shape, x.stride(), [16, 16])\nreturn _launch(x)", imports=_TD)
    _ok("d = triton.tools.tensor_descriptor.TensorDescriptor.from_tensor(x, [16])\n"
        "return _launch(x)", imports="import triton.tools.tensor_descriptor")
    _ok("d = td.TensorDescriptor.from_tensor(x, [16])\nreturn _launch(x)",
        imports="from triton.tools import tensor_descriptor as td")
    _rejected("monkeypatch", "return _launch(x)", imports=_TD,
              extra="TensorDescriptor.from_tensor = None\n")
    for imp in ("from triton.tools import disasm", "import triton.tools.compile",
                "from triton.tools.tensor_descriptor import canonicalize_dtype"):
        _rejected("internals", "return _launch(x)", imports=imp)


def test_triton_set_allocator_is_fine() -> None:
    """``triton.set_allocator(fn)`` (tutorial 09, device-side ``tl.make_tensor_descriptor``)
    only registers the function Triton's launcher calls for a kernel's global scratch. It
    opens no cheat route: the allocator gets (size, alignment, stream) and no tensor; it runs
    in the candidate's own frame, called from triton/backends/*/driver.py, which is not among
    the Triton files the op trace excuses (sandbox/_child.py, _TRITON_BENCH_FILES), so any
    PyTorch op it runs is traced as forward's; the setting is a ContextVar of the candidate's
    child process, which neither the reference (parent) nor the baselines (their own children)
    share; and a PyTorch op handed over as the allocator is still a reference-call. Triton's
    other allocator hooks (set_profile_allocator, _allocation) stay refused."""
    _ok("return _launch(x)", extra=_ALLOC)
    _rejected("reference-call", "return _launch(x)", extra="triton.set_allocator(torch.relu)\n")
    _rejected("internals", "return _launch(x)",
              extra="triton.runtime._allocation.set_profile_allocator(None)\n")
    _rejected("monkeypatch", "return _launch(x)", extra="triton.set_allocator = print\n")


def test_bare_decorators_are_calls() -> None:
    """``@torch.compiler.disable`` calls ``disable`` with the function, as
    ``@torch.compiler.disable()`` calls it with nothing: a decorator is called, not handed
    around. A bare decorator that is a PyTorch op is judged as that call would be (left to
    the op trace; ``torch.relu(f)`` fails at import anyway); an op handed to a decorator
    factory is still a reference."""
    deco = "@{}\ndef _f(t):\n    return _launch(t)\n"
    for d in ("torch.compiler.disable", "torch.compiler.allow_in_graph",
              "torch.compiler.disable()"):
        _ok("return _f(x)", extra=deco.format(d))
    _ok("return _f(x)", imports="from torch.compiler import disable", extra=deco.format("disable"))
    assert _check("return _f(x)", extra=deco.format("torch.relu")).rules == \
        _check("return _f(x)", extra=deco.format("_id") + "\n_f = torch.relu(_f)\n"
               "\n\ndef _id(g):\n    return g\n").rules
    _rejected("reference-call", "return _f(x)", imports="import functools",
              extra=deco.format("functools.partial(torch.relu)"))
    _rejected("reference-call", "return _launch(x)", extra="_d = torch.compiler.disable\n")
    _rejected("reference-call", "return self.act(x)", init="self.act = torch.relu")


def test_precision_flags_may_be_read_never_written() -> None:
    """A GEMM may follow PyTorch's TF32 settings when it picks tl.dot's input_precision (as
    Inductor does); changing them changes what the reference and the baselines are held to."""
    _ok("p = 'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'\n"
        "q = torch.backends.cudnn.allow_tf32\n"
        "r = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction\n"
        "assert p and (q or r or True)\nreturn _launch(x)")
    for write in ("torch.backends.cuda.matmul.allow_tf32 = True",
                  "torch.backends.cudnn.allow_tf32 = False",
                  "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction |= True",
                  "del torch.backends.cuda.matmul.allow_tf32",
                  "setattr(torch.backends.cuda.matmul, 'allow_tf32', True)",
                  "m = torch.backends.cuda.matmul\nm.allow_tf32 = True",
                  "torch.set_float32_matmul_precision('high')",
                  "torch.backends.cudnn.benchmark = True",
                  "with torch.backends.cuda.sdp_kernel(enable_flash=True):\n    pass",
                  "with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):\n    pass"):
        _rejected("internals", f"{write}\nreturn _launch(x)")
        _rejected("internals", "return _launch(x)", extra=write + "\n")
    _rejected("internals", "return _launch(x)", imports="import torch.backends.cudnn as cudnn")


def test_init_handles_is_the_one_private_call() -> None:
    """Triton's tutorial 02 loads a warmed-up kernel to read its register count:
    ``kernel = softmax_kernel.warmup(...); kernel._init_handles(); n_regs = kernel.n_regs``.
    Calling ``_init_handles`` is allowed on any object; other private attributes, and this
    one taken as a value, are not."""
    warm = "k = _k.warmup(x, x, 4, BLOCK=256, grid=(1,))\n"
    _ok(warm + "k._init_handles()\nassert k.n_regs >= 0 and k.n_spills >= 0\nreturn _launch(x)")
    _ok(warm + "getattr(k, '_init_handles')()\nreturn _launch(x)")
    _rejected("introspection", warm + "f = k._init_handles\nreturn _launch(x)")
    _rejected("introspection", warm + "k._init_handles()\nk._hash()\nreturn _launch(x)")
    _rejected("internals", "triton.compiler.CompiledKernel._init_handles(None)\nreturn _launch(x)")


def test_a_handler_that_only_reraises_hides_nothing() -> None:
    """``except Exception as e: raise RuntimeError("...") from e`` lets every error out. It
    must raise the caught exception or a catch-all class (an ``except ValueError`` further
    out could turn ``raise ValueError`` into a fallback), and build its message from what
    cannot fail (a failing message is another exception a narrow handler could catch)."""
    t = "try:\n    return _launch(x)\nexcept Exception as e:\n"
    for body in ("raise", "raise e", "raise RuntimeError",
                 "raise RuntimeError(f'relu failed for {tuple(x.shape)} {x.dtype} on "
                 "{x.device}: {e!r}') from e",
                 "msg = 'relu failed: ' + str(e)\ndetail = f'{type(e).__name__}: {msg}'\n"
                 "raise RuntimeError(detail) from None"):
        _ok(t + textwrap.indent(body, "    "))
    _ok("try:\n    return _launch(x)\nexcept:\n    raise")
    for body in ("return x", "raise ValueError('bad') from e", "print(e)\nraise",
                 "y = _launch(x)\nraise", "e = 'x'\nraise e", "raise RuntimeError(f'{e.nope}')",
                 "raise RuntimeError(f'{x.shape:d}')", "raise RuntimeError('%d %d' % (1,))",
                 "raise RuntimeError('{0}{1}'.format(1))", "raise RuntimeError(f'{1 / 0}')",
                 "raise RuntimeError(f'{tuple(0)}')", "raise RuntimeError(f'{self}')",
                 "raise RuntimeError('a' + x.shape)", "x = 'x'\nraise RuntimeError(f'{x.shape}')",
                 "raise RuntimeError('x') from _launch(x)"):
        _rejected("try-except", t + textwrap.indent(body, "    "))
    _rejected("try-except", t + "    raise RuntimeError('x') from e",
              extra="class RuntimeError(ValueError):\n    pass\n")
    _rejected("try-except", t + "    raise _Err('x') from e",
              extra="class _Err(Exception):\n    pass\n")


_CM_USE = "with _safe():\n    return _launch(x)\nreturn x"


def test_a_contextmanager_that_swallows_is_refused() -> None:
    """contextlib.contextmanager throws the with-block's error into the generator at its yield;
    a catch-all handler there turns ``with _safe(): kernel[grid](...)`` into a silent
    fallback. The definition is refused -- any generator catching broadly around its own
    yield, however contextmanager reaches it (decorator, alias, a call, a partial), since
    a plain generator never receives errors there. Handlers that only re-raise, narrow
    handlers, and try/finally (restoring a device or a mode) are what libraries write."""
    for deco, imports in (("@contextlib.contextmanager", "import contextlib"),
                          ("@contextmanager", "from contextlib import contextmanager"),
                          ("@cm", "from contextlib import contextmanager as cm"),
                          ("", "")):
        for handler in ("except Exception:\n        pass", "except:\n        pass",
                        "except BaseException:\n        return",
                        "except (ValueError, RuntimeError) as e:\n        log = str(e)",
                        "except _E:\n        pass"):
            gen = f"{deco}\ndef _safe():\n    try:\n        yield\n    {handler}\n"
            extra = gen + "\n\n_E = Exception\n" + ("" if deco else "_safe = contextlib.contextmanager(_safe)\n")
            r = _rejected("try-except", _CM_USE, imports=imports or "import contextlib", extra=extra)
            assert "around a yield" in r.reason()
    # the yield nested in a loop or a with, suppress() around it, a yield from
    _rejected("try-except", _CM_USE, imports="import contextlib",
              extra="@contextlib.contextmanager\ndef _safe():\n    try:\n        for _ in range(1):\n"
                    "            yield\n    except Exception:\n        pass\n")
    _rejected("try-except", _CM_USE, imports="import contextlib",
              extra="@contextlib.contextmanager\ndef _safe():\n"
                    "    with contextlib.suppress(Exception):\n        yield\n")
    _rejected("try-except", _CM_USE, imports="import contextlib",
              extra="def _inner():\n    yield\n\n\n@contextlib.contextmanager\ndef _safe():\n"
                    "    try:\n        yield from _inner()\n    except Exception:\n        pass\n")
    _rejected("try-except", _CM_USE, imports="import contextlib",  # (already refused)
              extra="@contextlib.contextmanager\ndef _safe():\n    try:\n        yield\n"
                    "    finally:\n        return\n")
    # honest: try/finally restoring state, a handler that only re-raises, a narrow one,
    # a yield outside the try, and a nested function's yield
    for body in ("prev = torch.get_default_dtype()\n    try:\n        yield\n    finally:\n"
                 "        assert prev is not None",
                 "try:\n        yield\n    except Exception as e:\n"
                 "        raise RuntimeError(f'launch failed: {e!r}') from e",
                 "try:\n        yield\n    except BaseException:\n        raise",
                 "try:\n        yield\n    except (ImportError, triton.OutOfResources):\n"
                 "        pass",
                 "try:\n        n = int('8')\n    except Exception:\n        n = 4\n    yield n",
                 "def _g():\n        try:\n            return 1\n        except Exception:\n"
                 "            return 0\n    yield _g()"):
        _ok("with _safe():\n    return _launch(x)", imports="import contextlib",
            extra=f"@contextlib.contextmanager\ndef _safe():\n    {body}\n")
    _ok("with _guard(x):\n    return _launch(x)", imports="import contextlib", extra="""
        @contextlib.contextmanager
        def _guard(t):
            ctx = torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
            with ctx:
                yield
        """)


def test_exit_stack_push_is_refused() -> None:
    """``ExitStack.push(cb)`` registers an exit callback whose true return value makes the
    stack's __exit__ report the with-block's error handled. Any callable can return true --
    a lambda, a def, ``slice``, a class (its instance), another object's __exit__ -- so
    judging the argument is not sound, and honest kernels have no use for push: it is
    refused outright, however reached (``getattr(stack, "push")``, unbound
    ``ExitStack.push``, taken as a value). ``enter_context(cm)`` defers to cm's own __exit__
    (judged where cm is defined: a class's __exit__, a contextmanager generator, suppress()
    outside a with statement) and ``callback(fn)`` ignores what fn returns, so both pass.
    (AsyncExitStack and its push_async_exit are not importable at all.)"""
    es = "with contextlib.ExitStack() as s:\n    {}\n    return _launch(x)\nreturn x"
    for push in ("s.push(lambda *exc: True)", "s.push(_swallow)", "s.push(slice)",
                 "s.push(_G())", "s.push(_G().__exit__)", "getattr(s, 'push')(_swallow)",
                 "contextlib.ExitStack.push(s, _swallow)", "p = s.push\n    p(_swallow)",
                 "s.push(lambda *exc: None)"):
        _rejected("try-except", es.format(push), imports="import contextlib", extra="""
            def _swallow(*exc):
                return True


            class _G:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    pass
            """)
    _rejected("try-except", "with _S():\n    return _launch(x)\nreturn x",
              imports="import contextlib", extra="""
        class _S(contextlib.ExitStack):
            def __init__(self):
                super().__init__()
                self.push(lambda *exc: True)
        """)
    _ok("with contextlib.ExitStack() as s:\n    s.enter_context(torch.no_grad())\n"
        "    s.enter_context(contextlib.nullcontext())\n    s.callback(_restore, 1)\n"
        "    s.callback(lambda: True)\n    return _launch(x)", imports="import contextlib",
        extra="def _restore(v):\n    return True\n")
    _ok("with contextlib.ExitStack() as s:\n    s.enter_context(_G())\n    return _launch(x)",
        imports="import contextlib",
        extra="class _G:\n    def __enter__(self):\n        return self\n\n"
              "    def __exit__(self, *exc):\n        return None\n")


def test_suppress_only_in_a_with_statement() -> None:
    """``contextlib.suppress(Exception)`` swallows whatever it wraps; the with-statement rule
    judges what its block does, so a broad one created anywhere else (entered through
    ExitStack.enter_context or push, stored and entered later) is refused, and so is the
    class taken as a value (subclassed, partial'd): what it will suppress cannot be judged
    there. A narrow suppress anywhere, and a broad one around module-level imports, pass."""
    cl = "import contextlib"
    _rejected("try-except", "with contextlib.ExitStack() as s:\n"
              "    s.enter_context(contextlib.suppress(Exception))\n    return _launch(x)\n"
              "return x", imports=cl)
    _rejected("try-except", "with _Q:\n    return _launch(x)\nreturn x", imports=cl,
              extra="_Q = contextlib.suppress(Exception)\n")
    _rejected("try-except", "with _Q(Exception):\n    return _launch(x)\nreturn x", imports=cl,
              extra="class _Q(contextlib.suppress):\n    pass\n")
    _rejected("try-except", "with _Q():\n    return _launch(x)\nreturn x",
              imports=cl + "\nimport functools",
              extra="_Q = functools.partial(contextlib.suppress, Exception)\n")
    _rejected("try-except", "with suppress(*_E):\n    return _launch(x)\nreturn x",
              imports="from contextlib import suppress", extra="_E = [ValueError]\n")
    _rejected("try-except", "with contextlib.suppress(_E):\n    return _launch(x)\nreturn x",
              imports=cl, extra="_E = BaseException\n")
    _ok("with contextlib.suppress(ImportError):\n    import math as _m\n"
        "with contextlib.ExitStack() as s:\n    s.enter_context(contextlib.suppress(KeyError))\n"
        "    return _launch(x)", imports=cl)
    _ok("return _launch(x)", imports=cl + "\n\nwith contextlib.suppress(Exception):\n"
        "    import math as _m\n_sup = contextlib.suppress\nwith _sup(ImportError):\n"
        "    import math as _m2\n")


def _exit_cls(body: str) -> str:
    return ("def _helper(*a):\n    return True\n\n\nclass _G:\n    def __enter__(self):\n"
            "        return self\n\n    def restore(self):\n        return True\n\n"
            "    def __exit__(self, exc_type, exc, tb):\n" + textwrap.indent(body, " " * 8) + "\n")


def test_exit_that_may_return_true_is_refused() -> None:
    """A with-block's error is swallowed when ``type(cm).__exit__`` returns anything true, so
    an __exit__ may return only None or a false constant: a computed value
    (``exc_type is not None``, ``isinstance(exc, Exception)``, a helper's result) is
    refused, and so is a generator __exit__ (it returns a generator object), a decorated one
    (the decorator decides), and an async one. ``__aexit__`` is refused outright (async;
    not a permitted dunder) and judged the same way."""
    g = "with _G():\n    return _launch(x)\nreturn x"
    for body in ("return exc_type is not None", "return isinstance(exc, Exception)",
                 "return 1", "return self", "return _helper()", "yield",
                 "if exc_type is None:\n    return False\nreturn True",
                 "return self.restore()"):
        r = _rejected("try-except", g, extra=_exit_cls(body))
        assert "__exit__" in r.reason()
    _rejected("try-except", g, extra=_exit_cls("pass").replace(
        "    def __exit__", "    @staticmethod\n    def __exit__"))
    _rejected("try-except", g, extra="def _d(f):\n    return _helper\n\n\n" + _exit_cls(
        "pass").replace("    def __exit__", "    @_d\n    def __exit__"))
    _rejected("try-except", "return _launch(x)",
              extra="class _G:\n    async def __aexit__(self, *exc):\n        return True\n")
    # honest: None, False, a bare return, cleanup that raises, a nested helper's return
    for body in ("pass", "return None", "return False", "return", "self.restore()",
                 "if exc_type is not None:\n    raise RuntimeError('launch failed')",
                 "def _f():\n    return 1\n\n_f()"):
        _ok("with _G():\n    return _launch(x)", extra=_exit_cls(body))


def test_exception_classes_are_judged_by_value() -> None:
    """A catch-all is refused however it is spelled: a module-level alias or tuple bound
    once (judged by its value), an import alias, a rebound or computed name (a parameter, a
    local, a call), which could be any class. Builtin classes below RuntimeError, the file's
    own exception classes, imported modules' narrow classes (re-imports of one module
    included) and module-level tuples of them stay narrow."""
    t = "try:\n    return _launch(x)\nexcept {}:\n    return x"
    for spec, extra in (("_E", "_E = Exception\n"), ("_E", "_E = (ValueError, BaseException)\n"),
                        ("_E", "_F = RuntimeError\n_E = (_F,)\n"),
                        ("_E", "_E = ValueError\n_E = Exception\n"),
                        ("(_E, KeyError)", "def _E():\n    pass\n\n\n_E = Exception\n"),
                        ("self.err", ""), ("type(x)", ""), ("_errs()[0]", "def _errs():\n"
                                                             "    return [Exception]\n")):
        r = _rejected("try-except", t.format(spec), extra=extra)
        assert "around code that handles tensors" in r.reason()
    _rejected("try-except", "e = Exception\n" + t.format("e"))
    _rejected("try-except", "return _f(x)",
              extra="def _f(t, err=Exception):\n    try:\n        return _launch(t)\n"
                    "    except err:\n        return t\n")
    _rejected("try-except", t.format("E"), imports="from triton import OutOfResources as E",
              extra="E = Exception\n")
    for spec, imports, extra in (
            ("_E", "", "_E = (ImportError, AttributeError)\n"),
            ("_Retry", "", "class _Retry(Exception):\n    pass\n"),
            ("torch.cuda.OutOfMemoryError", "", ""),
            ("(OSError, KeyError, triton.OutOfResources)", "", ""),
            ("importlib.metadata.PackageNotFoundError",
             "import importlib.metadata\nimport importlib.util", ""),
            ("PackageNotFoundError", "from importlib.metadata import PackageNotFoundError", "")):
        _ok(t.format(spec), imports=imports, extra=extra)


def test_scoped_modes_and_probes_are_fine() -> None:
    """``with torch.set_grad_enabled(False)`` is torch.no_grad; autocast, as a with-block or a
    decorator, changes only the dtype of PyTorch ops run inside it (and forward may run none:
    the op trace); ``torch.jit.is_scripting()`` is a probe. Global setters, and these mode
    switches anywhere but a with item without ``as`` (entered by hand, kept as a value,
    set_grad_enabled called bare or as a decorator, which switches the mode at import),
    stay refused."""
    _ok("with torch.set_grad_enabled(False):\n    return _launch(x)")
    _ok("with torch.autocast(device_type=x.device.type, enabled=False):\n    y = _launch(x)\n"
        "with torch.amp.autocast('cuda', dtype=torch.bfloat16), torch.no_grad():\n"
        "    return _launch(y)")
    _ok("with torch.cuda.amp.autocast(enabled=False):\n    return _launch(x)")
    _ok("with autocast('cuda', enabled=False):\n    return _launch(x)",
        imports="from torch.amp import autocast")
    _ok("return _f(x)", extra="@torch.autocast('cuda', enabled=False)\ndef _f(t):\n"
                              "    return _launch(t)\n")
    _ok("if torch.jit.is_scripting() or torch.jit.is_tracing():\n    pass\nreturn _launch(x)")
    for bad in ("torch.set_grad_enabled(False)", "g = torch.set_grad_enabled(False)",
                "torch.set_autocast_enabled(True)", "torch.set_autocast_gpu_dtype(torch.half)",
                "a = torch.autocast('cuda')\na.__enter__()", "torch.autocast('cuda').__enter__()",
                "with torch.autocast('cuda') as a:\n    pass\na.__enter__()",
                "s = torch.amp.GradScaler()", "f = torch.jit.script(_launch)",
                "f = torch.jit.trace(_launch, x)"):
        _rejected("internals", f"{bad}\nreturn _launch(x)")
    _rejected("internals", "return _f(x)", extra="@torch.set_grad_enabled(False)\ndef _f(t):\n"
                                                 "    return _launch(t)\n")
    _rejected("internals", "return _launch(x)", imports="from torch import autocast",
              extra="_A = autocast\n")
    _rejected("internals", "return _launch(x)", imports="import torch.amp")
    _rejected("reference-call", "f = torch.jit.is_scripting\nreturn _launch(x)")


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


@pytest.mark.parametrize("source, says", [
    ("", "the candidate file is empty"),
    ("\n# nothing yet\n", "the candidate file is empty (no code)"),
    ("   \n\n", "the candidate file is empty"),
    ("import torch\n\nclass Model(torch.nn.Module):\n    pass\n", "defines no class ModelNew"),
    ("import torch\n\nclass Mine(torch.nn.Module):\n    pass\n\nModelNew = Mine\n",
     "no kernel: ModelNew must launch"),
    ("import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n"
     "        return x\n", "no kernel: ModelNew must launch"),
])
def test_no_kernel_says_what_is_missing_first(source, says):
    (v,) = [v for v in check_source(source).violations if v.rule == "no-kernel"]
    assert says in v.message, v.message


def test_candidate_sources_are_parsed_one_thread_at_a_time(monkeypatch) -> None:
    """CPython 3.11's AST constructor keeps its recursion depth in state all threads share,
    and two parses at once raised ``SystemError: AST constructor recursion depth mismatch``
    in CI (python/cpython#106905). Every parse of a candidate (policy check, verifier,
    backend detection, agents, tuning, export) goes through ``sandbox.policy.parse``,
    which lets one thread parse at a time: a slowed ``ast.parse`` never sees two callers."""
    import ast
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agents.extract import parses
    from kbench.export._trace import rewrite_launches
    from sandbox import policy

    real, inside, overlaps = ast.parse, [0], [0]
    mu = threading.Lock()

    def slow_parse(*args, **kwargs):
        with mu:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        time.sleep(0.01)
        try:
            return real(*args, **kwargs)
        finally:
            with mu:
                inside[0] -= 1

    monkeypatch.setattr(ast, "parse", slow_parse)
    src = "import torch\n\nclass ModelNew(torch.nn.Module):\n    pass\n"
    calls = [lambda: policy.check_source(src), lambda: policy.detect_backend(src),
             lambda: parses(src), lambda: rewrite_launches(src)] * 6
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda f: f(), calls))
    assert overlaps[0] == 0
