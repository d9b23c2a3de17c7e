"""Load test: one ``kbench run`` over N candidates of every kind, killed with SIGKILL midway
and resumed, then every verdict accounted for (issue 12).

    python bench/load_test.py --candidates 200 [--device cuda] [--kill-after 60] \\
        [--cuda 8] [--store load.db] [--json load.json] [--logs DIR]

The candidates are scripted replies (``--model replay:FILE``, strategy ``oneshot`` with
``--samples``) for ``level1/relu`` and ``level1/softmax``, cycling through:

* ``honest_triton``: the shipped example with another combination of its ``TUNE`` knobs;
* ``honest_cuda``: the shipped ``load_inline`` example (on CPU: ``unsupported``);
* ``incorrect``: the Triton example computing the wrong thing (relu: a 0.5 floor; softmax:
  the exponential left unnormalised);
* ``crash``: ``forward`` raises after the kernels were written;
* ``oob``: the kernel stores 2^40 elements past its output (on a GPU an illegal address;
  on CPU the interpreter's process dies of SIGSEGV mid-protocol);
* ``cheat``: the output computed by the PyTorch op itself (refused at run time);
* ``hang`` (``--device cuda`` only, sample 1 of each problem): a Triton kernel that spins for
  minutes on the device, stopped by the hang limit.

Progress (verdicts stored so far) is printed every ``--every`` seconds; each run's own output
goes to ``run1.log`` and ``resume.log`` under ``--logs``. ``--cuda N`` caps the CUDA
candidates (each is a build of its own; an honest Triton one takes the place of the rest).

Each reply carries a unique tag comment, so none is a textual duplicate of another. The run
is SIGKILLed ``--kill-after`` seconds after its first verdict is stored (the problems'
baselines come first, minutes on a GPU) or once a third of the verdicts are stored, then
``kbench run --resume`` finishes it. Checks: every sample of every problem has
exactly one candidate with a verdict, no verdict is stored twice for a candidate, and every
kind ended as expected (honest ``correct``, the others anything but ``correct``). Prints a
table of kinds x statuses, each kind's verification wall times (median, largest, sum) and
the phases that took most of them, and the runs' wall times; writes JSON with ``--json``.
Exit 0 only if every check holds.
"""

from __future__ import annotations

import argparse
import collections
import importlib.resources
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBLEMS = ("level1/relu", "level1/softmax")
KINDS_CPU = ("honest_triton", "incorrect", "honest_cuda", "crash", "honest_triton", "cheat",
             "oob")
HANGS = 1  # per problem, on a GPU only: each holds a verification slot until its hang limit
HONEST = ("honest_triton", "honest_cuda")


def _example(problem: str, cuda: bool = False) -> str:
    name = f"examples/{problem}{'_cuda' if cuda else ''}.py"
    return importlib.resources.files("kbench").joinpath(name).read_text()


def _knob_variants(source: str) -> list[str]:
    from kbench.tuning import space

    try:
        sp = space(source)
    except Exception:  # noqa: BLE001 - no usable TUNE: the example as it is
        return [source]
    out = []
    for vals in itertools.product(*sp.values()):
        s = source
        for name, value in zip(sp, vals):
            s = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", s, count=1, flags=re.M)
        out.append(s)
    return out or [source]


def _subclass(source: str, body: str) -> str:
    """The example with ModelNew's forward replaced by ``body`` (indented, may call
    ``super().forward(*args)``)."""
    return (source + "\n\n_Right = ModelNew\n\n\nclass ModelNew(_Right):\n"
            "    def forward(self, *args):\n" + "".join(f"        {ln}\n" for ln in body.splitlines()))


_HANG = '''

@triton.jit
def _spin_kernel(flag_ptr, n_iter):
    i = 0
    acc = tl.load(flag_ptr)
    # billions of turns, each waiting on a volatile load (never cached, never folded away:
    # LLVM deletes a loop it can prove does nothing, as it did to the GPU tests' first hangs)
    while (i < n_iter) & (tl.load(flag_ptr, volatile=True) < 3.0e38):  # minutes on the device
        acc = acc * 1.0000001 + 1.0
        i += 1
    tl.store(flag_ptr, acc)


_Right = ModelNew


class ModelNew(_Right):
    def forward(self, *args):
        out = super().forward(*args)
        flag = torch.zeros(1, device=out.device, dtype=torch.float32)
        _spin_kernel[(1,)](flag, 2**31 - 1)
        return out + 0 * flag.sum()
'''


