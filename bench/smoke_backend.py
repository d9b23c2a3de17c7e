"""Smoke check of the default sandbox backend on this machine's device: two verifications
of the shipped ReLU example (the second warm), their backend, verdict and phases; on a GPU
also the same kernel on a 4096-element ReLU, which is timed in batches of calls.

    python bench/smoke_backend.py [--device cuda]

Exit 0 only if every verdict is correct. Whether the tiny kernel was timed in batches is
printed, not judged: it depends on the measured call time, not on the backend working.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
import time
from pathlib import Path

from kbench.problems import load, load_file
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
        shapes = ((v.explain or {}).get("timing") or {}).get("shapes") or {}
        if shapes:  # the candidate's samples per timed shape (the sampling rule's cost)
            print("  samples: " + ", ".join(
                f"{n} {s['candidate']['samples']} x {s['candidate']['calls_per_sample']}"
                f" of {s['candidate']['median_ms']:.4f} ms"
                for n, s in shapes.items() if "candidate" in s), flush=True)
    if args.device.startswith("cuda"):  # a kernel of a few µs: timed in batches
        with tempfile.TemporaryDirectory() as d:
            tiny = Path(d) / "tiny_relu.py"
            tiny.write_text(TINY)
            v = verify(load_file(tiny), src, device=args.device, cache=cache,
                       isolation=backend)
            t = next((s.timing for s in v.shapes if s.timing is not None), None)
            batched = t is not None and t.calls_per_sample > 1
            ok &= v.passed
            print(f"{backend.name} tiny relu: {v.status.value}, calls per sample "
                  f"{t.calls_per_sample if t else '-'} (batched: {'yes' if batched else 'no'}), median {t.median_ms if t else '-'} ms, "
                  f"speedup {v.speedup_eager} {'' if v.passed else v.reason[:300]}", flush=True)
    return 0 if ok else 1


TINY = """import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def get_inputs():
    return [torch.randn(4096)]


def get_init_inputs():
    return []
"""


if __name__ == "__main__":
    sys.exit(main())
