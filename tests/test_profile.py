"""Profiler feedback on CPU: the kernel breakdown from recorded profiler events, ncu's CSV,
the limiter, the diagnosis fed to prompts, the verdict's ``profile`` record, and the ncu
child's plumbing with a stand-in ``ncu`` (the real one needs the GPU: tests/test_gpu.py)."""

from __future__ import annotations

import json
import stat
import textwrap
from dataclasses import dataclass, replace

import pytest
from torch.autograd import DeviceType

from agents.prompt import diagnose
from kbench.problems import load
from sandbox import Limits, Status, verify
from sandbox.profile import (
    DRAM,
    METRICS,
    SM,
    clean,
    kernel_breakdown,
    limiter,
    ncu_command,
    ncu_line,
    parse_ncu_csv,
    run_ncu,
    summarize_ncu,
)
from sandbox.verdict import Verdict
from tests.fakes.relu import RELU


# -- the kernel breakdown ------------------------------------------------------------------
@dataclass
class _Event:
    """What kernel_breakdown reads of a FunctionEvent / key_averages() row."""

    key: str
    device_type: DeviceType
    device_time_total: float
    count: int = 1


SOFTMAX = "_softmax_kernel"
FILL = "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, " \
       "std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)"


def _events():
    return [
        _Event("aten::empty_like", DeviceType.CPU, 0.0),  # host ops are not device time
        _Event("cudaLaunchKernel", DeviceType.CPU, 0.0),
        _Event(SOFTMAX, DeviceType.CUDA, 60.0),
        _Event(SOFTMAX, DeviceType.CUDA, 20.0),  # a second launch, as raw events list it
        _Event(FILL, DeviceType.CUDA, 15.0),
        _Event("Memcpy DtoD (Device -> Device)", DeviceType.CUDA, 5.0),
    ]


def test_breakdown_sums_device_time_per_kernel_largest_first():
    b = kernel_breakdown(_events(), own={SOFTMAX})
    assert b["device_us"] == 100.0 and b["launches"] == 4
    names = [k["name"] for k in b["kernels"]]
    assert names == [SOFTMAX, "vectorized_elementwise_kernel", "Memcpy DtoD (Device -> Device)"]
    top = b["kernels"][0]
    assert top == {"name": SOFTMAX, "full": SOFTMAX, "calls": 2, "us": 80.0, "share": 0.8,
                   "own": True}
    assert not b["kernels"][1]["own"] and b["kernels"][1]["full"].startswith("void at::")
    assert b["other_us"] == 0.0
    json.dumps(b)  # goes through the child's channel as JSON


def test_breakdown_reads_key_averages_rows_and_keeps_top_n():
    rows = [_Event(f"k{i}", DeviceType.CUDA, float(i), count=3) for i in range(1, 11)]
    b = kernel_breakdown(rows, top=8)
    assert len(b["kernels"]) == 8 and b["kernels"][0]["name"] == "k10"
    assert b["kernels"][0]["calls"] == 3 and b["launches"] == 30
    assert b["other_us"] == 3.0  # k1 + k2 beyond the top 8
    assert sum(k["share"] for k in b["kernels"]) == pytest.approx(52 / 55, abs=1e-3)


def test_breakdown_of_no_device_events_is_empty():
    b = kernel_breakdown([_Event("aten::relu", DeviceType.CPU, 0.0)])
    assert b == {"device_us": 0.0, "launches": 0, "kernels": [], "other_us": 0.0, "streams": 0}


def test_clean_bounds_what_the_child_sends():
    msg = {"event": "profile", "shape": "main", "device_us": 10, "launches": "x",
           "kernels": [{"name": "k" * 999, "share": 0.5, "own": 1, "calls": 2, "us": 5}] * 20}
    c = clean(msg)
    assert len(c["kernels"]) == 8 and len(c["kernels"][0]["name"]) == 200
    assert c["launches"] == 0 and c["kernels"][0]["own"] is True and "event" not in c