def reply(problem: str, kind: str, n: int) -> str:
    """The ``n``-th reply of ``kind`` for ``problem`` (source text, tagged)."""
    base = _example(problem)
    if kind == "honest_triton":
        variants = _knob_variants(base)
        src = variants[n % len(variants)]
    elif kind == "honest_cuda":
        src = _example(problem, cuda=True)
    elif kind == "incorrect":
        if problem == "level1/relu":
            src = base.replace("tl.where(x < 0, 0.0, x)", "tl.where(x < 0, 0.5, x)")
        else:
            src = base.replace("y = tl.exp(x - row_max) * inv_sum", "y = tl.exp(x - row_max)")
        assert src != base, f"no wrong variant made for {problem}"
    elif kind == "crash":
        src = _subclass(base, "super().forward(*args)\nraise RuntimeError('kernel launch failed')")
    elif kind == "oob":
        if problem == "level1/relu":
            src = base.replace("tl.store(y_ptr + offs,", "tl.store(y_ptr + offs + (1 << 40),")
        else:
            src = base.replace("tl.store(y_row + offs,", "tl.store(y_row + offs + (1 << 40),")
        assert src != base, f"no out-of-bounds variant made for {problem}"
    elif kind == "cheat":
        op = "torch.relu(args[0])" if problem == "level1/relu" else "torch.softmax(args[0], dim=-1)"
        src = _subclass(base, f"return {op}")
    elif kind == "hang":
        src = base + _HANG
    else:
        raise ValueError(kind)
    return f"# load-test {kind} {n}\n{src}"


