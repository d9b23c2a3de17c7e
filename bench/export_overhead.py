"""Host overhead of an exported op's wrapper (``PKG/_runtime.py`` ``call``) per call, the
kernel launch excluded. CPU only; no GPU, no Triton.

    python bench/export_overhead.py [--calls 20000] [--runtime kbench/export/_pkg_runtime.py]

A package is assembled in a temporary folder as ``kbench export`` lays it out: the runtime
(``--runtime``: an older copy measures the "before"), the reference ``problems/level1/relu.py``
verbatim, and a kernel module whose ``ModelNew.forward`` stands in for the launch (it
allocates the output, as a launcher does, and launches nothing). Its ``OpSpec`` verifies the
problem's small CPU shape and tunes one knob there. Measured with ``time.perf_counter`` around
``--calls`` calls (after 200 warm-up calls), best of 5 rounds:

- ``call``: ``_runtime.call(SPEC, (x,))`` on the verified shape (TRITON_INTERPRET=1, so the
  Triton backend counts as available on CPU);
- ``forward``: the stand-in ``ModelNew.forward(x)`` alone;
- overhead = call - forward: signature/shape lookup, knobs, ``no_grad``, output ownership.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_KERNEL = '''import torch
import torch.nn as nn

BLOCK = 1024  # a knob the OpSpec tunes


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)  # stands in for the launch: allocate, launch nothing
'''


def _package(tmp: Path, runtime: Path) -> str:
    pkg = tmp / "overhead_pkg"
    (pkg / "_kernels").mkdir(parents=True)
    (pkg / "_reference").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_kernels" / "__init__.py").write_text("")
    (pkg / "_reference" / "__init__.py").write_text("")
    shutil.copy(runtime, pkg / "_runtime.py")
    shutil.copy(ROOT / "problems" / "level1" / "relu.py", pkg / "_reference" / "relu.py")
    (pkg / "_kernels" / "relu.py").write_text(_KERNEL)
    return pkg.name


def _best_us(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--runtime", type=Path, default=ROOT / "kbench/export/_pkg_runtime.py")
    args = ap.parse_args()
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="kbench-overhead-"))
    try:
        name = _package(tmp, args.runtime)
        sys.path.insert(0, str(tmp))
        rt = importlib.import_module(f"{name}._runtime")
        ref = importlib.import_module(f"{name}._reference.relu")
        params = {"batch_size": 4, "dim": 1000}
        base = rt.OpSpec(name="relu", qualname=f"{name}::relu", problem="level1/relu",
                         backend="triton", kernel_module=f"{name}._kernels.relu", reference=ref,
                         verified={}, verified_device="cpu", cpu_shapes={"small": params})
        x = rt.inputs_at(base, params, 0, "cpu")[0]
        spec = rt.OpSpec(**{**base.__dict__, "verified": {"small": {
            "params": params, "signature": rt.signature([x])}}, "tuned": {"small": {"BLOCK": 256}}})
        assert rt.call(spec, (x,)).shape == x.shape and rt.FALLBACKS.get(spec.qualname) is None
        kernel = importlib.import_module(spec.kernel_module)
        assert kernel.BLOCK == 256, "the verified shape's tuned knob was not set"
        model = kernel.ModelNew()
        t_call = _best_us(lambda: rt.call(spec, (x,)), args.calls)
        t_fwd = _best_us(lambda: model.forward(x), args.calls)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"runtime: {args.runtime}  torch {torch.__version__}  CPU, x {list(x.shape)} "
          f"{x.dtype}, best of 5 x {args.calls} calls (perf_counter)")
    print(f"call {t_call:8.2f} us   forward alone {t_fwd:6.2f} us   "
          f"wrapper overhead {t_call - t_fwd:8.2f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