# -- Nsight Compute's CSV ------------------------------------------------------------------
NCU_CSV = textwrap.dedent('''\
    ==PROF== Connected to process 41235 (/usr/bin/python3.12)
    ==PROF== Profiling "vectorized_elementwise_kernel" - 0: 0%....50%....100% - 4 passes
    ==PROF== Profiling "_softmax_kernel" - 1: 0%....50%....100% - 4 passes
    ==PROF== Disconnected from process 41235
    "ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
    "0","41235","python3.12","127.0.0.1","void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)","1","7","(128, 1, 1)","(1056, 1, 1)","0","9.0","Command line profiler metrics","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","41.20"
    "0","41235","python3.12","127.0.0.1","void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)","1","7","(128, 1, 1)","(1056, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","3.20"
    "0","41235","python3.12","127.0.0.1","void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)","1","7","(128, 1, 1)","(1056, 1, 1)","0","9.0","Command line profiler metrics","sm__throughput.avg.pct_of_peak_sustained_elapsed","%","9.75"
    "0","41235","python3.12","127.0.0.1","void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)","1","7","(128, 1, 1)","(1056, 1, 1)","0","9.0","Command line profiler metrics","sm__warps_active.avg.pct_of_peak_sustained_active","%","70.10"
    "1","41235","python3.12","127.0.0.1","_softmax_kernel","1","7","(128, 1, 1)","(4096, 1, 1)","0","9.0","Command line profiler metrics","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","82.35"
    "1","41235","python3.12","127.0.0.1","_softmax_kernel","1","7","(128, 1, 1)","(4096, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","41,216"
    "1","41235","python3.12","127.0.0.1","_softmax_kernel","1","7","(128, 1, 1)","(4096, 1, 1)","0","9.0","Command line profiler metrics","sm__throughput.avg.pct_of_peak_sustained_elapsed","%","21.04"
    "1","41235","python3.12","127.0.0.1","_softmax_kernel","1","7","(128, 1, 1)","(4096, 1, 1)","0","9.0","Command line profiler metrics","sm__warps_active.avg.pct_of_peak_sustained_active","%","45.18"
    ''')

PERM = textwrap.dedent('''\
    ==PROF== Connected to process 5120 (/usr/bin/python3.12)
    ==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters on the target device 0. For instructions on enabling permissions and to get more information see https://developer.nvidia.com/ERR_NVGPUCTRPERM
    ==PROF== Disconnected from process 5120
    ==WARNING== No kernels were profiled.
    ''')


def test_parse_ncu_csv_skips_the_tool_lines_and_groups_by_kernel():
    ks = parse_ncu_csv(NCU_CSV)
    assert [k["id"] for k in ks] == ["0", "1"]
    assert ks[1]["kernel"] == "_softmax_kernel"
    assert ks[1]["metrics"] == {DRAM: 82.35, "gpu__time_duration.sum": 41216.0, SM: 21.04,
                                "sm__warps_active.avg.pct_of_peak_sustained_active": 45.18}
    assert ks[0]["metrics"]["gpu__time_duration.sum"] == pytest.approx(3200.0)  # us -> ns
    assert parse_ncu_csv(PERM) == [] and parse_ncu_csv("") == []


def test_parse_ncu_csv_reads_a_decimal_comma_and_short_headers():
    text = ('"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"\n'
            f'"0","k","{DRAM}","%","9,50"\n"0","k","{SM}","%","n/a"\n')
    (k,) = parse_ncu_csv(text)
    assert k["metrics"] == {DRAM: 9.5}


def test_summary_takes_the_longest_kernel_and_says_what_limits_it():
    rec = summarize_ncu(NCU_CSV)
    assert rec["kernel"] == "_softmax_kernel" and rec["kernels"] == 2
    assert rec["limiter"] == "memory-bound"
    assert rec["diagnosis"] == "memory-bound: 82% of DRAM peak, SM 21%, occupancy 45%"


def test_summary_says_when_counters_are_not_permitted():
    rec = summarize_ncu("", PERM)
    assert "ERR_NVGPUCTRPERM" in rec["error"] and "permission" in rec["diagnosis"]
    assert rec["diagnosis"].startswith("ncu unavailable")
    other = summarize_ncu("==ERROR== Failed to prepare kernel for profiling\n")
    assert other["error"] == "==ERROR== Failed to prepare kernel for profiling"


@pytest.mark.parametrize("dram, sm, want", [
    (82.0, 21.0, "memory-bound"),
    (60.0, 59.9, "memory-bound"),  # at the threshold counts
    (60.0, 60.0, "memory-bound"),  # a tie goes to memory
    (30.0, 60.0, "compute-bound"),
    (61.0, 75.0, "compute-bound"),
    (59.9, 59.9, "latency-bound"),  # neither unit busy
    (5.0, 3.0, "latency-bound"),
    (None, 50.0, "unknown"),
])
def test_limiter_at_thresholds(dram, sm, want):
    assert limiter(dram, sm) == want


