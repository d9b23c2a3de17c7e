"""The verifier end to end on CPU (Triton interpreter): honest candidates pass, every fault
becomes its status with a reason, and the orchestrator never crashes."""

from __future__ import annotations

import json
import textwrap

import pytest

from kbench.problems import load
from sandbox import Limits, Status, verify
from tests.fakes import relu as honest_relu

_TUNED = 'BLOCK = 256\nTUNE = {"BLOCK": [128, 256, 512]}\n'
RELU_KERNEL = honest_relu.RELU_KERNEL.replace("BLOCK = 256\n", _TUNED)  # tunable: the knobs tests
HONEST = honest_relu.RELU.replace("BLOCK = 256\n", _TUNED)


FAST = Limits(import_s=120, check_s=60, trials=2, derived_trials=2)


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


def run(spec, source, limits=FAST, **kw):
    return verify(spec, textwrap.dedent(source), device="cpu", limits=limits, **kw)


def test_honest_candidate_is_correct_on_declared_and_derived_shapes(relu):
    v = run(relu, HONEST)
    assert v.status is Status.CORRECT, v.reason
    assert v.backend == "triton"
    names = [s.name for s in v.shapes]
    assert set(relu.cpu_shapes) <= set(names)
    assert any(s.derived for s in v.shapes), "kbench derives at least one unseen shape"
    assert all(s.passed and s.max_abs_err == 0.0 for s in v.shapes)
    assert not v.timing_available and v.speedup_eager is None and v.sol_pct is None


def test_knobs_are_applied_and_checked_against_tune(relu):
    assert run(relu, HONEST, knobs={"BLOCK": 128}).status is Status.CORRECT
    v = run(relu, HONEST, knobs={"NOT_A_KNOB": 1})
    assert v.status is Status.REJECTED and "TUNE" in v.reason


def test_syntax_error_is_compile_error_with_line(relu):
    v = run(relu, "class ModelNew(:\n    pass\n")
    assert v.status is Status.COMPILE_ERROR and "line 1" in v.reason


def test_missing_modelnew(relu):
    v = run(relu, RELU_KERNEL + "\n\nclass Other(nn.Module):\n    pass\n")
    assert v.status is Status.COMPILE_ERROR and "ModelNew" in v.reason


def test_wrong_constructor_signature(relu):
    src = HONEST.replace("class ModelNew(nn.Module):\n", "class ModelNew(nn.Module):\n"
                         "    def __init__(self, width):\n        super().__init__()\n\n")
    v = run(relu, src)
    assert v.status is Status.RUNTIME_ERROR
    assert "TypeError" in v.reason and "build" in v.reason


def test_exception_in_forward_names_the_error(relu):
    src = HONEST.replace("        x = x.contiguous()\n",
                         "        x = x.contiguous()\n        raise ValueError('boom in forward')\n")
    v = run(relu, src)
    assert v.status is Status.RUNTIME_ERROR
    assert v.reason.startswith("ValueError: boom in forward")


def test_infinite_loop_times_out_and_is_killed(relu):
    src = HONEST.replace("        x = x.contiguous()\n",
                         "        x = x.contiguous()\n        while True:\n            pass\n")
    v = run(relu, src, limits=Limits(import_s=120, check_s=4, trials=2))
    assert v.status is Status.TIMEOUT and "killed" in v.reason


def test_infinite_loop_at_import_times_out(relu):
    src = HONEST + "\nwhile True:\n    pass\n"
    v = run(relu, src, limits=Limits(import_s=4, check_s=60, trials=2))
    assert v.status is Status.TIMEOUT and "import" in v.reason


def test_segfault_in_kernel_is_runtime_error(relu):
    # An unmasked load a terabyte past the tensor: the interpreter dereferences it.
    src = HONEST.replace("_relu[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK)",
                         "_oob[(1,)](x, y, 1 << 40, BLOCK=16)") + textwrap.dedent('''

        @triton.jit
        def _oob(x_ptr, y_ptr, off, BLOCK: tl.constexpr):
            v = tl.load(x_ptr + tl.arange(0, BLOCK) + off)
            tl.store(y_ptr + tl.arange(0, BLOCK), v)
        ''')
    v = run(relu, src)
    assert v.status is Status.RUNTIME_ERROR
    assert "SIGSEGV" in v.reason or "SIGBUS" in v.reason


