"""Where a warm child's first checked call goes: the 0.5-0.7 s seen on an H100
(docs/benchmarks.md §9), split by function with cProfile.

It replays the child's steps in this process on a GPU: the fork server's imports, CUDA
start, the example's import, then one watched call as the verifier makes it (the child's
``Watch`` and ``_watched_call``), profiled, and a second one for comparison. The Triton cache
lives in ``--cache``; run the script twice with the same directory and read the second run,
whose builds come from the cache as a re-verification's do.

    python bench/first_call_profile.py --problem level1/relu --cache /tmp/fc_cache   # builds
    python bench/first_call_profile.py --problem level1/relu --cache /tmp/fc_cache   # figure

``--device cpu`` runs the same steps in Triton's interpreter (a smoke test; its times say
nothing about a GPU).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="level1/relu", help="a problem with a shipped example")
    ap.add_argument("--cache", type=Path, required=True, help="TRITON_CACHE_DIR to use")
    ap.add_argument("--top", type=int, default=30, help="functions to list")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    os.environ["TRITON_CACHE_DIR"] = str(args.cache)  # before Triton is imported
    cuda = args.device == "cuda"
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, str(ROOT))

    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def mark(what: str) -> None:
        marks.append((what, time.perf_counter() - t0))

    from sandbox._forkserver import _preimport

    _preimport()
    mark("the fork server's imports")
    import torch

    if cuda:
        if not torch.cuda.is_available():
            print("no CUDA GPU here: pass --device cpu for the interpreter", file=sys.stderr)
            return 2
        torch.cuda.init()
        torch.empty(1, device="cuda")
        mark("CUDA start")
    else:
        from sandbox import _interp

        _interp.install()
    dev = args.device

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    from kbench.problems import load
    from sandbox._child import _ALLOWED_ATEN, _watched_call
    from sandbox._provenance import Watch, own_triton_kernels

    spec = load(args.problem)[0]
    shapes = spec.shapes_for(dev)
    shape = shapes["main"] if "main" in shapes else next(iter(shapes.values()))
    xs = spec.make_inputs(shape, 1, dev)
    model_ref = spec.make_model(spec.make_init_inputs(shape, seed=1), 1, dev, shape=shape)
    sync()
    mark("inputs and the reference model")

    src = ROOT / "kbench" / "examples" / f"{args.problem}.py"
    modspec = importlib.util.spec_from_file_location("candidate", src)
    mod = importlib.util.module_from_spec(modspec)
    with spec.at_shape(shape):
        modspec.loader.exec_module(mod)
        init = spec.make_init_inputs(shape, seed=1)
        torch.manual_seed(1)
        model = mod.ModelNew(*init).to(dev)
    own = own_triton_kernels(mod, "candidate")
    mark("the example's import and model")

    def watch() -> Watch:
        return Watch("candidate", own, _ALLOWED_ATEN, (), profile=False, cuda=cuda)

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    out, ok = _watched_call(model, xs, watch(), "first")
    sync()
    prof.disable()
    first = time.perf_counter() - t
    mark("first watched call")
    t = time.perf_counter()
    out, ok2 = _watched_call(model, xs, watch(), "second")
    sync()
    second = time.perf_counter() - t
    mark("second watched call")
    with torch.no_grad():
        ref = model_ref(*xs)
    agree = bool(torch.allclose(out.float(), ref.float(), atol=1e-2, rtol=1e-2))

    print(f"problem {args.problem} on {dev}, shape {shape}, cache {args.cache} "
          f"({sum(1 for _ in args.cache.rglob('*'))} files)")
    prev = 0.0
    for what, at in marks:
        print(f"  {what:34s} {at - prev:8.3f} s")
        prev = at
    print(f"first call {first:.3f} s, second {second:.4f} s, watched ok {ok}/{ok2}, "
          f"output agrees with the reference: {agree}")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.top)
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
