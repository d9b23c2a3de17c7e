"""Timing confirmed from outside the candidate's process, on a GPU: for each shipped example,
its main shape verified once more with its call under Nsight Compute, and the per-call time
the child reported by CUDA events held against the sum of its kernels' device durations
(sandbox/confirm.py). Honest kernels are expected to agree (events at or above about the
kernels' own time).

    python bench/check_confirm.py [--problems level1/relu,level1/softmax] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys

from kbench.problems import load
from sandbox import MemoryCache
from sandbox.confirm import confirm_timing

EXAMPLES = ("level1/relu,level1/softmax,level1/matmul,level2/gemm_bias_relu,level3/mlp,"
            "attention/gqa_causal_prefill,kvcache/kv_int8_quant,quant/w8a8_dynamic")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=EXAMPLES)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    args = ap.parse_args()
    cache = MemoryCache()
    rows = []
    print(f"{'problem':32s} {'events ms':>10s} {'ncu ms':>10s} {'ratio':>6s} {'kernels':>7s}  "
          "verdict", flush=True)
    for key in args.problems.split(","):
        spec = load(key)[0]
        src = importlib.resources.files("kbench").joinpath(f"examples/{key}.py").read_text()
        c = confirm_timing(spec, src, device=args.device, cache=cache)
        rows.append({"problem": key, **c})
        f = (lambda x: f"{x:10.4g}" if x is not None else f"{'-':>10s}")  # noqa: E731
        ratio = f"{c['ratio']:6.2f}" if c.get("ratio") is not None else f"{'-':>6s}"
        print(f"{key:32s} {f(c.get('events_ms'))} {f(c.get('ncu_ms'))} {ratio} "
              f"{c.get('kernels') or '-'!s:>7s}  {c['reason'][:120]}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    agree = sum(r["agrees"] is True for r in rows)
    print(f"{agree} / {len(rows)} confirmed; "
          f"{sum(r['agrees'] is False for r in rows)} disagree", flush=True)
    return 0 if all(r["agrees"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
