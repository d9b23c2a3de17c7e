"""Profiler feedback for a correct candidate: where its device time goes, and what limits it.

Two sources, both advisory (they feed prompts and reports, never the verdict's status):

* **Kernel breakdown** (every correct candidate timed on a GPU): the child's last watched
  call of the main shape, after timing, already runs under ``torch.profiler`` for kernel
  provenance (:class:`sandbox._provenance.Watch`); its device events are summed here per
  kernel — calls, device µs, share of the call's device time, whether it is the candidate's
  own — top N first. :func:`kernel_breakdown` reads both raw ``FunctionEvent`` lists and
  ``key_averages()`` rows (``key``, ``count``, ``device_type``, ``device_time_total``).
* **Nsight Compute** (``Limits.profile_ncu`` and ``ncu`` on PATH): one more sandboxed child,
  the plain subprocess command with an ``ncu`` prefix (a fork server cannot be wrapped),
  runs the main shape once unprofiled (compiles, autotunes), then once between
  ``cudaProfilerStart/Stop`` (``--profile-from-start off``), so only that call's kernels are
  measured. The longest kernel's DRAM and SM throughput (% of peak) and achieved occupancy
  give the limiter and a one-line diagnosis. ``--clock-control none``: a child killed on a
  deadline must not leave the GPU locked at base clocks for the jobs timed after it.

Example:
    >>> limiter(82.0, 21.0)
    'memory-bound'
    >>> ncu_line({"dram_pct": 82.0, "sm_pct": 21.0, "occupancy_pct": 45.0})
    'memory-bound: 82% of DRAM peak, SM 21%, occupancy 45%'
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sandbox._process import Child
from sandbox._provenance import base_name
from sandbox.backends._subprocess import SubprocessBackend
from sandbox.devicelock import Hold

__all__ = ["METRICS", "HIGH_PCT", "TOP_N", "kernel_breakdown", "clean", "parse_ncu_csv",
           "summarize_ncu", "limiter", "ncu_line", "ncu_command", "ncu_window", "run_ncu",
           "NCU_IMPORT_S"]

DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
DURATION = "gpu__time_duration.sum"
METRICS = (DRAM, SM, OCCUPANCY, DURATION)
HIGH_PCT = 60.0  # a unit at or above this share of its peak is what limits the kernel
TOP_N = 8
# The least import limit of a child under ``ncu``: a fresh process (no warm fork server)
# whose libraries load under Nsight Compute's injection. It is a hang limit, not an expected
# time. On an H100 (2026-12-07) every ncu child of a confirmation was killed at its 30 s
# share of import; the likely cause was that ncu ran outside the child's network namespace
# and could not reach its target (fixed: sandbox._loopback), not a slow start.
NCU_IMPORT_S = 180.0
_NAME_CHARS = 200
_MOVES = ("Memcpy", "Memset", "memcpy", "memset")


# -- torch.profiler: the per-kernel breakdown ------------------------------------------------
def _is_device(e: Any) -> bool:
    dt = getattr(e, "device_type", None)
    return getattr(dt, "name", str(dt)).rsplit(".", 1)[-1] == "CUDA"


def _device_us(e: Any) -> float:
    """A raw event's own span (what ``device_time_total`` returns for a kernel, without its
    dependence on how the profiler was configured), else a key_averages row's total."""
    tr = getattr(e, "time_range", None)
    if tr is not None:
        return float(tr.elapsed_us())
    return float(getattr(e, "device_time_total", 0.0) or 0.0)


def kernel_breakdown(events: Iterable[Any], own: Iterable[str] = (),
                     top: int = TOP_N) -> dict[str, Any]:
    """Device time per kernel of one call, largest first (``top`` kept).

    Returns ``{"device_us", "launches", "kernels": [{"name", "full", "calls", "us", "share",
    "own"}], "other_us", "streams"}``: ``share`` is of the call's summed device time, copies
    and fills included (they are time the candidate spends too); ``own`` marks the
    candidate's kernels (by name, as :mod:`sandbox._provenance` matches them); ``streams``
    counts the device streams the call's work ran on (a raw event's ``device_resource_id``,
    the stream for device activity; 0 where the rows do not say, as ``key_averages`` rows)."""
    mine = set(own)
    calls: dict[str, int] = {}
    us: dict[str, float] = {}
    streams: set[int] = set()
    for e in events:
        if not _is_device(e):
            continue
        sid = getattr(e, "device_resource_id", None)
        if isinstance(sid, int) and not isinstance(sid, bool):
            streams.add(sid)
        name = str(getattr(e, "key", None) or getattr(e, "name", "?"))
        calls[name] = calls.get(name, 0) + int(getattr(e, "count", 1) or 1)
        us[name] = us.get(name, 0.0) + _device_us(e)
    total = sum(us.values())
    rows = sorted(us, key=lambda n: (-us[n], n))
    kernels = [{
        "name": name if name.startswith(_MOVES) else base_name(name),
        "full": name[:_NAME_CHARS], "calls": calls[name], "us": round(us[name], 3),
        "share": round(us[name] / total, 4) if total > 0 else 0.0,
        "own": base_name(name) in mine,
    } for name in rows[:top]]
    return {"device_us": round(total, 3), "launches": sum(calls.values()), "kernels": kernels,
            "other_us": round(sum(us[n] for n in rows[top:]), 3), "streams": len(streams)}