def test_out_of_memory_is_runtime_error(relu):
    src = HONEST.replace("        y = torch.empty_like(x)\n",
                         "        y = torch.empty_like(x)\n        big = torch.empty(1 << 45)\n")
    v = run(relu, src)
    assert v.status is Status.RUNTIME_ERROR and "out of memory" in v.reason


def test_compile_error_in_kernel_reports_the_compiler_message(relu):
    """On CPU, Triton's interpreter meets the bad call when the kernel first runs, so it is a
    run-time error of the first trial; its headline is the interpreter's own message (not
    just the source line echoed in the frames below it)."""
    src = HONEST.replace("tl.maximum(x, 0.0)", "tl.no_such_function(x)")
    v = run(relu, src)
    assert v.status is Status.RUNTIME_ERROR, (v.status, v.reason)
    headline = v.reason.splitlines()[0]
    assert "has no attribute 'no_such_function'" in headline, headline
    assert "(during trial " in headline, headline


def test_cuda_candidate_without_gpu_is_unsupported(relu):
    src = '''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_CPP = "torch::Tensor relu(torch::Tensor x);"
_CU = """
__global__ void relu_k(const float* x, float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}
torch::Tensor relu(torch::Tensor x) {
    auto y = torch::empty_like(x);
    long n = x.numel();
    relu_k<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
_mod = load_inline(name="r", cpp_sources=_CPP, cuda_sources=_CU, functions=["relu"])


class ModelNew(nn.Module):
    def forward(self, x):
        return _mod.relu(x)
'''
    v = run(relu, src)
    assert v.status is Status.UNSUPPORTED and "CUDA GPU" in v.reason


def test_child_environment_has_no_secrets(relu, monkeypatch):
    """A candidate that writes what it can see of the environment into its output would
    need os; instead check the allowlist directly."""
    from sandbox._process import child_env

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    env = child_env(__import__("pathlib").Path("/tmp"), "cpu")
    assert not any("secret" in v for v in env.values())
    assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
    assert env["TRITON_INTERPRET"] == "1"
    assert env["HOME"] == "/tmp"


