"""The verifier on a CUDA GPU: honest Triton and CUDA candidates pass and are timed against
eager and torch.compile; GPU faults become statuses; an impossible time is rejected."""

from __future__ import annotations

import importlib.resources
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from kbench.problems import load, load_file  # noqa: E402
from sandbox import Limits, MemoryCache, Status, verify  # noqa: E402
from sandbox.timing import TimingConfig  # noqa: E402

QUICK = Limits(timing=TimingConfig(budget_s=0.5, min_reps=10, max_reps=200))


def example(path: str) -> str:
    return importlib.resources.files("kbench").joinpath(f"examples/{path}").read_text()


@pytest.fixture(scope="module")
def cache():
    return MemoryCache()


@pytest.mark.parametrize("key", ["level1/relu", "level1/softmax", "level1/matmul"])
def test_honest_triton_candidates_pass_and_are_timed(key, cache):
    spec = load(key)[0]
    v = verify(spec, example(f"{key}.py"), device="cuda", cache=cache, limits=QUICK)
    assert v.status is Status.CORRECT, v.reason
    assert v.timing_available
    timed = [s for s in v.shapes if s.timing is not None]
    assert {s.name for s in timed} == set(spec.shapes)
    for s in timed:
        assert s.timing.count >= QUICK.timing.min_reps
        assert s.eager is not None and s.speedup_eager is not None
        assert s.sol_pct is not None and 0 < s.sol_pct <= QUICK.max_sol_pct


@pytest.mark.parametrize("key", ["level1/relu", "level1/softmax"])
def test_honest_cuda_candidates_pass(key, cache):
    spec = load(key)[0]
    v = verify(spec, example(f"{key}_cuda.py"), device="cuda", cache=cache, limits=QUICK)
    assert v.backend == "cuda"
    assert v.status is Status.CORRECT, v.reason
    assert v.speedup_eager is not None


ILLEGAL = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _oob(x_ptr, y_ptr, off, BLOCK: tl.constexpr):
    v = tl.load(x_ptr + tl.arange(0, BLOCK) + off)
    tl.store(y_ptr + tl.arange(0, BLOCK), v)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        _oob[(1,)](x, y, 1 << 40, BLOCK=16)
        return y
'''


def test_illegal_memory_access_is_runtime_error():
    v = verify(load("level1/relu")[0], ILLEGAL, device="cuda", limits=QUICK)
    assert v.status is Status.RUNTIME_ERROR
    assert "illegal" in v.reason.lower() or "CUDA error" in v.reason, v.reason


def test_gpu_out_of_memory_is_runtime_error():
    src = example("level1/relu.py")
    head, sep, body = src.partition("def forward(self")
    line_end = body.index("\n")
    src = (head + sep + body[:line_end + 1]
           + "        _big = torch.empty(1 << 44, device='cuda')\n" + body[line_end + 1:])
    v = verify(load("level1/relu")[0], src, device="cuda", limits=QUICK)
    assert v.status is Status.RUNTIME_ERROR and "out of memory" in v.reason, v.reason


def test_time_faster_than_the_roofline_is_rejected(tmp_path, cache):
    """A problem whose declared roofline claims far more work than the op does makes an
    honest kernel look faster than light: the verifier must refuse the timing."""
    src = importlib.resources.files("problems").joinpath("level1/relu.py").read_text()
    src = src.replace('"flops": lambda s: s["batch_size"] * s["dim"],', '"flops": lambda s: 1e18,')
    p = tmp_path / "relu_wrong_roofline.py"
    p.write_text(src)
    v = verify(load_file(p), example("level1/relu.py"), device="cuda", cache=cache, limits=QUICK)
    assert v.status is Status.REJECTED and "roofline" in v.reason, v.reason


def test_baselines_are_measured_once_per_fingerprint(cache):
    spec = load("level1/relu")[0]
    first = verify(spec, example("level1/relu.py"), device="cuda", cache=cache, limits=QUICK)
    n = len(cache.baselines)
    second = verify(spec, example("level1/relu.py"), device="cuda", cache=cache, limits=QUICK)
    assert len(cache.baselines) == n
    main1 = next(s for s in first.shapes if s.name == "main")
    main2 = next(s for s in second.shapes if s.name == "main")
    assert main1.eager == main2.eager


def test_wrong_output_during_timing_is_caught():
    """Correct for the checked calls, wrong afterwards: the kernel counts its own launches in
    a device buffer (which no static rule can see) and goes wrong from the 5th call on. Only
    re-checking the outputs of timed calls catches it."""
    src = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def _relu(x_ptr, y_ptr, cnt_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        calls = tl.load(cnt_ptr)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        y = tl.maximum(x, 0.0) + tl.where(calls >= 16, 1.0, 0.0)  # after every checked call
        tl.store(y_ptr + offs, y, mask=mask)
        tl.atomic_add(cnt_ptr, tl.where(pid == 0, 1, 0))


    class ModelNew(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(1, dtype=torch.int32))

        def forward(self, x):
            x = x.contiguous()
            y = torch.empty_like(x)
            n = x.numel()
            _relu[(triton.cdiv(n, 1024),)](x, y, self.calls, n, BLOCK=1024)
            return y
    ''')
    v = verify(load("level1/relu")[0], src, device="cuda", limits=QUICK)
    assert v.status is Status.INCORRECT, v.reason
    assert "timed call" in v.reason


