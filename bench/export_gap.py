"""Where an exported op's device time parts from the verifier's, on a CUDA GPU (issue 11).

    python bench/export_gap.py PKG_DIR --op NAME [--shapes main,odd] [--reps 50]
                               [--rounds 3] [--no-eval]

The exported ``bench.py`` timed kv_int8_quant's op 8-12 % slower than kbench's verifier had,
in three sessions, also at the verifier's calls per sample, while both runs' eager and
compiled references agreed (docs/benchmarks.md §15-§17). This script times one op of an
exported package in one process with ``bench.py``'s own ``_device_ms`` (one call per sample,
L2 flushed before each, the launch hidden behind a device spin), in ``--rounds`` interleaved
rounds, launched several ways:

- ``raw``: the kernel module as the verifier ran it (the export's ``wrap_triton`` undone);
- ``wrap``: the exported kernel module's ``ModelNew`` (its launches through ``wrap_triton``);
- ``op``: the registered op, as ``bench.py`` calls it;
- ``raw pool+K``: ``raw`` on a copy of the inputs placed K bytes into a buffer of their own
  (other placements than their own allocation's);
- ``raw device-drawn``: ``raw`` on inputs of the same shape drawn on the device
  (``torch.randn``/``rand``, as floating inputs of the reference are);
- ``compile``: the reference under ``torch.compile``;

each after ``bench.py``'s flush (zeroing a buffer larger than L2: its lines stay dirty and
are written back during the timed call) and after a read-only flush (clean lines). Then
``raw`` and ``op`` once more by the verifier's own protocol (``sandbox.timing.time_cuda``, in
this process), also with the inputs rewritten in place before each sample as the verifier's
child rewrites its input sets (``queue``). Unless
``--no-eval``, ``kbench eval`` of the raw kernel source on the op's problem comes first: the
verifier's times on this machine, in the same hour. It prints one table per shape (ms, and
each against the verifier's op time) and the launch options of the compiled binaries.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WRAP = "_kbench_wrap_triton"  # kbench.export._trace.WRAP, as the export writes it


def _package(pkg_dir: Path) -> str:
    found = [p.parent.name for p in pkg_dir.glob("*/_runtime.py")]
    if len(found) != 1:
        raise SystemExit(f"{pkg_dir}: expected one package with a _runtime.py, found {found}")
    return found[0]


def raw_source(kernel_source: str) -> str:
    """The exported kernel module with its launches as the candidate wrote them."""
    src = re.sub(rf"^from torch\.library import wrap_triton as {WRAP}.*$", "", kernel_source,
                 flags=re.M)
    return src.replace(f"{WRAP}(", "(")


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eval(problem: str, source: str, work: Path) -> dict[str, dict[str, float]]:
    """``kbench eval`` of ``source``: per shape the verifier's op, eager, compiled medians."""
    cand = work / "raw_candidate.py"
    cand.write_text(source)
    r = subprocess.run([sys.executable, "-m", "kbench.cli", "eval", "-p", problem, "-c",
                        str(cand), "--json", "--store", str(work / "eval.db")],
                       capture_output=True, text=True, timeout=900)
    try:
        v = json.loads(r.stdout)
    except json.JSONDecodeError:
        print(f"kbench eval gave no verdict (exit {r.returncode}): "
              f"{(r.stderr.strip().splitlines() or [''])[-1][:300]}", file=sys.stderr)
        return {}
    print(f"kbench eval: {v.get('status')} {v.get('reason') or ''}".rstrip())
    out = {}
    for s in v.get("shapes", []):
        out[s["name"]] = {k: (s.get(src) or {}).get("median_ms")
                          for k, src in (("op", "timing"), ("eager", "eager"),
                                         ("compile", "compiled"))}
    return out


