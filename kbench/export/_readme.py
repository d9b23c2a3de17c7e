"""The exported package's README: its ops, the speedups kbench measured and where."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["readme"]


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "not timed"


def readme(pkg: str, run: str, summaries: list[dict[str, Any]], skipped: list[str]) -> str:
    lines = [
        f"# {pkg}",
        "",
        f"Winning kernels of kbench run `{run}`, each registered as a torch custom op. "
        f"`import {pkg}` registers them; call `torch.ops.{pkg}.<name>(...)` with the inputs "
        "of the problem's `get_inputs()`.",
        "",
        "```bash",
        "pip install .            # no build step: kernels compile at their first call",
        f"pytest --pyargs {pkg}     # every op against its reference (CPU: TRITON_INTERPRET=1)",
        "python bench.py          # op vs reference on a CUDA GPU",
        "```",
        "",
        "## How an op runs",
        "",
        "- Inputs matching a verified shape (sizes and dtypes) run the kernel with that shape's "
        "tuned knobs (set as the kernel module's globals).",
        "- Other inputs run the embedded reference implementation, with a `RuntimeWarning` "
        "once per op: the kernel was never checked on them.",
        "- The op is a `torch.library.custom_op` with `register_fake` (the reference run under "
        "the fake mode), so it works inside `torch.compile(fullgraph=True)` as one opaque node. "
        "`torch.library.triton_op`/`wrap_triton` are not used: a generic exporter cannot find a "
        "single-launch wrapper in an arbitrary candidate, so Inductor does not trace into the "
        "Triton kernels.",
        "- Parameters (if any) are built after `torch.manual_seed(0)` like the reference's.",
        "- CUDA sources are built with `load_inline` at first call; without a CUDA toolkit "
        "the call fails with a message saying so.",
        "",
        "## Ops and the speedups kbench measured",
        "",
        "Speedups are the verifier's stored medians against eager PyTorch and against "
        "`torch.compile` on the device below; \"not timed\" means the run had no GPU "
        "(correctness checked under Triton's interpreter, timing never invented).",
        "",
        "| op | problem | candidate | backend | shape | x eager | x compile | tuned knobs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for name, sh in s["shapes"].items():
            knobs = json.dumps(sh["tuned"]) if sh["tuned"] else "defaults"
            lines.append(f"| `{s['op']}` | {s['problem']} | {s['candidate']} ({s['chosen_by']}) "
                         f"| {s['backend']} | {name} `{json.dumps(sh['params'])}` "
                         f"| {_x(sh['speedup_eager'])} | {_x(sh['speedup_compile'])} | {knobs} |")
    lines += ["", "## Environment the speedups were measured on", ""]
    for s in summaries:
        lines.append(f"- {s['problem']} on `{s['device']}`: `{json.dumps(s['fingerprint'])}`")
    if skipped:
        lines += ["", "## Not exported", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"
