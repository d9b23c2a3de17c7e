"""Output comparison in chunks (sandbox/compare.py): the same verdict and error figures as
one float64 pass over the whole tensor, whatever the chunk size."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sandbox.compare as cmp


def _whole(out: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float):
    """One pass in float64 over everything (what the chunked compare must agree with)."""
    o, r = out.to(torch.float64), ref.to(torch.float64)
    absdiff = (o - r).abs()
    n_bad = int((absdiff > atol + rtol * r.abs()).sum())
    rel_l2 = float(absdiff.norm()) / float(r.norm())
    return n_bad, float(absdiff.max()), rel_l2, int(absdiff.flatten().argmax())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), chunk=st.integers(1, 64), seed=st.integers(0, 2**31 - 1),
       noise=st.sampled_from([0.0, 1e-6, 1e-3, 1.0]), dtype=st.sampled_from(["f32", "bf16"]))
def test_chunked_compare_agrees_with_one_pass(monkeypatch: pytest.MonkeyPatch, n: int, chunk: int,
                                             seed: int, noise: float, dtype: str) -> None:
    monkeypatch.setattr(cmp, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(seed)
    dt = torch.float32 if dtype == "f32" else torch.bfloat16
    ref = (torch.randn(n, 3, generator=g) + 0.5).to(dt)
    out = (ref.float() + noise * torch.randn(n, 3, generator=g)).to(dt)
    atol, rtol = 1e-4, 1e-4
    bad, errs = cmp.compare(out, ref, atol, rtol)
    n_bad, max_abs, rel_l2, arg = _whole(out, ref, atol, rtol)
    assert errs is not None
    assert errs.max_abs_err == pytest.approx(max_abs, rel=1e-12, abs=0)
    assert errs.rel_l2_err == pytest.approx(rel_l2, rel=1e-9, abs=1e-300)
    assert (bad is None) == (n_bad == 0 and rel_l2 <= max(rtol, 1e-6))
    if bad is not None and n_bad:
        assert bad.reason.startswith(f"{n_bad} of {ref.numel()} elements outside")
        if max_abs > 0:
            assert f"at {cmp._idx(arg, ref.shape)}" in bad.reason


@pytest.mark.parametrize("chunk", [1, 5, 1 << 24])
def test_chunked_compare_finds_the_first_nan_and_a_bad_reference(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(cmp, "_CHUNK", chunk)
    ref = torch.ones(4, 5)
    out = ref.clone()
    out[2, 3] = float("nan")
    out[3, 1] = float("inf")
    bad, _ = cmp.compare(out, ref, 1e-3, 1e-3)
    assert bad is not None and bad.reason.startswith("2 of 20 output elements are NaN/Inf (first at [2, 3]")
    ref2 = ref.clone()
    ref2[0, 4] = float("inf")
    bad, _ = cmp.compare(ref.clone(), ref2, 1e-3, 1e-3)
    assert bad is not None and "the reference output itself has NaN/Inf" in bad.reason


def test_non_contiguous_output_is_compared_by_position() -> None:
    ref = torch.arange(12.0).reshape(3, 4)
    out = ref.t().contiguous().t()  # same values, other strides
    assert cmp.compare(out, ref, 0, 0) == (None, cmp.Errors(0.0, 0.0, 0.0))
    wrong = out.clone()
    wrong[1, 2] += 1
    bad, _ = cmp.compare(wrong, ref, 1e-3, 1e-3)
    assert bad is not None and "at [1, 2]" in bad.reason


@pytest.mark.parametrize("chunk", [3, 1 << 24])
def test_compare_leaves_a_float64_output_and_reference_as_they_were(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The difference is formed in place, in a float64 copy of each chunk: an output that is
    float64 already must still be copied, or the compare would overwrite it."""
    monkeypatch.setattr(cmp, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(7, 5, generator=g, dtype=torch.float64)
    out = ref + 1e-3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    out0, ref0 = out.clone(), ref.clone()
    bad, errs = cmp.compare(out, ref, 1e-6, 1e-6)
    assert bad is not None and errs is not None
    assert torch.equal(out, out0) and torch.equal(ref, ref0)
    rel = float(((out0 - ref0).abs() / ref0.abs().clamp_min(1e-12)).max())
    assert errs.max_rel_err == pytest.approx(rel, rel=1e-12)
