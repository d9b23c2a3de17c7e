"""Where a warm verification's time goes, parent and child, function by function.

Verifies a shipped example once (baselines measured, builds cached), then again with both
processes under cProfile: this process around ``verify``, the child through
``bench/_profiled_child.py`` in the plain subprocess backend (the fork server's imports done
before its profile starts, as a forked child finds them). The parent's side waits for the
child's exit, which includes writing the profile. Prints the verdict's phases, then
each side's functions by cumulative time, kbench's own and torch's, Triton's and the CUDA
calls they make.

    python bench/verify_profile.py --problem level1/relu --device cuda --top 40
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Functions worth listing: not the import machinery, not module bodies (imports)
_SKIP = ("<frozen importlib", "<module>", "_find_and_load", "exec_module", "_call_with_frames")


def _listing(stats: pstats.Stats, top: int) -> str:
    entries = []
    for func, (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{func[0]}:{func[1]}({func[2]})"
        if any(s in name for s in _SKIP):
            continue
        entries.append((ct, tt, nc, name))
    entries.sort(reverse=True)
    lines = [f"{'cumulative s':>12} {'own s':>8} {'calls':>7}  function"]
    for ct, tt, nc, name in entries[:top]:
        short = name.replace(str(ROOT) + "/", "")
        for marker in ("site-packages/", "dist-packages/"):
            if marker in short:
                short = short.split(marker, 1)[1]
        lines.append(f"{ct:12.3f} {tt:8.3f} {nc:7d}  {short}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="level1/relu", help="a problem with a shipped example")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--top", type=int, default=40, help="functions to list per side")
    args = ap.parse_args()

    from kbench.problems import load
    from sandbox import MemoryCache, verify
    from sandbox._process import Child
    from sandbox.backends import SubprocessBackend

    wrapper = ROOT / "bench" / "_profiled_child.py"
    out = Path(tempfile.mkdtemp(prefix="kbench-verify-profile-")) / "child.prof"

    class Profiled(SubprocessBackend):
        """The subprocess backend, its child run under cProfile into ``out``."""

        def start(self, work: Path, device: str) -> Child:
            return Child(work, device, isolate_network=self.isolate_network,
                         prefix=[sys.executable, str(wrapper), str(out)])

    spec = load(args.problem)[0]
    source = (ROOT / "kbench" / "examples" / f"{args.problem}.py").read_text()
    cache = MemoryCache()
    t = time.perf_counter()
    first = verify(spec, source, device=args.device, cache=cache)
    print(f"first verification: {first.status.value} in {time.perf_counter() - t:.2f} s "
          "(baselines, builds)")
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    # the shipped example is trusted: no network namespace, so the wrapper runs Python itself
    v = verify(spec, source, device=args.device, cache=cache,
               isolation=Profiled(isolate_network=False))
    prof.disable()
    wall = time.perf_counter() - t
    print(f"profiled verification: {v.status.value} in {wall:.2f} s ({v.reason})")
    for k, sec in (v.phases or {}).items():
        print(f"  {k:32s} {sec:8.3f} s")
    print(f"\n== parent ({args.problem} on {args.device}) ==")
    print(_listing(pstats.Stats(prof), args.top))
    if out.exists():
        print("\n== child (the fork server's imports done before the profile started) ==")
        print(_listing(pstats.Stats(str(out)), args.top))
    else:
        print("\n== child: no profile was written ==")
    return 0 if v.passed else 1


if __name__ == "__main__":
    sys.exit(main())
