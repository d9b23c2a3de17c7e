"""Timing confirmed from outside the candidate's process, on a GPU: for each shipped example,
its main shape verified once more with its call under Nsight Compute, and the per-call time
the child reported by CUDA events held against the sum of its kernels' device durations
(sandbox/confirm.py). Honest kernels are expected to agree (events at or above about the
kernels' own time).

    python bench/check_confirm.py [--problems level1/relu,level1/softmax] [--json out.json]
                                  [--limit-s 150]

Each problem's line is printed as soon as it is done, with its seconds and where they went
(verification phases, the ``ncu`` child), and ``--json`` is rewritten after each, so a run
stopped at a time limit keeps every problem confirmed so far. ``--limit-s`` is each problem's
budget, turned into the verification's own phase limits (sandbox.confirm.limits_within): a
stuck problem ends as a timeout, its children killed by the sandbox, and the next goes on.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbench.problems import load
from sandbox import MemoryCache
from sandbox.confirm import confirm_timing, limits_within
from sandbox.profile import NCU_IMPORT_S

EXAMPLES = ("level1/relu,level1/softmax,level1/matmul,level2/gemm_bias_relu,level3/mlp,"
            "attention/gqa_causal_prefill,kvcache/kv_int8_quant,quant/w8a8_dynamic")
LIMIT_S = 150.0

Confirm = Callable[..., dict[str, Any]]


def _write(path: str | None, rows: list[dict[str, Any]]) -> None:
    """``rows`` as ``--json``, replaced whole (a reader never sees half a file)."""
    if not path:
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1, default=str))
    os.replace(tmp, path)


def _line(key: str, c: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return f"{x:10.4g}" if x is not None else f"{'-':>10s}"

    ratio = f"{c['ratio']:6.2f}" if c.get("ratio") is not None else f"{'-':>6s}"
    where = ", ".join(f"{k} {v:.1f}" for k, v in (c.get("phases") or {}).items()
                      if isinstance(v, (int, float)) and v >= 0.05)
    return (f"{key:32s} {f(c.get('events_ms'))} {f(c.get('ncu_ms'))} {ratio} "
            f"{c.get('kernels') or '-'!s:>7s} {c.get('wall_s') or 0:7.1f}  "
            f"{c['reason'][:120]}" + (f"\n{'':32s} seconds: {where}" if where else ""))


def run(problems: list[str], *, device: str, limit_s: float, json_path: str | None = None,
        confirm: Confirm = confirm_timing) -> list[dict[str, Any]]:
    """Confirm each problem's shipped example in turn, printing and writing each as it ends.
    A harness error is that problem's row (``status: "error"``), not the end of the run."""
    cache = MemoryCache()
    limits = limits_within(limit_s)
    rows: list[dict[str, Any]] = []
    print(f"{'problem':32s} {'events ms':>10s} {'ncu ms':>10s} {'ratio':>6s} {'kernels':>7s} "
          f"{'s':>7s}  verdict (each problem within about {limit_s:g} s, "
          f"and up to {NCU_IMPORT_S:g} s more for ncu's start)", flush=True)
    for key in problems:
        t0 = time.monotonic()
        try:
            spec = load(key)[0]
            src = importlib.resources.files("kbench").joinpath(f"examples/{key}.py").read_text()
            c = confirm(spec, src, device=device, cache=cache, limits=limits)
        except Exception as e:  # noqa: BLE001 - one problem's fault; the others go on
            c = {"agrees": None, "status": "error", "events_ms": None, "ncu_ms": None,
                 "ratio": None, "kernels": None,
                 "reason": f"not confirmed: {type(e).__name__}: {str(e)[:200]}"}
        wall = time.monotonic() - t0
        c = {**c, "wall_s": round(wall, 3)}
        if wall > limit_s:  # a phase not under the child's limits (references, peaks, locks)
            c["over_limit"] = True
            c["reason"] = f"{c['reason']} [took {wall:.0f} s, over the {limit_s:g} s limit]"
        rows.append({"problem": key, **c})
        print(_line(key, c), flush=True)
        _write(json_path, rows)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=EXAMPLES)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    ap.add_argument("--limit-s", type=float, default=LIMIT_S,
                    help=f"each problem's time budget in seconds (default {LIMIT_S:g})")
    args = ap.parse_args()
    rows = run(args.problems.split(","), device=args.device, limit_s=args.limit_s,
               json_path=args.json)
    agree = sum(r["agrees"] is True for r in rows)
    print(f"{agree} / {len(rows)} confirmed; "
          f"{sum(r['agrees'] is False for r in rows)} disagree", flush=True)
    return 0 if rows and all(r["agrees"] is True for r in rows) else 1  # every one confirmed


if __name__ == "__main__":
    sys.exit(main())