def test_reference_failure_on_declared_shape_is_a_problem_error(tmp_path):
    from kbench.problems import load_file

    p = tmp_path / "bad.py"
    p.write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn
        N = 16
        KBENCH = {"cpu_shapes": {"small": {"N": 16}}}
        class Model(nn.Module):
            def forward(self, x):
                raise RuntimeError("reference broken")
        def get_inputs():
            return [torch.randn(N)]
        def get_init_inputs():
            return []
        '''))
    spec = load_file(p)
    from kbench.errors import ProblemError

    with pytest.raises(ProblemError, match="reference fails"):
        run(spec, HONEST)


def test_result_channel_rejects_unsigned_or_forged_messages():
    import hashlib
    import hmac
    import json

    from sandbox._process import ChildError, decode_message

    key = b"k" * 32
    body = json.dumps({"event": "done"})
    good = json.dumps({"body": body, "mac": hmac.new(key, body.encode(), hashlib.sha256).hexdigest()})
    assert decode_message(key, good.encode()) == {"event": "done"}
    forged = json.dumps({"body": body, "mac": "00" * 32})
    with pytest.raises(ChildError, match="forged"):
        decode_message(key, forged.encode())
    with pytest.raises(ChildError, match="malformed"):
        decode_message(key, b'{"event": "done"}')


def test_the_shape_above_the_main_one_is_the_smallest_and_must_fit_the_device(monkeypatch):
    """``derived_large_odd`` is the smallest shape past the largest declared one (KernelBench's
    GroupNorm: +1.6% of elements, not the +16% all-odd variant that ran out of memory on an
    H200), and is skipped with a note where its inputs and their checks cannot fit."""
    from types import SimpleNamespace

    import torch

    from sandbox.cases import _InputSizes, _too_big
    from sandbox.problem import derive_shapes

    spec = load("level1/relu")[0]
    big = spec.shapes_for("cuda")["main"]
    above = [s for n, s in derive_shapes(spec, big, 8).items() if n != "derived_batch1"]
    elems = _InputSizes(spec)
    sizes = sorted(elems(s) for s in above)
    assert _too_big(elems, big, "cpu") is None  # CPU shapes are bounded already
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: SimpleNamespace(total_memory=80 << 30))
    assert _too_big(elems, big, "cuda:0") is None  # 16 x 2^20 floats: 64 MiB
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: SimpleNamespace(total_memory=256 << 20))
    why = _too_big(elems, big, "cuda:0")
    assert why and "would not fit in the device's 0.2 GiB" in why
    assert sizes[0] > elems(big)


def test_input_sizes_are_kept_on_disk_and_a_warm_cache_plans_without_get_inputs(
        monkeypatch, tmp_path):
    """Planning orders shapes by their inputs' sizes, counted on the meta device, which
    imports sympy (seconds of ``kbench eval``'s own start). The sizes are kept per problem
    file: the next plan reads them and never calls ``get_inputs``; a damaged file is
    counted again and rewritten."""
    from sandbox.cases import plan_cases
    from sandbox.problem import ProblemSpec

    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path))
    spec = load("level1/relu")[0]
    first, _ = plan_cases(spec, "cpu", Limits(), timed=False)
    (kept,) = (tmp_path / "input_sizes").iterdir()
    assert kept.name == f"{spec.source_hash}.json"
    sizes = json.loads(kept.read_text())
    assert sizes and all(e > 0 and b == e * 4 for e, b in sizes.values())  # float32 inputs

    def never(*_a, **_k):
        raise AssertionError("get_inputs called with the sizes cached")

    with monkeypatch.context() as m:
        m.setattr(ProblemSpec, "make_inputs", never)
        again, _ = plan_cases(spec, "cpu", Limits(), timed=False)
    assert [(c.name, c.params) for c in again] == [(c.name, c.params) for c in first]

    kept.write_text("{not json")
    plan_cases(spec, "cpu", Limits(), timed=False)
    assert json.loads(kept.read_text()) == sizes


def test_verify_on_cuda_n_makes_gpu_n_current_for_the_parents_own_work(monkeypatch):
    """`kbench eval --device cuda:1` on the main thread: the parent's references,
    comparisons and synchronisations must run on GPU 1, not on GPU 0 where another job
    may be timed."""
    import contextlib

    import torch

    import sandbox.verifier as V

    entered: list[str] = []

    @contextlib.contextmanager
    def device(d):
        entered.append(str(d))
        yield

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(V, "_verify", lambda spec, source, **kw: (kw["device"], list(entered)))
    assert V.verify(None, "", device="cuda:1") == ("cuda:1", ["cuda:1"])
    entered.clear()
    assert V.verify(None, "", device="cpu") == ("cpu", [])
    # no CUDA here (tests that name cuda devices with a fake verifier): nothing to make current
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert V.verify(None, "", device="cuda:0") == ("cuda:0", [])


def test_a_phase_is_split_into_the_childs_spans_and_the_rest() -> None:
    from sandbox.verifier import _split

    phases = {"timing": 2.0}
    _split(phases, "timing", {"span_sampling": 1.5, "span_sets": 0.2, "cspan_x": 9.0}, "span_")
    assert phases == pytest.approx({"timing": 2.0, "timing_sampling": 1.5, "timing_sets": 0.2,
                                    "timing_rest": 0.3})
    untouched = {"correctness": 1.0}
    _split(untouched, "correctness", {"span_sampling": 1.5}, "cspan_")
    assert untouched == {"correctness": 1.0}  # no parts: no rest either


def test_a_derived_shape_the_reference_refuses_is_skipped_before_the_child_builds_it(tmp_path):
    """Cases are made while the child runs (the parent's reference beside the child's model):
    a derived shape whose reference cannot be built is dropped, and the child, which asks
    for each shape before building its model, never builds ModelNew for it."""
    from kbench.problems import load_file

    p = tmp_path / "even.py"
    p.write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn
        batch_size = 4
        dim = 64
        KBENCH = {"cpu_shapes": {"small": {"batch_size": 4, "dim": 64}}}
        class Model(nn.Module):
            def __init__(self, dim):
                super().__init__()
                if dim % 2:
                    raise ValueError("even sizes only")
            def forward(self, x):
                return torch.relu(x)
        def get_inputs():
            return [torch.randn(batch_size, dim)]
        def get_init_inputs():
            return [dim]
        '''))
    spec = load_file(p)
    src = honest_relu.RELU.replace(
        "class ModelNew(nn.Module):\n",
        "class ModelNew(nn.Module):\n"
        "    def __init__(self, dim):\n"
        "        super().__init__()\n"
        "        if dim % 2:\n"
        "            raise RuntimeError('ModelNew built for a shape the reference refused')\n\n")
    v = verify(spec, src, device="cpu", limits=Limits(trials=1, derived_trials=1))
    assert v.status is Status.CORRECT, v.reason
    names = {s.name for s in v.shapes}
    assert "small" in names and "derived_batch1" in names
    assert not any(n.startswith("derived_dim") for n in names), names
    assert any("derived_dim_odd" in n and "reference fails on it (ValueError)" in n
               for n in v.notes), v.notes