def test_ncu_line_for_each_limiter():
    assert ncu_line({"dram_pct": 12, "sm_pct": 78, "occupancy_pct": 50}) == \
        "compute-bound: SM 78% of peak, DRAM 12%, occupancy 50%"
    assert ncu_line({"dram_pct": 20, "sm_pct": 15, "occupancy_pct": 12}) == \
        "latency-bound: DRAM 20% and SM 15% of peak, occupancy 12%"
    assert ncu_line({"error": "x"}) == "ncu unavailable: x"


def test_ncu_command_measures_only_the_window_and_leaves_clocks_alone(tmp_path):
    cmd = ncu_command("/opt/ncu", tmp_path / "o.csv")
    assert cmd[0] == "/opt/ncu" and "--csv" in cmd
    assert cmd[cmd.index("--metrics") + 1].split(",") == list(METRICS)
    assert cmd[cmd.index("--profile-from-start") + 1] == "off"
    assert cmd[cmd.index("--clock-control") + 1] == "none"
    assert cmd[cmd.index("--log-file") + 1] == str(tmp_path / "o.csv")
    assert cmd[cmd.index("--cache-control") + 1] == "all"  # stated, not the default's choice
    assert cmd[cmd.index("--launch-count") + 1] == "16"
    # the metrics alone: no section or set (each adds replay passes the record never reads)
    assert not {"--section", "--set", "--section-folder"} & set(cmd)


# -- the diagnosis fed to prompts ----------------------------------------------------------
def _correct(**kw) -> Verdict:
    return Verdict(problem="level1/softmax", status=Status.CORRECT, reason="correct",
                   device="cuda", backend="triton", speedup_eager=1.4, sol_pct=55.0,
                   timing_available=True, **kw)


PROFILE = {"shape": "main", "device_us": 100.0, "launches": 3, "other_us": 0.0,
           "kernels": kernel_breakdown(_events(), own={SOFTMAX})["kernels"]}


def test_diagnose_without_a_profile_is_unchanged():
    v = _correct()
    assert diagnose(v) == "correct and faster than eager: tune block sizes and fuse what is left"
    assert diagnose(replace(v, status=Status.INCORRECT)) == \
        "incorrect: fix this before anything else"
    assert diagnose(replace(v, status=Status.INCORRECT, profile=PROFILE)) == \
        "incorrect: fix this before anything else"


def test_diagnose_uses_the_breakdown_and_the_ncu_line():
    d = diagnose(_correct(profile=PROFILE))
    assert "\n" not in d
    assert d.startswith("correct and faster than eager")
    assert "_softmax_kernel 80%" in d and "vectorized_elementwise_kernel (not yours) 15%" in d
    assert "copies/fills" in d  # 20% of the time outside the candidate's kernels
    ncu = summarize_ncu(NCU_CSV)
    d = diagnose(_correct(profile={**PROFILE, "ncu": ncu}))
    assert "ncu: memory-bound: 82% of DRAM peak, SM 21%, occupancy 45%" in d
    assert "cut bytes moved" in d
    d = diagnose(_correct(profile={**PROFILE, "ncu": summarize_ncu("", PERM)}))
    assert "ncu" not in d  # an unavailable ncu is no advice for the model


# -- the verdict record ------------------------------------------------------------------
def test_verdict_round_trips_with_and_without_profile():
    for v in (_correct(), _correct(profile={**PROFILE, "ncu": summarize_ncu(NCU_CSV)})):
        d = json.loads(json.dumps(v.to_dict()))
        assert Verdict.from_dict(d) == v
    old = _correct().to_dict()
    del old["profile"]  # a record stored before the field existed
    assert Verdict.from_dict(old).profile is None


# -- end to end on CPU -------------------------------------------------------------------
FAST = Limits(import_s=120, check_s=60, trials=2, derived_trials=1, max_derived=1)


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


def test_cpu_verify_has_no_profile_and_no_error(relu):
    v = verify(relu, RELU, device="cpu", limits=replace(FAST, profile_ncu=True))
    assert v.status is Status.CORRECT, v.reason
    assert v.profile is None


