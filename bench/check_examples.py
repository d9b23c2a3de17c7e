"""Verify every shipped example candidate (correctness only) on this machine's device.

    python bench/check_examples.py [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

from kbench.problems import load
from sandbox import default_device, verify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = args.device or default_device()
    root = Path(str(importlib.resources.files("kbench").joinpath("examples")))
    print("| example | device | status | shapes | wall s |\n|---|---|---|---:|---:|")
    for path in sorted(root.glob("*/*.py")):
        key = f"{path.parent.name}/{path.stem.removesuffix('_cuda')}"
        v = verify(load(key)[0], path.read_text(), device=device, timing=False)
        note = "" if v.passed else f" ({v.reason.splitlines()[0][:100]})"
        print(f"| {path.parent.name}/{path.name} | {device} | {v.status.value}{note} | "
              f"{len(v.shapes)} | {v.wall_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