@pytest.mark.parametrize("forged", [
    "need_inputs', shape='derived_batch1', trial=0",  # a shape not made yet
    "need_params', shape='small'",  # no such turn
    "need_shape', shape='no_such_shape'",
    "need_inputs', shape='small', trial=99",  # no such trial
    "need_inputs', shape='no_such_shape', trial=0",
])
def test_requests_out_of_turn_are_protocol_errors(relu, forged):
    """The parent makes cases while the child runs; a child that asks for a shape's inputs,
    parameters or an unknown shape out of turn (here the candidate, static policy off,
    signs its own requests at import) is refused, not answered."""
    shape = "small" if "small" in relu.cpu_shapes else next(iter(relu.cpu_shapes))
    forged = forged.replace("'small'", repr(shape))
    src = "import sandbox._child as _h\n_h._send(event='" + forged + ")\n" + HONEST
    v = run(relu, src, static_policy=False)
    assert v.status is Status.REJECTED, (v.status, v.reason)
    assert "out of turn" in v.reason


@pytest.mark.parametrize("shape", ["small", "no_such_shape"])
def test_a_forged_built_apart_report_is_a_protocol_error(relu, shape):
    """Only the child reports that ModelNew was built on the CPU and handed the reference's
    tensors, and only where the parent drew them on the device: on a CPU run, the report
    (forged here by the candidate at import) names no such case and is refused."""
    if shape == "small":
        shape = "small" if "small" in relu.cpu_shapes else next(iter(relu.cpu_shapes))
    src = ("import sandbox._child as _h\n_h._send(event='drawn_apart', shape=" + repr(shape)
           + ", why='x', missing=[])\n" + HONEST)
    v = run(relu, src, static_policy=False)
    assert v.status is Status.REJECTED, (v.status, v.reason)
    assert "built apart" in v.reason


@pytest.mark.parametrize("stream", [False, True])
def test_the_child_is_told_where_the_references_parameters_were_drawn(relu, tmp_path, stream):
    """A candidate's parameters equal the reference's only if both are drawn on the same
    generator: each case's ``init_on`` (set when the parent made it) goes into the job when
    the cases are made first; a streaming child learns it from the ``need_shape`` reply."""
    import json

    from sandbox.cases import complete_case, plan_cases
    from sandbox.verifier import _job

    cases, _ = plan_cases(relu, "cpu", FAST, timed=False)
    for c in cases:
        complete_case(relu, c, "cpu")
    assert {c.init_on for c in cases if c.built} == {"cpu"}  # a CPU device draws on the CPU
    cases[0].init_on = "device"  # as a GPU parent would record it
    _job(tmp_path, "candidate", "cpu", cases, FAST, relu, stream=stream)
    shapes = json.loads((tmp_path / "job.json").read_text())["shapes"]
    if stream:
        assert all(s["init_on"] is None for s in shapes)
    else:
        assert [s["init_on"] for s in shapes] == [c.init_on for c in cases]
