"""Eager and torch.compile times and SOL% of eager for every problem, as a markdown table.

    python bench/baselines.py [SELECTOR] [--workers 4] [--out docs/baselines.md] [--json F]

Phase 1 compiles every problem with torch.compile in parallel worker processes, which fills
the inductor cache (CPU-bound work, so it parallelizes); phase 2 times everything in one
process, one op at a time, with kbench's timing protocol (sandbox.timing: L2 flushed, device
synchronized, median of repetitions), so compiled models load from the cache. A problem whose
eager time is outside 0.2-50 ms, or whose compile fails, is flagged in the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import traceback
from typing import Any

EAGER_RANGE_MS = (0.2, 50.0)


def _shapes(spec: Any, which: str) -> dict[str, Any]:
    return spec.shapes if which == "all" else {"main": spec.shapes["main"]}


def _compile_worker(keys: list[str], cache_dir: str, q: Any, which: str) -> None:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    import torch

    from kbench.problems import load

    for key in keys:
        spec = load(key)[0]
        for name, shape in _shapes(spec, which).items():
            t0 = time.perf_counter()
            try:
                init = spec.make_init_inputs(shape)
                model = torch.compile(spec.make_model(init, 0, "cuda"))
                xs = spec.make_inputs(shape, 1, "cuda")
                with torch.no_grad():
                    model(*xs)
                torch.cuda.synchronize()
                q.put((key, name, None, time.perf_counter() - t0))
            except Exception as e:  # noqa: BLE001 - reported in the table
                q.put((key, name, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}",
                       time.perf_counter() - t0))
            finally:
                torch.cuda.empty_cache()


def warm_compile(keys: list[str], workers: int, cache_dir: str,
                 which: str) -> dict[tuple[str, str], Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    chunks = [keys[i::workers] for i in range(workers)]
    procs = [ctx.Process(target=_compile_worker, args=(c, cache_dir, q, which)) for c in chunks if c]
    for p in procs:
        p.start()
    out: dict[tuple[str, str], Any] = {}
    alive = True
    while alive:
        alive = any(p.is_alive() for p in procs)
        while not q.empty():
            key, name, errmsg, secs = q.get()
            out[(key, name)] = (errmsg, secs)
        time.sleep(0.5)
    for p in procs:
        p.join()
    return out


def measure(keys: list[str], compiled: dict[tuple[str, str], Any], which: str,
            jsonl: str | None) -> list[dict[str, Any]]:
    import torch

    from kbench.problems import load
    from sandbox.fingerprint import measure_device_facts
    from sandbox.timing import TimingConfig, summarize, time_cuda
    from sandbox.verifier import roofline_ms

    facts = measure_device_facts()
    cfg = TimingConfig(budget_s=0.5, max_reps=200, warmup_ms=20)
    rows = []
    sink = open(jsonl, "a") if jsonl else None  # noqa: SIM115 - closed below
    for key in keys:
        spec = load(key)[0]
        for name, shape in _shapes(spec, which).items():
            row: dict[str, Any] = {"problem": key, "shape": name, "dtype": spec.meta.dtype}
            try:
                init = spec.make_init_inputs(shape)
                model = spec.make_model(init, 0, "cuda")
                sets = [spec.make_inputs(shape, s, "cuda") for s in (1, 2)]

                def run(m: Any, sets: list[Any] = sets) -> Any:
                    with torch.no_grad():
                        return m(*sets[0])

                row["eager"] = summarize(time_cuda(lambda m=model: run(m), cfg=cfg).event_ms)
                flops, nbytes = spec.roofline(shape)
                roof = roofline_ms(flops, nbytes, spec.meta.dtype, facts)
                row["roofline_ms"] = roof
                row["sol_eager_pct"] = 100 * roof / row["eager"]["median_ms"] if roof else None
                # phase 1 only warmed the cache; this process decides (a phase-1 failure
                # may have been memory pressure from the parallel workers)
                try:
                    cm = torch.compile(model)
                    t0 = time.perf_counter()
                    run(cm)
                    row["compile_load_s"] = time.perf_counter() - t0
                    row["compile"] = summarize(time_cuda(lambda m=cm: run(m), cfg=cfg).event_ms)
                except Exception as e:  # noqa: BLE001 - reported in the table
                    row["compile_error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
                    torch._dynamo.reset()
                del model, sets
            except Exception as e:  # noqa: BLE001 - reported in the table
                row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
                traceback.print_exc()
            torch.cuda.empty_cache()
            rows.append(row)
            if sink:
                sink.write(json.dumps(row) + "\n")
                sink.flush()
            eg = row.get("eager", {}).get("median_ms")
            cp = row.get("compile", {}).get("median_ms")
            print(f"{key:45s} {name:12s} eager {eg if eg is None else round(eg, 4)} ms  "
                  f"compile {cp if cp is None else round(cp, 4)} ms", flush=True)
    if sink:
        sink.close()
    return rows


def to_markdown(rows: list[dict[str, Any]], fp: dict[str, Any], cmd: str) -> str:
    lo, hi = EAGER_RANGE_MS
    lines = [
        "# Baselines: eager and torch.compile on every problem",
        "",
        f"Device: {fp.get('gpu')} ({fp.get('sms')} SMs), driver {fp.get('driver')}, CUDA "
        f"{fp.get('cuda')}, torch {fp.get('torch')}, triton {fp.get('triton')}, Python "
        f"{fp.get('python')}.",
        "",
        f"Regenerate: `{cmd}`",
        "",
        "Times are medians of kbench's timing protocol (L2 flushed and the device synchronized "
        "before every call). SOL% is the roofline time (FLOPs at the measured matmul rate of "
        "the dtype, bytes at the measured copy bandwidth; whichever is larger) over eager's "
        f"median. Flags: eager outside {lo}-{hi} ms, or compile failed.",
        "",
        "| problem | shape | dtype | eager ms | compile ms | compile/eager | SOL% eager | flag |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        eg = r.get("eager", {}).get("median_ms")
        cp = r.get("compile", {}).get("median_ms")
        flag = []
        if r.get("error"):
            flag.append("error: " + r["error"])
        if eg is not None and not (lo <= eg <= hi) and r["shape"] == "main":
            flag.append("eager outside range")
        if r.get("compile_error"):
            flag.append("compile failed: " + r["compile_error"])
        sol = r.get("sol_eager_pct")
        lines.append(
            f"| {r['problem']} | {r['shape']} | {r.get('dtype') or 'float32'} | "
            f"{'' if eg is None else f'{eg:.4f}'} | {'' if cp is None else f'{cp:.4f}'} | "
            f"{'' if eg is None or cp is None else f'{cp / eg:.2f}'} | "
            f"{'' if sol is None else f'{sol:.1f}'} | {'; '.join(flag).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("selector", nargs="?", default="all")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", default=None, help="markdown file to write")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache-dir", default="/tmp/kbench_inductor")
    ap.add_argument("--shapes", choices=["main", "all"], default="main")
    ap.add_argument("--jsonl", default=None, help="append each row here as it is measured")
    args = ap.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir
    from kbench.problems import load
    from sandbox.fingerprint import fingerprint

    keys = [s.key for s in load(args.selector)]
    t0 = time.perf_counter()
    compiled = (warm_compile(keys, args.workers, args.cache_dir, args.shapes)
                if args.workers > 0 else {})
    print(f"phase 1 (compile, {args.workers} workers): {time.perf_counter() - t0:.0f} s", flush=True)
    rows = measure(keys, compiled, args.shapes, args.jsonl)
    fp = fingerprint("cuda")
    cmd = (f"python bench/baselines.py {args.selector} --workers {args.workers} "
           f"--shapes {args.shapes} --out docs/baselines.md")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fingerprint": fp, "rows": rows}, f, indent=2)
    md = to_markdown(rows, fp, cmd)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    print(md)


if __name__ == "__main__":
    main()