def _fake_ncu(tmp_path, csv_text: str, start_s: float = 0.0, before: str = ""):
    """A stand-in ``ncu``: writes a recorded CSV to --log-file, then runs what it wraps
    (after ``start_s`` seconds: Nsight Compute's slow start; ``before``: shell lines run
    first)."""
    rec = tmp_path / "recorded.csv"
    rec.write_text(csv_text)
    exe = tmp_path / "bin" / "ncu"
    exe.parent.mkdir()
    exe.write_text(textwrap.dedent(f'''\
        #!/bin/sh
        log=""
        while [ $# -gt 0 ]; do
          case "$1" in
            --log-file) log="$2"; shift 2;;
            --csv) shift;;
            --*) shift 2;;
            *) break;;
          esac
        done
        {before}
        sleep {start_s}
        cat "{rec}" > "$log"
        exec "$@"
        '''))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def _profiled_under_fake_ncu(relu, tmp_path, monkeypatch, limits, **fake):
    """``verifier._profiled`` of relu's first case with a stand-in ncu (``_fake_ncu``'s
    keywords) first on PATH: (what it returned, the job directory, a rerun with other
    limits)."""
    from sandbox.cases import _build_cases
    from sandbox.devicelock import Hold, device_lock
    from sandbox.verifier import _profiled

    exe = _fake_ncu(tmp_path, NCU_CSV, **fake)
    monkeypatch.setenv("PATH", f"{exe.parent}:{__import__('os').environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    (work / "candidate.py").write_text(RELU)
    cases, _ = _build_cases(relu, "cpu", FAST, False)
    prof = {"shape": cases[0].name, "kernels": []}

    def again(lim):
        return _profiled(prof, relu, "cpu", cases, work, lim, None, (), Hold(device_lock("cpu")))

    return again(limits), work, again


def test_ncu_child_runs_the_main_shape_under_the_prefix(relu, tmp_path, monkeypatch):
    """The parent's ncu step with a stand-in ncu: the sandboxed child (mode "ncu") starts
    under the prefix, runs the shape and exits cleanly; the CSV is read and summarised."""
    out, work, again = _profiled_under_fake_ncu(relu, tmp_path, monkeypatch,
                                                replace(FAST, profile_ncu=True))
    ncu = out["ncu"]
    assert ncu.get("error") is None, ncu
    assert ncu["diagnosis"] == "memory-bound: 82% of DRAM peak, SM 21%, occupancy 45%"
    assert "Traceback" not in (work / "child.log").read_text()
    assert "ncu" not in again(FAST)  # without the flag nothing more runs


def test_the_ncu_child_gets_its_own_import_limit(relu, tmp_path, monkeypatch):
    """A fresh process under ncu may start slowly: the ncu child's
    import limit is at least NCU_IMPORT_S, whatever the verification's own import limit
    (a confirmation cuts that to a share of its budget). Here ncu takes 3 s to start, the
    verification's import limit is 1 s, and the floor is 60 s: the record is read. At a
    1 s floor the child is killed at once (no exit grace for a hung child), before ncu
    wrote its record."""
    lim = replace(FAST, profile_ncu=True, import_s=1.0)
    monkeypatch.setattr("sandbox.profile.NCU_IMPORT_S", 60.0)
    out, _, again = _profiled_under_fake_ncu(relu, tmp_path, monkeypatch, lim, start_s=3)
    assert out["ncu"].get("error") is None, out["ncu"]
    # and the floor is what lets it through: at 1 s the same start is killed in import
    monkeypatch.setattr("sandbox.profile.NCU_IMPORT_S", 1.0)
    out = again(lim)
    assert "no progress for 1 s during import" in str(out["ncu"].get("error")), out["ncu"]


def test_the_ncu_child_and_ncu_share_one_namespace_with_loopback_up(relu, tmp_path,
                                                                    monkeypatch):
    """ncu talks to the process it profiles over TCP on localhost: with network isolation
    the wrapping tool runs inside the child's namespace (not the parent's), where loopback
    is up. Before, ncu ran outside and its target inside, and every ncu child hung at its
    import until killed (H100, 2026-12-06 and -07)."""
    import os
    import sys

    from sandbox._process import network_isolation

    if not network_isolation()[0]:
        pytest.skip("no network namespace here: " + network_isolation()[1])
    ns, lo = tmp_path / "ns.txt", tmp_path / "lo.txt"
    probe = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
             "socket.create_connection(s.getsockname(), timeout=5); print('up')")
    out, _, _ = _profiled_under_fake_ncu(
        relu, tmp_path, monkeypatch, replace(FAST, profile_ncu=True),
        before=(f'readlink /proc/self/ns/net > "{ns}"; '
                f'{sys.executable} -c "{probe}" > "{lo}" 2>&1'))
    assert out["ncu"].get("error") is None, out["ncu"].get("error")
    assert ns.read_text().strip() != os.readlink("/proc/self/ns/net"), "ncu ran outside"
    assert lo.read_text().strip() == "up", lo.read_text()


