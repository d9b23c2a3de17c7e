"""KernelBench's own adversarial kernels and kbench's KernelBench cheats and honest candidates,
each through ``kbench eval`` as a user would run it; prints a table of expected vs actual.

    python bench/kernelbench_verdicts.py --kernelbench ../shared/kernelbench [--device cuda]
        [--out verdicts.json] [--markdown verdicts.md]

Every row is one ``kbench eval --json`` process (one shared store, so each problem's eager
and compile baselines are measured once). A row holds when a ``correct`` expectation got
``correct``, and a cheat got anything else for the reason its file names.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDS = ROOT / "tests" / "candidates" / "kernelbench"

# KernelBench's adversarial kernels, all against its square matmul: (file, accepted statuses,
# words the reason must contain).
ADVERSARIAL = [
    ("zero_out_kernel.py", {"rejected", "incorrect"}, "no __global__ kernel"),
    ("result_reuse_kernel.py", {"rejected", "incorrect"}, "no __global__ kernel"),
    ("non_default_stream_kernel.py", {"rejected"}, "cublas"),
]


def _doc(path: Path, field: str) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return next(r for r in doc.splitlines() if r.startswith(f"{field}:")).split(":", 1)[1].strip()


def _trailing(problem: Path) -> str:
    src = problem.read_text()
    keep = [ast.get_source_segment(src, n) for n in ast.parse(src).body
            if isinstance(n, ast.Assign) or (isinstance(n, ast.FunctionDef)
                                             and n.name in ("get_inputs", "get_init_inputs"))]
    return "\n\n" + "\n\n".join(k for k in keep if k) + "\n"


def rows(kb: Path) -> list[dict]:
    out = []
    mm = kb / "level1" / "1_Square_matrix_multiplication_.py"
    for name, ok, why in ADVERSARIAL:
        out.append({"candidate": f"adversarial/{name}", "path": kb / "adversarial" / name,
                    "problem": mm, "expect": ok, "why": why})
    for path in sorted(CANDS.glob("*.py")):
        expected = _doc(path, "Expected")
        problem = kb / _doc(path, "Problem").split()[0]
        honest = expected == "correct"
        why = ("inputs redrawn with both signs" if "perturbed-input" in expected else
               "parameters and buffers redrawn" if "redrawn-parameter" in expected else "")
        out.append({"candidate": path.name, "path": path, "problem": problem,
                    "expect": {"correct"} if honest else {"incorrect"}, "why": why,
                    "trailing": True})
    return out


def run_row(row: dict, device: str, store: str, work: Path, timing: bool = True) -> dict:
    src = Path(row["path"]).read_text()
    if row.get("trailing"):
        src += _trailing(Path(row["problem"]))
    cand = work / Path(row["candidate"]).name
    cand.write_text(src)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "kbench.cli", "eval", "--problem", str(row["problem"]),
                        "--candidate", str(cand), "--device", device, "--json", "--store", store,
                        *([] if timing else ["--no-timing"])],
                       capture_output=True, text=True, cwd=work)
    wall = time.monotonic() - t0
    try:
        v = json.loads(p.stdout)
    except json.JSONDecodeError:
        v = {"status": "error", "reason": (p.stderr or p.stdout)[-500:]}
    status = v.get("status", "error")
    reason = str(v.get("reason") or v.get("error") or "")
    holds = status in row["expect"] and row["why"].lower() in reason.lower()
    return {"candidate": row["candidate"], "problem": Path(row["problem"]).name,
            "expected": "/".join(sorted(row["expect"])), "status": status,
            "holds": holds, "reason": reason, "speedup_eager": v.get("speedup_eager"),
            "speedup_compile": v.get("speedup_compile"), "wall_s": round(wall, 1),
            "notes": v.get("notes", [])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernelbench", type=Path,
                    default=Path(os.environ.get("KBENCH_KERNELBENCH_DIR",
                                                ROOT.parent / "shared" / "kernelbench")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("-k", default="", help="only candidates whose name contains one of these "
                    "comma-separated words")
    ap.add_argument("--no-timing", action="store_true", help="correctness only (kbench eval "
                    "--no-timing): no baselines")
    args = ap.parse_args()
    args.kernelbench = args.kernelbench.resolve()
    if not (args.kernelbench / "level1").is_dir():
        print(f"error: no KernelBench checkout at {args.kernelbench}; pass --kernelbench DIR")
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = str(work / "kbench.db")
        for row in rows(args.kernelbench):
            if args.k and not any(w and w in row["candidate"] for w in args.k.split(",")):
                continue
            r = run_row(row, args.device, store, work, not args.no_timing)
            results.append(r)
            sp = f"{r['speedup_eager']:.2f}x" if r["speedup_eager"] else "-"
            print(f"{'ok ' if r['holds'] else 'BAD'} {r['candidate']:42s} {r['status']:13s} "
                  f"{sp:>7s} {r['wall_s']:6.1f}s  {r['reason'][:110]!r}", flush=True)
    lines = ["| candidate | problem | expected | verdict | × eager | reason (start) |",
             "|---|---|---|---|---:|---|"]
    for r in results:
        sp = f"{r['speedup_eager']:.2f}" if r["speedup_eager"] else "–"
        reason = r["reason"].splitlines()[0][:120].replace("|", "\\|") if r["reason"] else ""
        lines.append(f"| {r['candidate']} | {r['problem']} | {r['expected']} | "
                     f"{r['status']}{'' if r['holds'] else ' (UNEXPECTED)'} | {sp} | {reason} |")
    table = "\n".join(lines)
    print(table)
    held = sum(r["holds"] for r in results)
    print(f"\n{held}/{len(results)} rows as expected")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0 if held == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
