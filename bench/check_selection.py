"""The final-selection phase on a GPU: two candidates that are the same kernel (one with an
unused global added) verified, stored in a run, then re-timed interleaved. Expected: "within
spread", the simpler one kept, with the measured margin and spread printed; then the
winner's time confirmed from outside its process (Nsight Compute, sandbox/confirm.py).

    python bench/check_selection.py [--store /tmp/sel.db] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from kbench.problems import load
from kbench.runflow import confirm_winners, final_selection, show_run
from kbench.store import Store
from sandbox import verify
from sandbox.fingerprint import fingerprint_hash


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(Path(tempfile.mkdtemp()) / "sel.db"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    spec = load("level1/relu")[0]
    a = importlib.resources.files("kbench").joinpath("examples/level1/relu.py").read_text()
    b = a + "\nUNUSED_KNOB = 1\n"
    db = Store(args.store)
    run = db.create_run("gpu-selection", model="manual", strategy="oneshot")
    pid = db.upsert_problem(spec.key, spec.suite, spec.source_hash, spec.source)
    for code in (a, b):
        v = verify(spec, code, device="cuda", cache=db, timing=True)
        print(f"{v.status.value}: {v.speedup_eager} x eager", flush=True)
        cid = db.add_candidate(pid, code, "triton", run_id=run, origin="llm")
        db.add_verdict(cid, v, fingerprint_hash(v.fingerprint))
    console = Console(width=160)
    final_selection(db, run, [spec], "cuda", console, rounds=args.rounds)
    confirm_winners(db, run, [spec], "cuda", console)  # the winner's time, checked by ncu
    show_run("gpu-selection", args.store, False, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
