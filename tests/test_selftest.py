"""The timing harness's self-test (issue 17): its rows pass on kbench's own harness, and
each row fails on a harness with the bug it is there to catch (slots swapped, untimed
reported as 0, a batch's time reported per call, a speedup off by a factor). Its CPU part
runs through the real verifier; ``kbench doctor --self-test`` prints the table and exits
non-zero when a row fails; the GPU part runs where CUDA is (``kbench doctor --gpu``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from kbench import cli
from sandbox import selftest
from sandbox.policy import check_source
from sandbox.selftest import FakeDevice, Row, fake_rows, real_judge
from sandbox.timing import RawTimes, TimingConfig
from sandbox.verdict import Status, Verdict


def _by_name(rows: list[Row]) -> dict[str, Row]:
    return {r.name: r for r in rows}


def test_every_fake_device_row_passes_on_the_real_harness():
    rows = fake_rows()
    assert len(rows) == 6
    failed = [r for r in rows if not r.passed]
    assert not failed, failed


def test_rows_are_deterministic():
    assert fake_rows() == fake_rows()


def test_the_fake_device_is_the_sampling_rules_input():
    raw = FakeDevice(2.0, jitter=0.0).time(TimingConfig())
    assert set(raw.event_ms) == {2.0} and raw.calls_per_sample == 1
    small = FakeDevice(0.005, jitter=0.0).time(TimingConfig())
    assert small.calls_per_sample == 20  # batched: 0.1 ms samples of 5 µs calls
    assert small.event_ms[0] == pytest.approx(0.005)  # per call, not per batch


# ---------------------------------------------------------------------------------------
# Mutants: a harness with one bug each; the row made for that bug must fail
# ---------------------------------------------------------------------------------------
def _swapped(cand: RawTimes, base: RawTimes | None) -> Verdict:
    return real_judge(base, cand) if base is not None else real_judge(cand, base)


def _zero_when_untimed(cand: RawTimes, base: RawTimes | None) -> Verdict:
    v = real_judge(cand, base)
    if v.speedup_eager is None:
        return replace(v, speedup_eager=0.0, shapes=tuple(
            replace(s, speedup_eager=0.0) for s in v.shapes))
    return v


def _batch_not_divided(cand: RawTimes, base: RawTimes | None) -> Verdict:
    k = cand.calls_per_sample
    return real_judge(RawTimes([x * k for x in cand.event_ms], [x * k for x in cand.host_ms], k),
                      base)


def _flush_counted(cand: RawTimes, base: RawTimes | None) -> Verdict:
    """The L2 flush (here 0.05 ms) counted inside the candidate's timed window only."""
    return real_judge(RawTimes([x + 0.05 for x in cand.event_ms],
                               [x + 0.05 for x in cand.host_ms], cand.calls_per_sample), base)


@pytest.mark.parametrize(("judge", "must_fail"), [
    (_swapped, {"slots not swapped", "work done twice"}),
    (_zero_when_untimed, {"untimed is null (no baseline)"}),
    (_batch_not_divided, {"known spin of 5 µs"}),
    (_flush_counted, {"same kernel as candidate and baseline", "known spin of 250 µs",
                      "known spin of 5 µs"}),
], ids=lambda x: getattr(x, "__name__", ""))
def test_a_buggy_harness_fails_its_row(judge, must_fail):
    rows = _by_name(fake_rows(judge))
    failed = {n for n, r in rows.items() if not r.passed}
    assert must_fail <= failed, (must_fail, failed)
    assert failed < set(rows)  # the other checks still pass: each row names its bug


def test_the_swapped_harness_is_seen_as_2x():
    row = _by_name(fake_rows(_swapped))["work done twice"]
    assert row.got.startswith("1.9") or row.got.startswith("2.0"), row.got


def test_a_zero_speedup_for_untimed_is_caught_in_json():
    v = Verdict(problem="p", status=Status.CORRECT, reason="", device="cpu", backend="triton",
                speedup_eager=0.0)
    ok, seen = selftest._null_in_json(v)
    assert not ok and "speedup_eager=0.0" in seen
    ok, _ = selftest._null_in_json(replace(v, speedup_eager=None))
    assert ok


# ---------------------------------------------------------------------------------------
# The real verifier on CPU, and the self-test's own kernels
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["SAME", "TWICE", "SPIN"])
def test_the_self_tests_kernels_pass_the_static_policy(name):
    r = check_source(getattr(selftest, name))
    assert r.ok and r.backend == "triton", r.reason()


def test_twice_launches_the_same_kernel_twice():
    assert selftest.TWICE.count("_copy[(") == 2 and selftest.SAME.count("_copy[(") == 1
    assert selftest.TWICE.replace(
        "        _copy[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)\n", "", 1) == selftest.SAME


def test_cpu_rows_accept_the_kernels_untimed_with_null_speedups():
    rows = selftest.cpu_rows()
    assert len(rows) == 2
    assert all(r.passed for r in rows), rows
    assert all("figures null" in r.got and "not null" not in r.got for r in rows), rows


# ---------------------------------------------------------------------------------------
# kbench doctor --self-test / --gpu
# ---------------------------------------------------------------------------------------
def test_doctor_self_test_prints_the_table_and_exits_zero(monkeypatch):
    monkeypatch.setattr(selftest, "cpu_rows", lambda limits=None: [
        Row("untimed is null (stub of the CPU part)", "verifier (cpu)", "x", "x", True)])
    r = CliRunner().invoke(cli.app, ["doctor", "--self-test"])
    assert r.exit_code == 0, r.output
    for name in ("same kernel as", "work done twice", "slots not", "7/7 checks passed"):
        assert name in r.output, r.output


def test_doctor_self_test_exits_non_zero_when_a_row_fails(monkeypatch):
    real = selftest.fake_rows
    monkeypatch.setattr(selftest, "fake_rows", lambda judge=real_judge: real(_swapped))
    monkeypatch.setattr(selftest, "cpu_rows", lambda limits=None: [])
    r = CliRunner().invoke(cli.app, ["doctor", "--self-test", "--json"])
    assert r.exit_code == 1, r.output
    body = json.loads(r.output)
    assert body["passed"] is False
    assert {x["name"] for x in body["self_test"] if not x["passed"]} >= {"slots not swapped"}


def test_doctor_gpu_without_a_gpu_is_one_line_and_non_zero(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(cli.app, ["doctor", "--gpu"])
    assert r.exit_code == 2 and "no CUDA GPU" in r.output, r.output


@pytest.mark.gpu
def test_gpu_rows_pass_on_a_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    rows = selftest.gpu_rows()
    for r in rows:  # the self-test's GPU table, in pytest -rA's report of this test
        print(f"{r.name} | {r.where} | expected {r.expected} | got {r.got} | "
              f"{'pass' if r.passed else 'FAIL'}")
    assert len(rows) == 4
    assert all(r.passed for r in rows), rows