def clean(msg: dict[str, Any], top: int = TOP_N) -> dict[str, Any]:
    """The child's ``profile`` message as a bounded record (names cut, ``top`` kernels)."""

    def num(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

    kernels = []
    for k in list(msg.get("kernels") or [])[:top]:
        if isinstance(k, dict):
            kernels.append({"name": str(k.get("name", "?"))[:_NAME_CHARS],
                            "full": str(k.get("full", ""))[:_NAME_CHARS],
                            "calls": int(num(k.get("calls"))), "us": num(k.get("us")),
                            "share": num(k.get("share")), "own": bool(k.get("own"))})
    out: dict[str, Any] = {"shape": str(msg.get("shape", ""))[:_NAME_CHARS],
                           "device_us": num(msg.get("device_us")),
                           "launches": int(num(msg.get("launches"))), "kernels": kernels,
                           "other_us": num(msg.get("other_us")),
                           "streams": int(num(msg.get("streams")))}
    if msg.get("error"):
        out["error"] = str(msg["error"])[:500]
    return out


# -- Nsight Compute: parsing and the limiter -------------------------------------------------
def _number(text: str) -> float | None:
    s = text.strip().replace(" ", "")
    if not s or s.lower() in ("n/a", "nan", "-"):
        return None
    if "," in s:
        if "." in s or re.fullmatch(r"-?\d{1,3}(,\d{3})+", s):
            s = s.replace(",", "")  # thousands separators: 1,234.5 / 12,345
        else:
            s = s.replace(",", ".")  # a decimal comma (some locales): 9,00
    try:
        return float(s)
    except ValueError:
        return None


def parse_ncu_csv(text: str) -> list[dict[str, Any]]:
    """Kernels in ``ncu --csv`` output (its ``==PROF==`` lines and anything before the header
    skipped): ``[{"id", "kernel", "metrics": {name: value}}]`` in launch order."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines)
                  if ln.startswith('"') and '"Metric Name"' in ln and '"Metric Value"' in ln),
                 None)
    if start is None:
        return []
    body = [ln for ln in lines[start:] if ln.startswith('"')]
    kernels: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(body))):
        name = (row.get("Metric Name") or "").strip()
        value = _number(row.get("Metric Value") or "")
        if not name or value is None:
            continue
        kid = (row.get("ID") or "0").strip()
        k = kernels.setdefault(kid, {"id": kid, "kernel": (row.get("Kernel Name") or "?")
                                     .strip()[:_NAME_CHARS], "metrics": {}})
        unit = (row.get("Metric Unit") or "").strip().lower()
        if name == DURATION and unit in ("usecond", "us"):
            value *= 1e3
        elif name == DURATION and unit in ("msecond", "ms"):
            value *= 1e6
        k["metrics"][name] = value
    return list(kernels.values())


def limiter(dram_pct: float | None, sm_pct: float | None, high: float = HIGH_PCT) -> str:
    """``memory-bound`` / ``compute-bound`` when DRAM / SM throughput is the higher and at
    least ``high`` % of peak; ``latency-bound`` when neither reaches it (stalls, too few
    warps or blocks, launch overhead); ``unknown`` without both figures."""
    if dram_pct is None or sm_pct is None:
        return "unknown"
    if max(dram_pct, sm_pct) < high:
        return "latency-bound"
    return "memory-bound" if dram_pct >= sm_pct else "compute-bound"


def _pct(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}%"


def ncu_line(m: dict[str, Any]) -> str:
    """One line from an ``ncu`` record: the limiter and the three headline figures, or why
    there are none."""
    if m.get("error"):
        return f"ncu unavailable: {m['error']}"
    dram, sm, occ = m.get("dram_pct"), m.get("sm_pct"), m.get("occupancy_pct")
    kind = limiter(dram, sm)
    if kind == "memory-bound":
        return f"memory-bound: {_pct(dram)} of DRAM peak, SM {_pct(sm)}, occupancy {_pct(occ)}"
    if kind == "compute-bound":
        return f"compute-bound: SM {_pct(sm)} of peak, DRAM {_pct(dram)}, occupancy {_pct(occ)}"
    return (f"{kind}: DRAM {_pct(dram)} and SM {_pct(sm)} of peak, occupancy {_pct(occ)}")


_PERM = "ERR_NVGPUCTRPERM"


def summarize_ncu(text: str, log: str = "") -> dict[str, Any]:
    """The headline record from ``ncu`` output ``text`` (its log file) and the child's log:
    the longest profiled kernel's figures, its limiter and one-line diagnosis; or ``error``
    (no permission for the GPU's counters, no kernel profiled) with the diagnosis saying so."""
    both = text + "\n" + log
    kernels = parse_ncu_csv(text)
    rows = [k for k in kernels if DRAM in k["metrics"] or SM in k["metrics"]]
    if not rows:
        if _PERM in both:
            err = (f"no permission for the GPU's performance counters ({_PERM}); allow "
                   "non-admin profiling (NVreg_RestrictProfilingToAdminUsers=0) or run as admin")
        else:
            said = [ln.strip() for ln in both.splitlines() if ln.startswith("==ERROR==")]
            err = said[0][:300] if said else "ncu profiled no kernel"
        return {"error": err, "diagnosis": f"ncu unavailable: {err}", "kernels": len(kernels)}
    main = max(rows, key=lambda k: k["metrics"].get(DURATION, 0.0))
    m = main["metrics"]
    timed = [k["metrics"][DURATION] for k in kernels if DURATION in k["metrics"]]
    rec: dict[str, Any] = {
        "kernel": main["kernel"], "kernels": len(kernels),
        "dram_pct": m.get(DRAM), "sm_pct": m.get(SM), "occupancy_pct": m.get(OCCUPANCY),
        "duration_ns": m.get(DURATION),
        # every profiled kernel of the call: what sandbox.confirm holds the timing against
        "total_duration_ns": sum(timed) if timed else None,
    }
    rec["limiter"] = limiter(rec["dram_pct"], rec["sm_pct"])
    rec["diagnosis"] = ncu_line(rec)
    return rec


# -- Nsight Compute: running it ---------------------------------------------------------------
def ncu_command(ncu: str, log_file: Path, launch_count: int = 16) -> list[str]:
    """The prefix that runs a child under ``ncu``, writing CSV to ``log_file``.

    As cheap as the record allows: only :data:`METRICS` (``--metrics`` alone collects no
    section; these four fit a few replay passes per kernel), only the calls inside
    :func:`ncu_window` (``--profile-from-start off``: the unprofiled call before it, which
    compiles and autotunes, runs uninstrumented), at most ``launch_count`` kernels. Clocks:
    ``none`` (see the module's note). Caches: ``all``, stated rather than left to the
    default — every replay pass starts with flushed caches, so each kernel's
    ``gpu__time_duration`` is its cold-cache time, as a timed sample of a large call is (the
    timing protocol flushes L2 before each sample); a batched small call's event time is
    warm and includes launch gaps, which :mod:`sandbox.confirm`'s tolerance absorbs."""
    return [ncu, "--csv", "--log-file", str(log_file), "--metrics", ",".join(METRICS),
            "--profile-from-start", "off", "--target-processes", "all",
            "--clock-control", "none", "--cache-control", "all",
            "--launch-count", str(launch_count)]


@contextlib.contextmanager
def ncu_window() -> Iterator[None]:
    """In the child: the region ``ncu --profile-from-start off`` measures."""
    import torch

    if not torch.cuda.is_available():  # a CPU run (tests): nothing to measure
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    try:
        yield
    finally:
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()


class _NcuBackend(SubprocessBackend):
    """The subprocess backend with ``ncu`` in front (not registered: used only here)."""

    def __init__(self, prefix: Sequence[str]) -> None:
        super().__init__()
        self.prefix = list(prefix)

    def start(self, work: Path, device: str) -> Child:
        return Child(work, device, isolate_network=self.isolate_network, prefix=self.prefix)


class _Exclusive(Hold):
    """A hold that is exclusive from the start: nothing else runs on the device while
    ``ncu`` replays the kernels."""

    def share(self) -> None:
        self.exclude()


RunChild = Callable[[SubprocessBackend, Hold], tuple[str | None, str, str]]


def run_ncu(run: RunChild, hold: Hold) -> dict[str, Any]:
    """Profile once under ``ncu`` and summarise; never raises (ncu is advisory).

    ``run(backend, hold)`` drives one ``ncu``-mode child (job already written) with that
    backend and returns (error status or None, reason, the child's log tail)."""
    ncu = shutil.which("ncu")
    if ncu is None:
        return {"error": "ncu not found on PATH", "diagnosis": "ncu unavailable: not installed"}
    t0 = time.monotonic()
    out = Path(tempfile.mkdtemp(prefix="kbench-ncu-"))  # outside the child's directory
    try:
        log_file = out / "ncu.csv"
        try:
            hold.release()  # a second hold of this process on the lock would wait on itself
            status, reason, log = run(_NcuBackend(ncu_command(ncu, log_file)),
                                      _Exclusive(hold.lock))
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
        except Exception as e:  # noqa: BLE001 - advisory: the reason goes into the record
            status, reason, log, text = "error", f"{type(e).__name__}: {e}", "", ""
        rec = summarize_ncu(text, log)
        if "error" in rec and status is not None:
            rec["error"] = f"{rec['error']} (the profiled run ended {status}: {reason[:200]})"
            rec["diagnosis"] = f"ncu unavailable: {rec['error']}"
        rec["wall_s"] = round(time.monotonic() - t0, 3)
        return rec
    finally:
        shutil.rmtree(out, ignore_errors=True)
