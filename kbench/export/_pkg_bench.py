"""Time each exported op against its reference (eager) on the verified CUDA shapes.

Usage: ``python bench.py [--reps N] [--tol 0.15] [--no-compile]`` on a machine with a CUDA
GPU. Each timed call is a zero-argument closure; inputs are made outside it. Prints the
median ms of the op and of the eager reference, and the speedups against eager and against
``torch.compile`` of the reference, each beside the one kbench stored at export and marked
``ok`` when within ``--tol`` of it (relative), else ``DIFFERS``. A triton op is timed as
called, with its model's state.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys

import torch

PKG = "__PKG__"


def _median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _vs(now: float, stored: float | None, tol: float) -> str:
    """This machine's speedup beside the stored one, marked ok within ``tol`` (relative)."""
    if not stored:
        return f"{now:7.2f}x {'-':>7}"
    mark = "ok" if abs(now - stored) <= tol * stored else "DIFFERS"
    return f"{now:7.2f}x {stored:6.2f}x {mark}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--tol", type=float, default=0.15,
                    help="relative distance from the stored speedup still marked ok")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip timing torch.compile of the reference (x compile)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench.py needs a CUDA GPU (timings on CPU would mean nothing)", file=sys.stderr)
        return 2
    pkg = importlib.import_module(PKG)
    rt = importlib.import_module(f"{PKG}._runtime")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'op':32} {'shape':24} {'op ms':>9} {'ref ms':>9} {'x eager':>8} {'stored':>7}"
          f" {'x compile':>9} {'stored':>7}")
    with torch.no_grad():
        for spec in pkg.SPECS.values():
            if not spec.verified_device.startswith("cuda"):
                print(f"{spec.qualname:32} verified on {spec.verified_device} only: not timed")
                continue
            op = getattr(getattr(torch.ops, PKG), spec.name)
            for name, shape in spec.verified.items():
                inputs = rt.inputs_at(spec, shape["params"], 0, "cuda")
                served = rt.model_params(spec, inputs)
                if served != shape["params"]:  # inputs alike, another verified model serves
                    print(f"{spec.qualname:32} {name:24} served by the model of "
                          f"{served}: not timed")
                    continue
                call = (*inputs, rt.state(spec, inputs)) if spec.takes_state else tuple(inputs)
                ref = rt.reference_model(spec, "cuda", served)
                t_op = _median_ms(lambda: op(*call), args.reps)  # noqa: B023
                t_ref = _median_ms(lambda: ref(*inputs), args.reps)  # noqa: B023
                cols = [_vs(t_ref / t_op, shape.get("speedup_eager"), args.tol)]
                if args.compile:
                    torch._dynamo.reset()
                    cref = torch.compile(ref)
                    t_cref = _median_ms(lambda: cref(*inputs), args.reps)  # noqa: B023
                    cols.append(_vs(t_cref / t_op, shape.get("speedup_compile"), args.tol))
                print(f"{spec.qualname:32} {name:24} {t_op:9.4f} {t_ref:9.4f} " + " ".join(cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