def test_loopback_helper_runs_its_command(tmp_path):
    """``python -m sandbox._loopback CMD``: without a usable namespace it says so on one line
    and still runs CMD (here: outside any namespace, lo is already up)."""
    import subprocess
    import sys

    out = tmp_path / "ran"
    r = subprocess.run([sys.executable, "-m", "sandbox._loopback", "sh", "-c", f"echo x > {out}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and out.read_text() == "x\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "sandbox._loopback"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


def test_run_ncu_never_raises(monkeypatch, tmp_path):
    from sandbox.devicelock import Hold, device_lock

    monkeypatch.setattr("sandbox.profile.shutil.which", lambda _: None)
    assert run_ncu(lambda b, h: (None, "", ""), Hold(device_lock("cpu")))["error"] == \
        "ncu not found on PATH"
    monkeypatch.setattr("sandbox.profile.shutil.which", lambda _: "/x/ncu")

    def boom(backend, hold):
        raise OSError("no such file")

    rec = run_ncu(boom, Hold(device_lock("cpu")))
    assert "no such file" in rec["error"] and rec["diagnosis"].startswith("ncu unavailable")
    rec = run_ncu(lambda b, h: ("runtime_error", "died", PERM), Hold(device_lock("cpu")))
    assert "ERR_NVGPUCTRPERM" in rec["error"] and "runtime_error" in rec["error"]


def test_breakdown_reads_raw_events_by_their_time_range():
    class _Range:
        def __init__(self, us):
            self.us = us

        def elapsed_us(self):
            return self.us

    @dataclass
    class _Raw:
        name: str
        device_type: DeviceType
        time_range: _Range
        device_time_total: float = 0.0  # what an unconfigured profiler would report

    b = kernel_breakdown([_Raw("k", DeviceType.CUDA, _Range(7.0))], own={"k"})
    assert b["kernels"][0]["us"] == 7.0 and b["kernels"][0]["own"]


def test_breakdown_counts_the_streams_device_work_ran_on():
    """A raw event's device_resource_id is its stream: one call's work on two streams shows."""
    from dataclasses import dataclass

    @dataclass
    class _Raw:
        key: str
        device_type: DeviceType
        device_time_total: float
        device_resource_id: int
        count: int = 1

    one = [_Raw(SOFTMAX, DeviceType.CUDA, 5.0, 7), _Raw(FILL, DeviceType.CUDA, 1.0, 7),
           _Raw("cudaLaunchKernel", DeviceType.CPU, 0.0, 12345)]  # a host thread, not a stream
    assert kernel_breakdown(one)["streams"] == 1
    assert kernel_breakdown([*one, _Raw(SOFTMAX, DeviceType.CUDA, 5.0, 13)])["streams"] == 2
    assert kernel_breakdown(_events())["streams"] == 0  # rows that do not say
    assert clean({"streams": 2})["streams"] == 2 and clean({"streams": "x"})["streams"] == 0


def test_eval_profile_prints_the_breakdown_and_the_ncu_line(capsys):
    from kbench.cli import _print_profile

    _print_profile(_correct(profile={**PROFILE, "ncu": summarize_ncu(NCU_CSV)}))
    text = capsys.readouterr().out
    assert "_softmax_kernel" in text and "80%" in text and "Memcpy DtoD" in text
    assert "ncu (_softmax_kernel): memory-bound: 82% of DRAM peak, SM 21%, occupancy 45%" in text
    assert "streams" not in text  # one stream: nothing to say
    _print_profile(_correct(profile={**PROFILE, "streams": 2}))
    assert "on 2 streams" in capsys.readouterr().out
    _print_profile(_correct())
    assert "profile: none" in capsys.readouterr().out


def test_eval_profile_on_cpu_says_there_is_none(tmp_path):
    from typer.testing import CliRunner

    from kbench.cli import app

    cand = tmp_path / "c.py"
    cand.write_text(RELU)
    r = CliRunner().invoke(app, ["eval", "-p", "level1/relu", "-c", str(cand), "--device", "cpu",
                                 "--store", str(tmp_path / "k.db"), "--profile"])
    assert r.exit_code == 0, r.output
    assert "profile: none" in r.output
