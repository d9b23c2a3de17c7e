"""Optuna's TPE against the exhaustive grid, measured in the same run, on a GPU (issue 10).

For a Triton GEMM (the shipped level1/matmul example with its TUNE narrowed to 4 knobs, 36
configurations) and a Triton softmax (the shipped level1/softmax example, 3 knobs, 36
configurations) every
configuration of the grid is verified and timed on the problem's main shape, then a TPE
study gets at most a third of the grid's evaluations. Both go through
:func:`kbench.tuning.tune`, so both pay the same verification and the best of each is
re-verified on every shape before it counts. Prints a markdown table: grid best, Optuna
best, their ratio and the evaluations each used.

``--examples`` instead tunes each shipped example (kbench/examples) that declares knobs, and
prints its own configuration's time against the tuned one on the main shape.

    python bench/tune_vs_grid.py [--store tune_bench.db] [--seed 0]
    python bench/tune_vs_grid.py --examples [--trials 20]
"""

from __future__ import annotations

import argparse
import ast
import importlib.resources
import math
import sys
import time
from pathlib import Path

# name: (problem, the example's TUNE narrowed to these knobs, or None for its own)
KERNELS = {
    "gemm": ("level1/matmul", {"BLOCK_M": [64, 128], "BLOCK_N": [64, 128, 256],
                               "BLOCK_K": [32, 64], "NUM_STAGES": [3, 4, 5]}),
    "softmax": ("level1/softmax", None),
}


def _example(problem: str, narrow: dict[str, list[object]] | None) -> str:
    """The shipped example for ``problem``; with ``narrow``, its TUNE dict replaced by that
    one (knobs left out keep the example's own values)."""
    source = importlib.resources.files("kbench").joinpath(f"examples/{problem}.py").read_text()
    if narrow is None:
        return source
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "TUNE" for t in n.targets))
    lines = source.splitlines(keepends=True)
    assert node.end_lineno is not None
    return ("".join(lines[:node.lineno - 1]) + f"TUNE = {narrow!r}\n"
            + "".join(lines[node.end_lineno:]))


def _grid_vs_tpe(name: str, problem: str, narrow: dict[str, list[object]] | None, store: str,
                 device: str, seed: int, tag: str) -> str:
    from kbench.problems import load
    from kbench.tuning import space, tune

    spec, source = load(problem)[0], _example(problem, narrow)
    n_grid = math.prod(len(v) for v in space(source).values())
    budget = max(1, n_grid // 3)
    common = dict(device=device, storage_url=store, shapes=["main"], seed=seed)
    t0 = time.monotonic()
    grid = tune(spec, source, study_name=f"grid:{name}:{tag}", sampler="grid",
                n_trials=n_grid, **common)
    t1 = time.monotonic()
    tpe = tune(spec, source, study_name=f"tpe:{name}:{tag}", sampler="tpe",
               n_trials=budget, **common)
    t2 = time.monotonic()
    g, o = grid.best.get("main"), tpe.best.get("main")
    ratio = f"{o.median_ms / g.median_ms:.3f}" if g and o else "–"
    fmt = (lambda b: f"{b.median_ms:.4f} ms {b.knobs}" if b else "none")  # noqa: E731
    return (f"| {name} ({problem}) | {fmt(g)} | {fmt(o)} | {ratio} | "
            f"{grid.evaluated} ({grid.failed} failed, {t1 - t0:.0f} s) | "
            f"{tpe.evaluated} ({tpe.pruned} pruned, {tpe.failed} failed, {t2 - t1:.0f} s) |")


def _examples(store: str, device: str, trials: int, seed: int, tag: str) -> None:
    from kbench.errors import KbenchError
    from kbench.problems import load
    from kbench.tuning import space, tune

    print("| example | default (main) ms | tuned (main) ms | speedup | best knobs | trials |")
    print("|---|---:|---:|---:|---|---:|")
    root = Path(str(importlib.resources.files("kbench").joinpath("examples")))
    for path in sorted(root.glob("*/*.py")):
        source = path.read_text()
        if not space(source):
            continue
        key = f"{path.parent.name}/{path.stem.removesuffix('_cuda')}"
        try:
            r = tune(load(key)[0], source, device=device, storage_url=store, n_trials=trials,
                     study_name=f"examples:{key}:{tag}", seed=seed)
        except KbenchError as e:
            print(f"| {key} | error: {e} | | | | |", flush=True)
            continue
        b = r.best.get("main")
        tuned = b.median_ms if b else None
        speed = (f"{r.default_ms / tuned:.2f}x" if r.default_ms and tuned else "–")
        print(f"| {key} | {r.default_ms if r.default_ms is not None else '–'} | "
              f"{tuned if tuned is not None else '–'} | {speed} | "
              f"{b.knobs if b else '–'} | {r.trials} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="tune_bench.db",
                    help="store (URL or SQLite path) holding the studies and tuned configs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=sorted(KERNELS), action="append",
                    help="run only this kernel (repeatable)")
    ap.add_argument("--examples", action="store_true",
                    help="tune the shipped examples that declare knobs: tuned vs default")
    ap.add_argument("--trials", type=int, default=20, help="--examples: configurations each")
    args = ap.parse_args(argv)

    import torch

    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print("tune_vs_grid needs a CUDA GPU: tuning minimises measured time", file=sys.stderr)
        return 2
    tag = time.strftime("%Y%m%d-%H%M%S")  # fresh studies: both arms measured in this run
    print(f"device: {torch.cuda.get_device_name(args.device)}; store {args.store}; "
          f"studies tagged {tag}\n")
    if args.examples:
        _examples(args.store, args.device, args.trials, args.seed, tag)
        return 0
    print("| kernel | grid best | Optuna TPE best | TPE / grid | grid evaluations | "
          "TPE evaluations |")
    print("|---|---|---|---:|---:|---:|")
    for name in args.only or sorted(KERNELS):
        problem, narrow = KERNELS[name]
        print(_grid_vs_tpe(name, problem, narrow, args.store, args.device, args.seed, tag),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
