"""Both halves of the verifier's score on one device: honest library-style candidates accepted,
attacks refused. The GPU run of what ``tests/test_honest_styles.py`` checks on CPU.

    python bench/acceptance.py --device cuda [--markdown acceptance.md] [--json out.json]

Honest files: ``tests/candidates/honest_styles`` (each must be ``correct``). Attacks:
``tests/candidates/attacks`` (each must be anything but ``correct``; where it was caught —
the static policy or a run-time check — is reported). Honest files are checked for
correctness only (the verdicts, not the speed, are what this measures); attacks on a GPU are
timed too, since some of them game only the timed calls.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kbench.problems import load, load_file
from sandbox import MemoryCache, Status, verify

ROOT = Path(__file__).resolve().parents[1]
CANDS = ROOT / "tests" / "candidates"


def _problem(path: Path):  # type: ignore[no-untyped-def]
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = next((r for r in doc.splitlines() if r.startswith("Problem:")), "")
    ref = line.split(":", 1)[1].strip().split()[0] if line else "level1/relu"
    if ref.endswith(".py"):
        return load_file(ROOT / ref)
    return load(ref)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--jobs", type=int, default=1, help="verdicts run at once")
    ap.add_argument("-k", default="", help="only files whose name contains one of these "
                    "(comma-separated)")
    args = ap.parse_args()
    jobs = [(group, want, path)
            for group, want in (("honest_styles", True), ("attacks", False))
            for path in sorted((CANDS / group).glob("*.py"))
            if not args.k or any(k in path.stem for k in args.k.split(","))]
    cache = MemoryCache()  # baselines measured once per problem, shared by the attacks

    def one(job):  # type: ignore[no-untyped-def]
        group, want_correct, path = job
        t0 = time.monotonic()
        try:
            # Attacks on a GPU are also timed: some game only the timed calls (their outputs
            # are re-checked, their times held against the roofline).
            timed = not want_correct and args.device.startswith("cuda")
            v = verify(_problem(path), path.read_text(), device=args.device, timing=timed,
                       cache=cache)
            status, reason = v.status.value, v.reason
            caught = ("policy" if v.status is Status.REJECTED and reason.startswith("[")
                      else "run time")
        except Exception as e:  # noqa: BLE001 - a harness fault is a row, not a crash
            status, reason, caught = "error", f"{type(e).__name__}: {e}", "-"
        ok = (status == "correct") if want_correct else status not in ("correct", "error")
        r = {"group": group, "file": path.stem, "status": status, "ok": ok,
             "caught": caught if not want_correct else "",
             "reason": reason.splitlines()[0][:160] if reason else "",
             "wall_s": round(time.monotonic() - t0, 1)}
        print(f"{'ok ' if ok else 'BAD'} {group:13s} {path.stem:34s} {status:13s} "
              f"{r['caught']:8s} {r['wall_s']:6.1f}s {r['reason'][:90]!r}", flush=True)
        return r

    # Each verdict runs in its own child process; --jobs N runs N of them at once (correctness
    # only, so sharing the device changes no verdict).
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, jobs))
    honest = [r for r in rows if r["group"] == "honest_styles"]
    attacks = [r for r in rows if r["group"] == "attacks"]
    table = "\n".join([
        f"| half | result | on {args.device} |", "|---|---:|---|",
        f"| honest styles accepted | {sum(r['ok'] for r in honest)} / {len(honest)} | "
        + ", ".join(f"{r['file']} ({r['status']})" for r in honest if not r["ok"]) + " |",
        f"| attacks refused | {sum(r['ok'] for r in attacks)} / {len(attacks)} | "
        f"{sum(r['caught'] == 'policy' for r in attacks if r['ok'])} by the policy, "
        f"{sum(r['caught'] == 'run time' for r in attacks if r['ok'])} at run time; "
        + ", ".join(f"NOT CAUGHT {r['file']}" for r in attacks if not r["ok"]) + " |",
    ])
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