def _placed(inputs: list[Any], offset: int) -> list[Any]:
    """Copies of the tensor inputs in one buffer of their own, the first ``offset`` bytes in
    (each later one 256-byte aligned after the one before)."""
    import torch

    tensors = [x for x in inputs if hasattr(x, "untyped_storage")]
    total = offset + sum(x.numel() * x.element_size() + 512 for x in tensors)
    buf = torch.empty(total, dtype=torch.uint8, device=tensors[0].device if tensors else "cpu")
    out, at = [], offset
    for x in inputs:
        if not hasattr(x, "untyped_storage"):
            out.append(x)
            continue
        n = x.numel() * x.element_size()
        at = -(-at // x.element_size()) * x.element_size()
        view = buf[at:at + n].view(x.dtype).view(x.shape)
        view.copy_(x)
        out.append(view)
        at = -(-(at + n) // 256) * 256
    return out


def _drawn(inputs: list[Any]) -> list[Any]:
    import torch

    return [torch.randn_like(x) if hasattr(x, "is_floating_point") and x.is_floating_point()
            else x for x in inputs]


def _kbench_ms(fn: Any, refill: list[Any] | None) -> float:
    """``fn``'s median by the verifier's timing protocol (``sandbox.timing``); ``refill``: the
    input tensors, rewritten in place (from a copy) before each sample's flush."""
    from sandbox.timing import summarize, time_cuda

    queue = None
    if refill:
        pairs = [(x, x.clone()) for x in refill if hasattr(x, "copy_")]

        def queue(i: int) -> None:
            for x, src in pairs:
                x.copy_(src)

    return float(summarize(time_cuda(fn, queue=queue))["median_ms"])


class _Clocks:
    """The GPU's SM clock and power draw, sampled by ``nvidia-smi`` every 50 ms while the
    script runs: a kernel that runs slower at a lower clock shows it beside its time."""

    def __init__(self, uuid: str | None) -> None:
        import shutil
        import threading
        import time

        self.rows: list[tuple[float, float, float]] = []
        self.proc = None
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return
        cmd = [exe, "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
               "-lms", "50"] + (["-i", uuid] if uuid else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                try:
                    sm, watts = (float(x) for x in line.split(",")[:2])
                except ValueError:
                    continue
                self.rows.append((time.monotonic(), sm, watts))

        threading.Thread(target=read, daemon=True).start()

    def between(self, spans: list[tuple[float, float]]) -> str:
        got = [(sm, w) for t, sm, w in list(self.rows) if any(a <= t <= b for a, b in spans)]
        if not got:
            return "-"
        return (f"{statistics.median(g[0] for g in got):.0f} MHz "
                f"{statistics.median(g[1] for g in got):.0f} W")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


def _binaries(mod: Any) -> list[str]:
    """The launch options of each compiled Triton binary of ``mod``'s kernels (a row saying
    why where Triton's internals are not as expected: the tables are printed by then)."""
    try:
        from triton.runtime.jit import JITFunction
    except ImportError:
        return []
    rows = []
    for name, k in vars(mod).items():
        if not isinstance(k, JITFunction):
            continue
        try:
            for dev, caches in getattr(k, "device_caches", {}).items():
                for ck in (caches[0] if isinstance(caches, tuple) else caches).values():
                    md = ck.metadata
                    opts = {a: getattr(md, a, None)
                            for a in ("num_warps", "num_stages", "num_ctas")}
                    rows.append(f"{name} on {dev}: {opts}, registers "
                                f"{getattr(ck, 'n_regs', '?')}, spills "
                                f"{getattr(ck, 'n_spills', '?')}")
        except Exception as e:  # noqa: BLE001 - a diagnostic's last lines
            rows.append(f"{name}: binaries not read ({type(e).__name__}: {e})")
    return rows


class ReadFlush:
    """A flush that only reads a buffer larger than L2 (``zero_`` is the name ``bench.py``'s
    ``_device_ms`` calls): it leaves L2 holding clean lines, where zeroing leaves dirty ones
    that the timed call writes back."""

    def __init__(self, size: int, device: str) -> None:
        import torch

        self.buf = torch.ones(max(1, size // 4), dtype=torch.float32, device=device)
        self.out = torch.empty((), dtype=torch.float32, device=device)

    def zero_(self) -> ReadFlush:
        import torch

        torch.sum(self.buf, dim=0, out=self.out)
        return self


def flushes(size: int, device: str) -> dict[str, Any]:
    """``bench.py``'s zeroing flush and the read-only one, each ``size`` bytes."""
    import torch

    return {"zeroing": torch.empty(size, dtype=torch.int8, device=device),
            "read-only": ReadFlush(size, device)}


def measure(fns: dict[str, Any], flush: dict[str, Any], rounds: int,
            device_ms: Any, kbench_ms: Any, refill: list[Any]) -> tuple[
                dict[tuple[str, str], list[float]], dict[tuple[str, str], list[tuple[float, float]]],
                dict[tuple[str, str], str]]:
    """Each launch variant after each flush, ``rounds`` interleaved rounds
    (``device_ms(fn, name, flush)``), then ``raw`` and ``op`` by the verifier's protocol
    (``kbench_ms(fn, refill or None)``; ``raw`` also with ``refill``). Returns the times, the
    wall spans each was measured in (for the clock samples), and per variant the error that
    stopped it: one variant that fails leaves the others' rows."""
    times: dict[tuple[str, str], list[float]] = {}
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    errors: dict[tuple[str, str], str] = {}

    def one(key: tuple[str, str], run: Any) -> None:
        if key in errors:
            return
        t0 = time.monotonic()
        try:
            ms = float(run())
        except Exception as e:  # noqa: BLE001 - reported in its row
            errors[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            return
        times.setdefault(key, []).append(ms)
        spans.setdefault(key, []).append((t0, time.monotonic()))

    for _ in range(max(1, rounds)):
        for w, f in fns.items():
            for fl, buf in flush.items():
                one((w, fl), lambda f=f, w=w, buf=buf: device_ms(f, w, buf))
    for w, again in (("raw", False), ("raw", True), ("op", False)):
        if w not in fns:
            continue
        for _ in range(max(1, rounds)):
            one((w, "kbench+refill" if again else "kbench"),
                lambda w=w, again=again: kbench_ms(fns[w], refill if again else None))
    return times, spans, errors


def report_rows(times: dict[tuple[str, str], list[float]], errors: dict[tuple[str, str], str],
                verifier_op: float | None, clock: Any) -> list[str]:
    """One row per (variant, flush or protocol): the median, each round, the median against
    the verifier's op time, and ``clock(key)``; a variant that failed, its error."""
    rows = []
    for key in list(times) + [k for k in errors if k not in times]:
        w, fl = key
        if key in errors:
            rows.append(f"{w:22} {fl:14} failed: {errors[key]}")
            continue
        v = times[key]
        med = statistics.median(v)
        rel = f"{med / verifier_op:.3f}" if verifier_op else "-"
        rows.append(f"{w:22} {fl:14} {med:10.4f} {' '.join(f'{x:.4f}' for x in v):>26}"
                    f" {rel:>14}  {clock(key)}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pkg", type=Path, help="the exported package's folder (with bench.py)")
    ap.add_argument("--op", required=True, help="the op's name, e.g. kvcache_kv_int8_quant")
    ap.add_argument("--shapes", default="", help="comma-separated shapes (default: the timed)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-eval", dest="eval", action="store_false")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("export_gap.py needs a CUDA GPU", file=sys.stderr)
        return 2
    pkg_dir = args.pkg.resolve()
    name = _package(pkg_dir)
    sys.path.insert(0, str(pkg_dir))
    B = _load(f"{name}_bench", pkg_dir / "bench.py")
    rt = importlib.import_module(f"{name}._runtime")
    spec = importlib.import_module(f"{name}.{args.op}").SPEC
    kpath = pkg_dir / name / "_kernels" / f"{args.op}.py"
    wrapped_mod = importlib.import_module(f"{name}._kernels.{args.op}")
    work = Path(tempfile.mkdtemp(prefix="kbench-export-gap-"))
    (work / "raw_kernel.py").write_text(raw_source(kpath.read_text()))
    raw_mod = _load("export_gap_raw", work / "raw_kernel.py")
    verifier = _eval(spec.problem, (work / "raw_kernel.py").read_text(), work) \
        if args.eval else {}
    for shape_name, ver in verifier.items():  # printed at once: kept if anything below fails
        print(f"verifier {shape_name}: " + ", ".join(
            f"{k} {v:.4f} ms" for k, v in ver.items() if v))

    op = getattr(getattr(torch.ops, name), spec.name)
    cycles = B._sleep_cycles_per_ms()
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    flush = flushes(max(256 << 20, 2 * l2), "cuda")
    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    clocks = _Clocks(f"GPU-{uuid}" if uuid is not None else None)
    wanted = {s.strip() for s in args.shapes.split(",") if s.strip()}
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"(ms per call, median of {args.rounds} interleaved rounds of {args.reps} samples, "
          "1 call per sample, L2 flushed before each, launch hidden)")
    with torch.no_grad():
        for shape_name, shape in spec.verified.items():
            if wanted and shape_name not in wanted:
                continue
            if not wanted and not shape.get("speedup_eager"):
                continue
            inputs = rt.inputs_at(spec, shape["params"], 0, "cuda")
            dev = torch.device("cuda")
            raw = rt._build(raw_mod.ModelNew, spec, shape["params"], dev)
            wrapped = rt._build(wrapped_mod.ModelNew, spec, shape["params"], dev)
            ref = rt.reference_model(spec, "cuda", shape["params"])
            call = (*inputs, rt.state(spec, inputs)) if spec.takes_state else tuple(inputs)
            torch._dynamo.reset()
            cref = torch.compile(ref)
            fns = {"raw": lambda: raw(*inputs), "wrap": lambda: wrapped(*inputs),  # noqa: B023
                   "op": lambda: op(*call)}  # noqa: B023
            for off in (0, (2 << 20) + 256, 512 << 20):
                fns[f"raw pool+{off}"] = lambda p=_placed(inputs, off): raw(*p)  # noqa: B023
            drawn = _drawn(inputs)
            fns["raw device-drawn"] = lambda: raw(*drawn)  # noqa: B023
            fns["compile"] = lambda: cref(*inputs)  # noqa: B023
            host = {}
            for w, f in list(fns.items()):  # the warm-up (and the compile)
                try:
                    host[w] = B._host_ms(f, 5, 1)
                except Exception as e:  # noqa: BLE001 - its rows say so, the others run
                    print(f"{w}: failed at its first calls ({type(e).__name__}: {e})")
                    del fns[w]
            times, spans, errors = measure(
                fns, flush, args.rounds,
                lambda f, w, buf: B._device_ms(f, args.reps, 1, host[w], cycles,  # noqa: B023
                                               flush=buf),
                _kbench_ms, inputs)
            ver = verifier.get(shape_name, {})
            print(f"\n--- {spec.qualname} {shape_name} {shape['params']}")
            if ver:
                print("verifier (kbench eval, same machine): " + ", ".join(
                    f"{k} {v:.4f} ms" for k, v in ver.items() if v))
            print(f"{'launched as':22} {'flush / timing':14} {'median ms':>10} {'rounds':>26}"
                  f" {'/ verifier op':>14}  SM clock, power")
            print("\n".join(report_rows(times, errors, ver.get("op"),
                                         lambda k, sp=spans: clocks.between(sp.get(k, [])))))
    clocks.stop()
    for label, mod in (("raw", raw_mod), ("wrap", wrapped_mod)):
        for row in _binaries(mod):
            print(f"{label} binary: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