# Each must be caught by the GPU-only check that names it: timed calls (re-checked outputs or
# an impossible time), and derived shapes larger than the main one (the main shapes pass).
GPU_ONLY_ATTACKS = ["rt_phase_kernel_counter", "rt_shape_overfit_hardcoded"]


@pytest.mark.parametrize("name", GPU_ONLY_ATTACKS)
def test_attacks_only_a_gpu_run_can_catch(name, cache):
    from pathlib import Path

    src = (Path(__file__).parent / "candidates" / "attacks" / f"{name}.py").read_text()
    v = verify(load("level1/relu")[0], src, device="cuda", cache=cache, limits=QUICK)
    failed = [s for s in v.shapes if not s.passed]
    if name == "rt_phase_kernel_counter":
        # Work skipped once timed: a re-checked timed output is wrong, or (when the timing is
        # judged first, as seen on an H100, docs/benchmarks.md) the time beats the roofline.
        caught = {Status.INCORRECT: "a timed call's output",
                  Status.REJECTED: "impossible timing"}
        assert v.status in caught and caught[v.status] in v.reason, (v.status, v.reason)
        assert not failed or v.status is Status.INCORRECT, "the checked calls were right"
    else:
        assert v.status is Status.INCORRECT, (v.status, v.reason)
        assert failed and all(s.derived for s in failed), [(s.name, s.derived) for s in failed]
        assert any(not s.derived and s.passed for s in v.shapes), "the main shapes pass"


