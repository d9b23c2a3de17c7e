"""Smoke check of the default sandbox backend on this machine's device: two verifications
of the shipped ReLU example (the second warm), their backend, verdict and phases.

    python bench/smoke_backend.py [--device cuda]

Exit 0 only if both verdicts are correct.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import time

from kbench.problems import load
from sandbox import MemoryCache, verify
from sandbox.backends import default_backend


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    backend = default_backend()
    spec = load("level1/relu")[0]
    src = importlib.resources.files("kbench").joinpath("examples/level1/relu.py").read_text()
    cache = MemoryCache()
    ok = True
    for i in range(2):
        t0 = time.monotonic()
        v = verify(spec, src, device=args.device, cache=cache, isolation=backend)
        ok &= v.passed
        phases = ", ".join(f"{k} {x:.2f}" for k, x in (v.phases or {}).items())
        print(f"{backend.name} run {i}: {v.status.value} in {time.monotonic() - t0:.2f} s "
              f"({phases}) {'' if v.passed else v.reason[:300]}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