def write_replay(path: Path, candidates: int, hang: bool,
                 cuda_max: int | None = None) -> dict[tuple[str, int], str]:
    """The replay file; returns the kind of each (problem, sample). Past ``cuda_max`` CUDA
    candidates, an honest Triton one takes a CUDA one's place (each CUDA candidate is a
    build of its own: 28 of 200 held a GPU run past its 600 s step on 2026-12-07)."""
    per = -(-candidates // len(PROBLEMS))
    kind_of: dict[tuple[str, int], str] = {}
    counts: collections.Counter[str] = collections.Counter()
    with path.open("w") as fh:
        for s in range(per):
            for p in PROBLEMS:
                if len(kind_of) >= candidates:
                    break
                kind = ("hang" if hang and s == 1 else
                        KINDS_CPU[(s + PROBLEMS.index(p)) % len(KINDS_CPU)])
                if kind == "honest_cuda" and cuda_max is not None and \
                        counts[kind] >= cuda_max:
                    kind = "honest_triton"
                text = f"```python\n{reply(p, kind, counts[kind])}\n```"
                counts[kind] += 1
                kind_of[(p, s)] = kind
                fh.write(json.dumps({"problem": p, "sample": s, "response": text}) + "\n")
    return kind_of


def _stored(store: str, name: str) -> dict[str, object]:
    from kbench.store import Store

    db = Store(store)
    run = db.get_run(name)
    out: dict[str, object] = {"status": run.status.value, "candidates": {}}
    for p in PROBLEMS:
        for c in db.candidates_for(run.id, p):
            out["candidates"][c.id] = (p, c.source, c.verdict.payload if c.verdict else None)  # type: ignore[index]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--kill-after", type=float, default=60.0,
                    help="SIGKILL the run this many seconds after its first verdict is stored "
                    "(or once a third are)")
    ap.add_argument("--store", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--name", default="load-test")
    ap.add_argument("--cuda", type=int, default=None, metavar="N",
                    help="at most N CUDA candidates (each is a build; default: a 7th of them)")
    ap.add_argument("--logs", default=None,
                    help="folder for both runs' output (default: the work folder)")
    ap.add_argument("--every", type=float, default=15.0,
                    help="seconds between progress lines")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbench-load-"))
    logs = Path(args.logs) if args.logs else work
    logs.mkdir(parents=True, exist_ok=True)
    store = args.store or str(work / "load.db")
    replay = work / "load.jsonl"
    kind_of = write_replay(replay, args.candidates, hang=args.device.startswith("cuda"),
                           cuda_max=args.cuda)
    kinds = collections.Counter(kind_of.values())
    print(f"{len(kind_of)} candidates: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
          + f"; output of the runs in {logs}", flush=True)
    samples = max(s for _, s in kind_of) + 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kbench.cli", "run", "--model", f"replay:{replay}",
           "--problems", ",".join(PROBLEMS), "--strategy", "oneshot", "--samples", str(samples),
           "--device", args.device, "--name", args.name, "--store", store]
    t0 = time.monotonic()

    def stored_now() -> int:
        if not Path(store).exists():
            return 0
        try:
            return sum(v is not None for _, _, v in _stored(store, args.name)["candidates"].values())  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the run is not created yet
            return 0

    def progress(what: str, n: int, last: list[float]) -> None:
        if time.monotonic() - last[0] >= args.every:
            last[0] = time.monotonic()
            print(f"{time.monotonic() - t0:7.1f} s  {what}: {n} of {len(kind_of)} verdicts "
                  "stored", flush=True)

    with (logs / "run1.log").open("w") as log1:
        first = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        killed_at, verdicts_at_kill, first_at = None, 0, None
        last = [t0]
        while first.poll() is None:
            # often enough to catch the run midway: on CPU 14 verdicts once came within 2 s
            time.sleep(0.25)
            n = stored_now()
            progress("first run", n, last)
            if n and first_at is None:
                first_at = time.monotonic()  # the baselines (minutes on a GPU) are done
            if (first_at is not None and time.monotonic() - first_at >= args.kill_after) \
                    or n >= len(kind_of) / 3:
                os.killpg(first.pid, signal.SIGKILL)  # the orchestrator and its children
                first.wait()
                killed_at, verdicts_at_kill = time.monotonic() - t0, n
                print(f"{killed_at:7.1f} s  SIGKILL with {n} verdicts stored; resuming",
                      flush=True)
                break
    t1 = time.monotonic()
    with (logs / "resume.log").open("w") as log2:
        resumed = subprocess.Popen([sys.executable, "-m", "kbench.cli", "run", "--resume",
                                    args.name, "--store", store], env=env, stdout=log2,
                                   stderr=subprocess.STDOUT)
        last = [t1]
        while resumed.poll() is None:
            time.sleep(1.0)
            progress("resumed run", stored_now(), last)
    t2 = time.monotonic()
    resume_tail = (logs / "resume.log").read_text(errors="replace").strip()[-300:]
    got = _stored(store, args.name)
    cands = got["candidates"]  # type: ignore[assignment]
    problems_ok: list[str] = []
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    seen: dict[tuple[str, str], int] = {}
    walls: dict[str, list[float]] = collections.defaultdict(list)  # verification wall s
    phases: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for cid, (p, source, v) in cands.items():  # type: ignore[union-attr]
        m = re.match(r"# load-test (\w+) (\d+)", source)
        if not m:
            problems_ok.append(f"candidate {cid}: no load-test tag")
            continue
        key = (p, f"{m.group(1)} {m.group(2)}")
        if key in seen:
            problems_ok.append(f"candidate {cid}: the reply {key} was stored twice "
                               f"(also #{seen[key]})")
        seen[key] = cid
        status = v["status"] if v else "no verdict"
        table[m.group(1)][status] += 1
        if v and v.get("wall_s"):
            walls[m.group(1)].append(float(v["wall_s"]))
            for ph, sec in (v.get("phases") or {}).items():
                phases[m.group(1)][ph] += float(sec)
        if v is None:
            problems_ok.append(f"candidate {cid} ({m.group(1)}): no verdict stored")
        elif (m.group(1) in HONEST) != (status == "correct") and not (
                m.group(1) == "honest_cuda" and status == "unsupported"):
            problems_ok.append(f"candidate {cid} ({m.group(1)}): {status}: "
                               f"{str(v.get('reason', ''))[:160]}")
    if len(seen) != len(kind_of):
        problems_ok.append(f"{len(seen)} of {len(kind_of)} replies stored")
    if got["status"] != "finished":
        problems_ok.append(f"the run ended {got['status']} (resume exit {resumed.returncode}: "
                           f"{resume_tail})")
    statuses = sorted({s for c in table.values() for s in c})
    print(f"{'kind':14s} " + " ".join(f"{s:>14s}" for s in statuses))
    for kind in sorted(table):
        print(f"{kind:14s} " + " ".join(f"{table[kind][s]:14d}" for s in statuses))
    # where the verifications' time went, per kind: the slot time each kind held
    print(f"{'kind':14s} {'verdicts':>8s} {'median s':>9s} {'max s':>8s} {'sum s':>8s}  "
          "largest phases (sum s)")
    wall_rows = {}
    for kind in sorted(walls):
        w = walls[kind]
        top = phases[kind].most_common(3)
        wall_rows[kind] = {"n": len(w), "median_s": statistics.median(w), "max_s": max(w),
                           "sum_s": sum(w), "phases_s": dict(phases[kind])}
        print(f"{kind:14s} {len(w):8d} {statistics.median(w):9.2f} {max(w):8.2f} {sum(w):8.1f}  "
              + ", ".join(f"{ph} {sec:.1f}" for ph, sec in top))
    print(f"candidates {len(kind_of)}, stored {len(seen)}; killed after "
          f"{killed_at if killed_at is None else round(killed_at, 1)} s with {verdicts_at_kill} "
          f"verdicts stored; resume took {t2 - t1:.1f} s; total {t2 - t0:.1f} s")
    for line in problems_ok:
        print("PROBLEM:", line)
    out = {"candidates": len(kind_of), "stored": len(seen), "device": args.device,
           "killed_after_s": killed_at, "verdicts_at_kill": verdicts_at_kill,
           "resume_s": t2 - t1, "total_s": t2 - t0, "run_status": got["status"],
           "table": {k: dict(v) for k, v in table.items()}, "wall": wall_rows,
           "problems": problems_ok}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if not problems_ok else 1


if __name__ == "__main__":
    sys.exit(main())
