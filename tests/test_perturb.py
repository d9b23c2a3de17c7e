"""Perturbed inputs, redrawn constant parameters and their hand-over to ModelNew."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn as nn

from kbench.errors import ProblemError
from kbench.problems import load_file
from sandbox.perturb import hand_over, perturb_inputs, redraw_constant_tensors
from sandbox.verifier import Limits, _build_cases, _prepare_trial


def test_perturbed_inputs_have_both_signs_and_keep_shape_dtype_strides():
    x = torch.rand(64, 33)  # all >= 0, as KernelBench's get_inputs draws
    t = torch.rand(33, 64).t()  # non-contiguous
    idx = torch.randint(0, 10, (5,))
    for kind in ("signed", "scaled"):
        a, b, i = perturb_inputs([x, t, idx], kind, seed=7)
        assert (a < 0).any() and (a > 0).any()
        assert a.shape == x.shape and a.dtype == x.dtype and b.stride() == t.stride()
        assert i is idx  # integer inputs (indices, labels) are never touched
        a2, _, _ = perturb_inputs([x, t, idx], kind, seed=7)
        assert torch.equal(a, a2)  # both processes get the same values from the same seed
    s, _, _ = perturb_inputs([x, t, idx], "signed", seed=7)
    rms = x.pow(2).mean().sqrt()
    assert 0.8 < float(s.pow(2).mean().sqrt() / rms) < 1.2
    (p,) = perturb_inputs([x], "signed", seed=7, positive=True)
    assert (p >= 0).all() and not torch.equal(p, x)
    with pytest.raises(ValueError):
        perturb_inputs([x], "bogus", seed=1)


def test_scaled_inputs_spread_magnitudes():
    x = torch.randn(100_000)
    (s,) = perturb_inputs([x], "scaled", seed=3)
    q = s.abs().quantile(torch.tensor([0.05, 0.95]))
    assert float(q[1] / q[0]) > 50  # magnitudes over about two orders


def test_only_constant_tensors_are_redrawn_and_signs_kept():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.BatchNorm1d(8)).eval()
    before = {n: t.clone() for n, t in [*m.named_parameters(), *m.named_buffers()]}
    names = redraw_constant_tensors(m, seed=11)
    assert set(names) == {"1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean",
                          "2.running_var"}
    state = dict([*m.named_parameters(), *m.named_buffers()])
    assert torch.equal(state["0.weight"], before["0.weight"])  # random already: untouched
    assert torch.equal(state["2.num_batches_tracked"], before["2.num_batches_tracked"])
    assert (state["2.running_var"] > 0).all()  # a variance stays a variance
    assert not torch.equal(state["1.weight"], before["1.weight"])
    assert len(set(state["1.bias"].tolist())) == 8


class _Ref(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)


class _SameNames(_Ref):
    pass


class _OtherNames(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(6, 4))
        self.b = nn.Parameter(torch.zeros(6))
        self.gamma = nn.Parameter(torch.ones(6))
        self.beta = nn.Parameter(torch.zeros(6))


class _Reordered(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(6))
        self.w = nn.Parameter(torch.zeros(6, 4))


class _Fused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(6, 4))


@pytest.mark.parametrize("cls", [_SameNames, _OtherNames])
def test_hand_over_by_name_or_by_order(cls):
    ref, cand = _Ref(), cls()
    names = redraw_constant_tensors(ref, seed=5)
    assert names == ["norm.weight", "norm.bias"]
    assert hand_over(ref, cand, names) == []
    got = [t for _, t in cand.named_parameters()]
    assert torch.equal(got[2], ref.norm.weight) and torch.equal(got[3], ref.norm.bias)


def test_hand_over_by_shape_and_missing_named():
    ref = _Ref()
    names = redraw_constant_tensors(ref, seed=5)
    cand = _Reordered()
    # [6] appears twice in the reference and once here: no unambiguous match for either
    assert hand_over(ref, cand, names) == ["norm.weight", "norm.bias"]
    assert hand_over(ref, _Fused(), names) == ["norm.weight", "norm.bias"]


def _problem(tmp_path, body: str, name: str = "p.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return load_file(path)


def _prepared(spec):
    cases, _ = _build_cases(spec, "cpu", Limits(), timed=False)
    replies = {c.name: [_prepare_trial(spec, c, i, "cpu") for i in range(len(c.kinds))]
               for c in cases}
    return cases, replies


def test_out_of_domain_perturbations_are_skipped_and_noted(tmp_path):
    spec = _problem(tmp_path, """
        import torch
        import torch.nn as nn
        n = 64
        class Model(nn.Module):
            def forward(self, x, y):
                return torch.sqrt(x) + torch.log(y - 10.0)
        def get_inputs():
            return [torch.rand(n, n), torch.rand(n, n) + 10.5]
        def get_init_inputs():
            return []
        """)
    cases, replies = _prepared(spec)
    small = cases[0]
    # sqrt needs x >= 0 (kept non-negative); log(y - 10) is not finite for any redraw
    assert small.kinds == ["own"] * Limits().trials + ["signed", "scaled"]
    assert [r.get("skip", False) for r in replies["small"]] == [False] * 3 + [True, True]
    assert small.n_run == Limits().trials
    assert any("signed inputs skipped" in n for n in small.notes)


def test_positive_fallback_is_used_when_it_makes_the_reference_finite(tmp_path):
    spec = _problem(tmp_path, """
        import torch
        import torch.nn as nn
        n = 64
        class Model(nn.Module):
            def forward(self, x):
                return torch.sqrt(x)
        def get_inputs():
            return [torch.rand(n, n)]
        def get_init_inputs():
            return []
        """)
    cases, replies = _prepared(spec)
    assert [r.get("positive") for r in replies["small"][-2:]] == [True, True]
    assert cases[0].notes == [] and cases[0].n_run == 5


def test_a_problem_can_opt_out_with_a_reason(tmp_path):
    body = """
        import torch
        import torch.nn as nn
        n = 64
        KBENCH = {"perturb": %s}
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm = nn.LayerNorm(n)
            def forward(self, x):
                return self.norm(x)
        def get_inputs():
            return [torch.rand(n, n)]
        def get_init_inputs():
            return []
        """
    with pytest.raises(ProblemError, match="needs a reason"):
        _problem(tmp_path, body % '{"inputs": "none"}')
    spec = _problem(tmp_path, body % '{"inputs": "none", "params": False, "reason": "test"}',
                    "q.py")
    cases, _ = _build_cases(spec, "cpu", Limits(), timed=False)
    assert all(k == "own" for c in cases for k in c.kinds)
    assert not any(c.param_seed is not None for c in cases)
    spec = _problem(tmp_path, body % "{}", "r.py")
    cases, _ = _build_cases(spec, "cpu", Limits(), timed=False)
    (pc,) = [c for c in cases if c.param_seed is not None]
    assert pc.name == "small+params" and pc.redrawn == ["norm.weight", "norm.bias"]


def test_kernelbench_files_run_in_training_mode_unless_they_say_eval(tmp_path):
    body = """
        import torch
        import torch.nn as nn
        c = 8
        %s
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm1d(c)
            def forward(self, x):
                return self.bn(x)
        def get_inputs():
            return [torch.rand(16, c)]
        def get_init_inputs():
            return []
        """
    train = _problem(tmp_path, body % "")
    assert train.make_model([], 0, "cpu").training  # KernelBench's harness never calls .eval()
    ev = _problem(tmp_path, body % 'KBENCH = {"mode": "eval"}', "e.py")
    assert not ev.make_model([], 0, "cpu").training


def test_perturbed_trials_scale_atol_with_the_output_not_below_the_problems_own():
    """Spread magnitudes make larger outputs and proportionally larger rounding errors (an
    honest bf16 matmul failed 132 of 16M elements at the unscaled atol on an H100): a
    perturbed trial's atol grows with its reference's RMS over the own inputs' one, and never
    shrinks below the problem's."""
    import torch

    from sandbox.cases import _Case, _rms, atol_for

    c = _Case("main", {}, False, True, 0)
    c.kinds = ["own", "signed", "scaled"]
    c.own_rms = _rms(torch.full((64,), 2.0))
    assert c.own_rms == pytest.approx(2.0)
    c.refs = {0: torch.full((64,), 2.0), 1: torch.full((64,), 1.0), 2: torch.full((64,), 20.0)}
    assert atol_for(c, 0, 1e-2) == 1e-2  # own inputs: the problem's tolerance
    assert atol_for(c, 1, 1e-2) == 1e-2  # a smaller output never tightens it
    assert atol_for(c, 2, 1e-2) == pytest.approx(1e-1)  # 10x the output scale, 10x atol
    c.refs[2] = (torch.full((32,), 20.0), torch.arange(4))  # tuples: float parts only
    assert atol_for(c, 2, 1e-2) == pytest.approx(1e-1)


def test_scaled_cpu_inputs_do_not_use_torchs_threaded_exp(monkeypatch):
    """The scale of a ``scaled`` CPU input comes from numpy's exp, computed in the calling
    thread: torch's CPU exp runs in parallel chunks through a vector math library, and a
    worker thread of the sandbox's child once computed its chunk about 5e-5 off, so the
    child's inputs differed from the verifier's (a flaky harness error). Same bits each time,
    strides kept."""
    x = torch.randn(4, 1000).t()  # non-contiguous: the perturbation keeps its strides
    want = perturb_inputs([x], "scaled", 123)[0]

    def no_exp(*_a, **_k):
        raise AssertionError("torch's exp was used for a CPU perturbation")

    monkeypatch.setattr(torch.Tensor, "exp_", no_exp)
    monkeypatch.setattr(torch.Tensor, "exp", no_exp)
    got = perturb_inputs([x], "scaled", 123)[0]
    assert torch.equal(got, want) and got.stride() == x.stride()
    assert perturb_inputs([x], "scaled", 124)[0].ne(got).any()
