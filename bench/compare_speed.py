"""How long the parent's output compare takes (``sandbox.compare.compare``), this tree against
an older one, in one process on one device.

The compare runs in the parent after every checked call while the child waits: on an H100,
16-20 ms per 1 GB output under the older form, 0.39 s of softmax's 1.1 s of checks
(docs/benchmarks.md §10). Each tree's ``compare`` is loaded from its own file and timed on
the same tensors, alternating, with the device synchronised around each call; the verdicts
and error figures of the two are printed beside the times, so a faster form that judges
differently shows at once.

    python bench/compare_speed.py --device cuda --compare OLD_TREE
    python bench/compare_speed.py --device cpu --elems 33554432   # a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load(tree: Path, name: str) -> ModuleType:
    """``sandbox/compare.py`` of ``tree`` as a module of its own (its imports from this tree's
    ``reference_ops``, which the compare only uses for type checks)."""
    spec = importlib.util.spec_from_file_location(name, tree / "sandbox" / "compare.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compare", type=Path, default=None, help="an older tree to time beside")
    ap.add_argument("--elems", type=int, default=1 << 28, help="elements per output (fp32)")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    trees = {"new": _load(ROOT, "compare_new")}
    if args.compare:
        trees["old"] = _load(args.compare.resolve(), "compare_old")
    g = torch.Generator(device=args.device).manual_seed(0)
    ref = torch.randn(args.elems, device=args.device, generator=g)
    cases = {  # a near-miss passes both tests; a wrong one fails the elementwise test
        "passes": ref + 1e-7 * torch.randn(args.elems, device=args.device, generator=g),
        "fails": ref + 1e-2 * torch.randn(args.elems, device=args.device, generator=g),
    }
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f", torch {torch.__version__}, {args.elems} fp32 elements "
            f"({args.elems * 4 / 2**30:.2f} GiB) per output, {args.reps} reps")
    print("| case | tree | median ms | min ms | verdict | max abs err | rel L2 err |")
    print("|---|---|---:|---:|---|---:|---:|")
    medians: dict[tuple[str, str], float] = {}
    for case, out in cases.items():
        times: dict[str, list[float]] = {k: [] for k in trees}
        res = {}
        for _ in range(args.reps + 1):  # the first of each: warm-up, not counted
            for name, mod in trees.items():
                sync()
                t0 = time.perf_counter()
                res[name] = mod.compare(out, ref, 1e-5, 1e-5)
                sync()
                times[name].append((time.perf_counter() - t0) * 1e3)
        for name in trees:
            bad, errs = res[name]
            ms = times[name][1:]
            medians[(case, name)] = statistics.median(ms)
            print(f"| {case} | {name} | {statistics.median(ms):.2f} | {min(ms):.2f} | "
                  f"{'correct' if bad is None else 'mismatch'} | "
                  f"{errs.max_abs_err if errs else float('nan'):.6g} | "
                  f"{errs.rel_l2_err if errs else float('nan'):.9g} |")
    if "old" in trees:
        for case in cases:
            print(f"{case}: old / new = "
                  f"{medians[(case, 'old')] / medians[(case, 'new')]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