def test_library_calls_only_while_timed_are_caught_by_an_audited_call():
    """Honest on every checked call, cuBLAS-backed torch ops once the calls outnumber the
    checks: a timed repetition chosen at random is traced, so it is refused."""
    src = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def _relu(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=m), 0.0), mask=m)


    class ModelNew(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 12:
                return torch.relu(x)
            y = torch.empty_like(x)
            _relu[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
            return y
    ''')
    v = verify(load("level1/relu")[0], src, device="cuda", limits=QUICK)
    assert v.status is Status.REJECTED, v.reason
    assert "aten.relu" in v.reason and "timing" in v.reason


def test_baselines_measured_ahead_are_the_ones_a_verification_uses():
    """A run measures a problem's baselines before its first candidate arrives; the
    candidate's verification then finds every one of them and measures none itself."""
    from sandbox import measure_baselines

    spec = load("level1/softmax")[0]
    fresh = MemoryCache()
    base = measure_baselines(spec, fresh, device="cuda", limits=QUICK)
    timed = [n for n in spec.shapes_for("cuda")]
    assert {m for _, m in base} == {"eager", "compile"}
    assert {s for s, _ in base} == set(timed)
    assert all(t is not None and t.count >= 10 for t in base.values()), base
    src = importlib.resources.files("kbench").joinpath("examples/level1/softmax.py").read_text()
    v = verify(spec, src, device="cuda", cache=fresh, limits=QUICK)
    assert v.passed, v.reason
    assert v.phases["baselines_and_roofline"] < 1.0, v.phases  # found, not measured
    main = next(s for s in v.shapes if s.name == "main")
    assert main.eager is not None and main.eager.median_ms == base[("main", "eager")].median_ms



def test_softmax_verdict_carries_a_kernel_breakdown_led_by_its_own_kernel(cache):
    """Profiler feedback (issue 10): a correct, timed candidate's verdict has the main
    shape's per-kernel breakdown, and the top kernel is the candidate's own Triton kernel;
    with profile_ncu, Nsight Compute's line where ncu is installed (or why not)."""
    import shutil
    from dataclasses import replace

    spec = load("level1/softmax")[0]
    v = verify(spec, example("level1/softmax.py"), device="cuda", cache=cache,
               limits=replace(QUICK, profile_ncu=True))
    assert v.status is Status.CORRECT, v.reason
    p = v.profile
    assert p is not None and p["kernels"], p
    top = p["kernels"][0]
    assert top["name"] == "_softmax_kernel" and top["own"], p
    assert 0 < top["share"] <= 1 and top["us"] > 0 and p["device_us"] >= top["us"]
    assert p["streams"] == 1, p  # an honest kernel's call: all of its work on one stream
    ncu = p["ncu"]
    assert ncu["diagnosis"], ncu
    if shutil.which("ncu") and not ncu.get("error"):
        assert ncu["kernel"].startswith("_softmax_kernel"), ncu
        assert ncu["limiter"] in ("memory-bound", "compute-bound", "latency-bound")
        assert 0 <= ncu["dram_pct"] <= 100 and 0 <= ncu["sm_pct"] <= 100


# Relu done four times over (the "work"), with an optional 4-slot cache on the device keyed by
# a few sampled input values: a hit copies the kept output instead of computing (issue 17).
VALUE_CACHE = textwrap.dedent('''
import torch
import torch.nn as nn
import triton
import triton.language as tl

CACHE = True
HITS = True  # False: the same kernel, probe and stores and all, that never takes a hit
SLOTS = 4
MAXN = 16 * 8388608  # level1/relu's main shape


@triton.jit
def _probe(x_ptr, keys_ptr, meta_ptr, fill_ptr, n, SLOTS: tl.constexpr, HITS: tl.constexpr):
    # key: 8 input values spread over the tensor; meta = [hit slot or -1, slot to fill, key]
    idx = tl.arange(0, 8) * (n // 8)
    key = tl.sum(tl.load(x_ptr + idx) * (tl.arange(0, 8) + 1.0), axis=0)
    s = tl.arange(0, SLOTS)
    keys = tl.load(keys_ptr + s)
    hit = tl.max(tl.where(keys == key, s, -1), axis=0)
    if not HITS:
        hit = hit * 0 - 1
    tl.store(meta_ptr, hit.to(tl.float32))
    tl.store(meta_ptr + 1, (tl.load(fill_ptr) % SLOTS).to(tl.float32))
    tl.store(meta_ptr + 2, key)


@triton.jit
def _relu4(x_ptr, y_ptr, cache_ptr, keys_ptr, meta_ptr, fill_ptr, n, CACHE: tl.constexpr,
           BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    hit = -1
    if CACHE:
        hit = tl.load(meta_ptr).to(tl.int32)
    if hit >= 0:
        y = tl.load(cache_ptr + hit.to(tl.int64) * n + offs, mask=mask)
    else:
        y = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(4):
            x = tl.load(x_ptr + offs, mask=mask, other=0.0, volatile=True)
            y = tl.maximum(y, tl.maximum(x, 0.0))
        if CACHE:
            slot = tl.load(meta_ptr + 1).to(tl.int64)
            tl.store(cache_ptr + slot * n + offs, y, mask=mask)
            if pid == 0:
                tl.store(keys_ptr + slot, tl.load(meta_ptr + 2))
                tl.store(fill_ptr, tl.load(fill_ptr) + 1)
    tl.store(y_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        # all state made here, sized for the main shape; forward only launches kernels
        self.register_buffer("keys", torch.full((SLOTS,), float("nan")))
        self.register_buffer("meta", torch.zeros(4))
        self.register_buffer("fill", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("cache", torch.empty(SLOTS * MAXN))

    def forward(self, x):
        x = x.contiguous()
        n = x.numel()
        use = CACHE and n <= MAXN
        y = torch.empty_like(x)
        if use:
            _probe[(1,)](x, self.keys, self.meta, self.fill, n, SLOTS=SLOTS, HITS=HITS)
        _relu4[(triton.cdiv(n, 1024),)](x, y, self.cache, self.keys, self.meta, self.fill, n,
                                        CACHE=use, BLOCK=1024)
        return y
''')


@pytest.mark.parametrize("slots,maxn", [
    (4, "16 * 8388608"),  # every shape, 4 slots: 2 GiB for the main shape
    # 128 slots on the odd shape (7M elements, 3.6 GiB of cache): more than the parent's 100
    # timed seeds, and the odd shape's ~50 us call makes hundreds of timed calls, so under
    # protocol 7 (sets came round again after 100 calls) nearly every timed call hit
    # (300 samples at least: most of them past the first 100 calls)
    (128, "7 * 1_000_003"),
])
def test_a_value_keyed_device_cache_is_caught_or_gains_nothing(cache, slots, maxn):
    """Timed sets come from fresh seeds, so a cache keyed on input values never hits while
    timed, however many slots it has: the cached kernel is either rejected by the audit or
    timed within the spread of the same kernel with its hits switched off (the same probe
    and stores, never a hit), and no faster than the kernel without any cache (issue 17: it
    used to be reported 3.2x faster)."""
    spec = load("level1/relu")[0]
    src = (VALUE_CACHE.replace("SLOTS = 4", f"SLOTS = {slots}")
           .replace("MAXN = 16 * 8388608", f"MAXN = {maxn}"))
    lim = QUICK if slots <= 4 else Limits(timing=TimingConfig(budget_s=0.5, min_reps=300,
                                                                max_reps=400))
    on = verify(spec, src, device="cuda", cache=cache, limits=lim)
    off = verify(spec, src.replace("CACHE = True", "CACHE = False"), device="cuda",
                 cache=cache, limits=lim)
    assert off.status is Status.CORRECT, off.reason
    never = verify(spec, src.replace("HITS = True", "HITS = False"), device="cuda",
                   cache=cache, limits=lim)
    assert never.status is Status.CORRECT, never.reason
    if on.status is Status.INCORRECT:
        assert "a timed call's output" in on.reason, on.reason
        return
    assert on.status is Status.CORRECT, (on.status, on.reason)
    for name in spec.shapes:
        t_on = next(s for s in on.shapes if s.name == name).timing
        t_off = next(s for s in off.shapes if s.name == name).timing
        t_never = next(s for s in never.shapes if s.name == name).timing
        spread = max(t_off.iqr_ms / t_off.median_ms, t_on.iqr_ms / t_on.median_ms,
                     t_never.iqr_ms / t_never.median_ms)
        # the figures for docs/benchmarks.md (pytest -rA prints a passed test's output)
        print(f"value cache {slots} slots, shape {name}: on {t_on.median_ms:.4f} ms "
              f"(IQR {t_on.iqr_ms:.4f}), hits off {t_never.median_ms:.4f} ms "
              f"(IQR {t_never.iqr_ms:.4f}), on/hits off {t_on.median_ms / t_never.median_ms:.3f}"
              f"; no cache {t_off.median_ms:.4f} ms (IQR {t_off.iqr_ms:.4f}), "
              f"on/no cache {t_on.median_ms / t_off.median_ms:.3f}")
        # a hit (a copy) would be ~2.5x faster than the work; a miss costs a probe and a
        # store more than no cache at all, and exactly what the hits-off kernel costs
        assert t_on.median_ms >= t_off.median_ms * (1 - 2 * max(spread, 0.05)), (name, t_on, t_off)
        assert abs(t_on.median_ms / t_never.median_ms - 1) <= max(2 * spread, 0.03), \
            (name, t_on, t_never)
    limit = on.explain.get("timing_limit", {})
    assert limit.get("limit_s", 0) > 0 and "compile allowance" in limit.get("formula", "")


@pytest.mark.parametrize("cpu_only_init", [False, True])
def test_parameters_drawn_on_the_device_or_the_cpu_match_the_candidates(tmp_path, cache,
                                                                      cpu_only_init):
    """The reference's parameters are drawn on the GPU, unless its constructor can only run
    on the CPU; either way the child draws the candidate's where the parent drew the
    reference's, so an honest kernel that uses its own ``nn.Linear`` is correct."""
    src = importlib.resources.files("problems").joinpath("level2/gemm_bias_relu.py").read_text()
    if cpu_only_init:
        old = "        self.linear = nn.Linear(in_features, out_features).to(torch.float16)\n"
        assert old in src
        src = src.replace(old, old + "        self.k = float(torch.ones(1).numpy()[0])\n")
    p = tmp_path / "gemm_bias_relu_init.py"
    p.write_text(src)
    v = verify(load_file(p), example("level2/gemm_bias_relu.py"), device="cuda", cache=cache,
               limits=QUICK)
    assert v.status is Status.CORRECT, v.reason


def test_a_candidate_whose_constructor_only_runs_on_the_cpu_gets_the_references_parameters(
        cache):
    """The reference's parameters are drawn on the GPU; ModelNew's constructor fails there
    (``.numpy()`` under a CUDA default device), so the child builds it on the CPU and hands it
    the reference's tensors: honest, correct, and the verdict says what happened."""
    src = example("level2/gemm_bias_relu.py")
    old = "        self.linear = nn.Linear(in_features, out_features).to(torch.float16)\n"
    assert old in src
    src = src.replace(old, old + "        self.k = float(torch.ones(1).numpy()[0])\n")
    v = verify(load("level2/gemm_bias_relu")[0], src, device="cuda", cache=cache,
               limits=QUICK)
    assert v.status is Status.CORRECT, v.reason
    assert any("built on the CPU and given the reference's parameters" in n for n in v.notes), \
        v.notes
