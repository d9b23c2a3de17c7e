"""The exported package's README: its ops, the speedups kbench measured and where."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["readme"]


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "not timed"


def _registered(s: dict[str, Any]) -> str:
    how = s.get("registration", "custom_op")
    if s.get("takes_state"):
        how += " (takes `state`)"
    note = s.get("registration_note")
    return f"{how}: {note}".replace("|", "\\|") if note else how


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
        "python bench.py          # op vs reference on a CUDA GPU: device time timed as the",
        "                         # verifier timed it (L2 flushed, launch cost hidden), each",
        "                         # speedup judged against the stored one within both runs'",
        "                         # measured spread; and host time per call",
        "```",
        "",
        "## How an op runs",
        "",
        "- Inputs matching a verified shape (sizes and dtypes) run the kernel with that shape's "
        "tuned knobs (set as the kernel module's globals).",
        "- Other inputs run the embedded reference implementation, with a `RuntimeWarning` "
        "once per op: the kernel was never checked on them.",
        "- Several verified shapes may share input sizes but not constructor inputs (two "
        "hidden sizes of one MLP): the first serves such inputs, or, given `state`, the one "
        "whose parameters it matches. Inside `torch.compile` (also with `dynamic=True`) each "
        "input shape is specialized, so each compiles with its own verified model and knobs.",
        "- A Triton kernel is a `torch.library.triton_op`: the kernel module's launch sites "
        "`K[grid](...)` were rewritten to `_kbench_wrap_triton(K)[grid](...)` "
        "(`torch.library.wrap_triton`), so inside `torch.compile` the op's body is traced and "
        "Inductor sees (and compiles) the Triton kernels themselves. Where the reference holds "
        "parameters or buffers, the op takes the kernel model's as its last argument: "
        f"`torch.ops.{pkg}.<name>(*inputs, {pkg}.<name>.state(*inputs))` (compute `state` "
        "outside the compiled function; real tensors captured inside an op cannot enter a "
        "trace). A Triton candidate the exporter cannot vouch for is a custom op instead; the "
        "table's last column says why.",
        "- A CUDA kernel is a `torch.library.custom_op` with `register_fake` (the reference "
        "run under the fake mode): inside `torch.compile(fullgraph=True)` it is one opaque node.",
        "- Under `TRITON_INTERPRET=1` on CPU a triton op runs eagerly but cannot be compiled: "
        "`@triton.jit` then makes interpreted functions, which `wrap_triton` leaves as they "
        "are and which cannot take a trace's fake tensors. The package's tests check the trace "
        "on CPU in a child process without the interpreter (nothing runs), and compile and "
        "run every op with Inductor on a GPU. bf16 cases are not run under the interpreter "
        "(it computes bf16 on raw bit patterns, triton-lang/triton#11584).",
        "- The package's tests judge each op as kbench's verifier judged it: by the "
        "problem's own output check where it has one (`KBENCH[\"check\"]` in the embedded "
        "reference, e.g. int8 codes allowed one step off at rounding ties; "
        f"`{pkg}._runtime.assert_matches`), else by the problem's `atol`/`rtol`.",
        "- Parameters (if any) are built after `torch.manual_seed(0)` like the reference's.",
        "- CUDA sources are built with `load_inline` at their first call on CUDA tensors "
        f"(`{pkg}._runtime.load_kernel(spec)` builds one ahead); where torch has no CUDA, no GPU "
        "is visible or no CUDA toolkit is found, that raises one `RuntimeError` naming what "
        "is missing, and a call on CPU tensors runs the reference with one warning saying so.",
        "",
        "## Ops and the speedups kbench measured",
        "",
        "Speedups are the verifier's stored medians against eager PyTorch and against "
        "`torch.compile` on the device below; \"not timed\" means the run had no GPU "
        "(correctness checked under Triton's interpreter, timing never invented).",
        "",
        "| op | problem | candidate | backend | shape | x eager | x compile | tuned knobs "
        "| registered as |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for name, sh in s["shapes"].items():
            knobs = json.dumps(sh["tuned"]) if sh["tuned"] else "defaults"
            lines.append(f"| `{s['op']}` | {s['problem']} | {s['candidate']} ({s['chosen_by']}) "
                         f"| {s['backend']} | {name} `{json.dumps(sh['params'])}` "
                         f"| {_x(sh['speedup_eager'])} | {_x(sh['speedup_compile'])} | {knobs} "
                         f"| {_registered(s)} |")
    lines += ["", "## Were the times confirmed?", "",
              "kbench confirms a winner's time from outside the process that ran it: Nsight "
              "Compute's kernel durations against the CUDA events the verifier's child "
              "reported (`kbench run` does this after its final selection, on a GPU).", ""]
    for s in summaries:
        flag = " **(disagreement)**" if s.get("timing_agrees") is False else ""
        lines.append(f"- {s['problem']}: {s.get('timing', 'not confirmed')}{flag}")
    lines += ["", "## Environment the speedups were measured on", ""]
    for s in summaries:
        lines.append(f"- {s['problem']} on `{s['device']}`: `{json.dumps(s['fingerprint'])}`")
    if skipped:
        lines += ["", "## Not exported", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"
