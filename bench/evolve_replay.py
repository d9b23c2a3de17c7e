"""A scripted evolve run over the eight shipped example problems: writes the JSONL that the
replay provider answers an evolve run with, so the whole loop — islands, lineage, duplicate
refusal, failures as lessons, re-timed winners — runs on a GPU without a model.

    python bench/evolve_replay.py --out evolve.jsonl [--islands 2] [--population 2] [--generations 3]
    kbench run --model replay:evolve.jsonl --strategy evolve --islands 2 --population 2 \\
        --generations 3 --problems <the eight> --name evolve-demo
    kbench runs show evolve-demo --lineage

Evolve numbers each call ``(generation x islands + island) x population + slot`` as its
sample and its generation as its turn; this script writes one reply per (problem, sample,
turn).
Replies are the example with its module-level knobs set to another combination of its own
``TUNE`` values (real variants, different speeds), plus on purpose: one exact repeat of an
earlier reply per problem (refused before verification as a duplicate) and one reply that
scales its kernels' output with a PyTorch op (refused at run time: compute outside the
candidate's kernels; a lesson, never a parent).
"""

from __future__ import annotations

import argparse
import importlib.resources
import itertools
import json
import re
import sys
from pathlib import Path

from kbench.tuning import space

EXAMPLES = ["level1/relu", "level1/softmax", "level1/matmul", "level2/gemm_bias_relu",
            "level3/mlp", "attention/gqa_causal_prefill", "kvcache/kv_int8_quant",
            "quant/w8a8_dynamic"]


def _with_knobs(source: str, knobs: dict[str, object]) -> str:
    for name, value in knobs.items():
        source = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", source, count=1, flags=re.M)
    return source


def _broken(source: str) -> str:
    """The example with its output scaled by a PyTorch op after its kernels ran (the first
    output of a tuple, e.g. kv_int8_quant's codes: a tuple times a float is a TypeError, a
    crash, not the refusal this reply is for)."""
    return source + (
        "\n\n_Right = ModelNew\n\n\nclass ModelNew(_Right):\n"
        "    def forward(self, *args):\n        out = super().forward(*args)\n"
        "        if isinstance(out, tuple):\n"
        "            return (out[0] * 2, *out[1:])\n"
        "        return out * 1.5\n")


def replies(problem: str, n: int) -> list[str]:
    """``n`` replies for ``problem``: variants over its TUNE space, one repeat, one broken."""
    source = importlib.resources.files("kbench").joinpath(f"examples/{problem}.py").read_text()
    try:
        sp = space(source)
    except Exception:  # noqa: BLE001 - no usable TUNE: variants by comment only
        sp = {}
    combos = [dict(zip(sp, vals)) for vals in itertools.product(*sp.values())] if sp else []
    out: list[str] = []
    for i in range(n):
        if i == 3:
            out.append(out[0])  # an exact repeat: refused as a duplicate
        elif i == 4:
            out.append(_broken(source))
        elif combos:
            out.append(_with_knobs(source, combos[(i * 7) % len(combos)]))
        else:
            out.append(source + f"\n# variant {i}\n")
    return [f"```python\n{code}```\n" for code in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--islands", type=int, default=2)
    ap.add_argument("--population", type=int, default=2)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--problems", default=",".join(EXAMPLES))
    args = ap.parse_args()
    slots = args.islands * args.population
    lines = 0
    with args.out.open("w") as f:
        for problem in args.problems.split(","):
            texts = replies(problem, slots * args.generations)
            for g in range(args.generations):
                for s in range(slots):
                    f.write(json.dumps({"problem": problem, "sample": g * slots + s, "turn": g,
                                        "response": texts[g * slots + s]}) + "\n")
                    lines += 1
    print(f"{lines} replies for {len(args.problems.split(','))} problems -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
