"""Where an exported op's host time per call goes, on a CUDA GPU (issue 11).

    python bench/export_profile.py PKG_DIR [--op NAME] [--calls 300] [--top 15]

The exported ReLU cost 120-170 µs of host time per call on an H100 (docs/benchmarks.md §8),
while its wrapper alone costs 6-18 µs on CPU (bench/export_overhead.py). For each exported
op (or ``--op``), on its first verified shape, this prints the host µs per call, measured
with ``time.perf_counter`` around ``--calls`` calls queued without synchronizing (best of 3
rounds, after warm-up), of each layer from the outside in:

- ``torch.ops``: the registered op, as a user calls it (dispatcher, ``triton_op``);
- ``runtime.call``: the package's ``_runtime.call`` alone (the op's body);
- ``forward``: the verified model's ``forward`` (the Triton launch through ``wrap_triton``);
- ``reference``: the eager reference model.

Then ``cProfile`` of the ``torch.ops`` calls, the functions with the most time of their own.
``--device cpu`` runs the same on a package verified on CPU (Triton interpreted): a check
of the script, not figures of any worth.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import sys
import time
from pathlib import Path


def _host_us(fn, calls: int, sync) -> float:  # type: ignore[no-untyped-def]
    for _ in range(min(20, calls)):
        fn()
    sync()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
        sync()
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pkg_dir", type=Path, help="the exported package's folder (pyproject.toml)")
    ap.add_argument("--op", help="one op's name (default: every op verified on CUDA)")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("export_profile.py needs a CUDA GPU (--device cpu checks the script only)",
              file=sys.stderr)
        return 2
    dev = args.device

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    sys.path.insert(0, str(args.pkg_dir.resolve()))
    name = next(p.parent.name for p in args.pkg_dir.glob("*/_runtime.py"))
    pkg = importlib.import_module(name)
    rt = importlib.import_module(f"{name}._runtime")
    where = torch.cuda.get_device_name() if dev == "cuda" else "cpu (a check, not figures)"
    print(f"device: {where}  torch {torch.__version__}  package {name}")
    print(f"{'op':34} {'shape':10} {'torch.ops':>10} {'runtime.call':>13} {'forward':>9} "
          f"{'reference':>10}  (host µs per call)")
    profiled = None
    with torch.no_grad():
        for spec in pkg.SPECS.values():
            if args.op and spec.name != args.op or not spec.verified_device.startswith(dev):
                continue
            shape, entry = next(iter(spec.verified.items()))
            params = entry["params"]
            inputs = rt.inputs_at(spec, params, 0, dev)
            call = (*inputs, rt.state(spec, inputs)) if spec.takes_state else tuple(inputs)
            op = getattr(getattr(torch.ops, name), spec.name)
            model = rt._model_at(spec, rt.model_params(spec, inputs), torch.device(dev))
            ref = rt.reference_model(spec, dev, rt.model_params(spec, inputs))
            cols = [_host_us(lambda: op(*call), args.calls, sync),  # noqa: B023
                    _host_us(lambda s=spec, c=call, n=len(inputs):
                             rt.call(s, c[:n], c[-1] if s.takes_state else None),
                             args.calls, sync),
                    _host_us(lambda: model(*inputs), args.calls, sync),  # noqa: B023
                    _host_us(lambda: ref(*inputs), args.calls, sync)]  # noqa: B023
            print(f"{spec.qualname:34} {shape:10} " + " ".join(
                f"{c:{w}.1f}" for c, w in zip(cols, (10, 13, 9, 10))), flush=True)
            if profiled is None:
                profiled = (spec.qualname, op, call)
    if profiled is not None:
        qual, op, call = profiled
        prof = cProfile.Profile()
        with torch.no_grad():
            prof.enable()
            for _ in range(args.calls):
                op(*call)
            prof.disable()
        sync()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        print(f"\ncProfile of {args.calls} calls of {qual} through torch.ops, by own time:")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
