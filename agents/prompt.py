"""Prompts: the rules the verifier enforces, the problem, the GPU, and the verifier's feedback.

Example:
    >>> msgs = build_messages(Task(problem, backend="triton", example=relu_text))  # doctest: +SKIP
    >>> [m["role"] for m in msgs]                                                  # doctest: +SKIP
    ['system', 'user']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agents.providers import Message
from agents.records import Attempt, Task

if TYPE_CHECKING:
    from sandbox.verdict import Verdict

__all__ = [
    "RULES",
    "system_prompt",
    "build_messages",
    "task_section",
    "attempt_feedback",
    "verdict_feedback",
    "summary_line",
    "trim",
    "evolve_messages",
    "verdict_line",
    "diagnose",
    "lesson",
]

_BACKEND = {
    "triton": (
        "Triton: kernels decorated with @triton.jit (import triton, import triton.language "
        "as tl), launched from ModelNew.forward. Winning kernels also run under "
        "torch.compile, whose Inductor passes a Python float argument as fp64 (eager Triton: "
        "fp32): cast such a parameter with .to(tl.float32) at the kernel's entry (or make it "
        "tl.constexpr) so it never promotes fp32 loop-carried values"
    ),
    "cuda": (
        "CUDA C++: kernels compiled with torch.utils.cpp_extension.load_inline (source held "
        "in Python strings of the file), launched from ModelNew.forward"
    ),
}

RULES = """\
The verifier rejects a candidate that breaks any of these rules:
1. ModelNew.forward computes with your own kernels: no torch compute ops on the data (no
   torch.matmul, @, F.conv2d, torch.relu, torch.softmax, .sum(), ...), no cuBLAS/cuDNN
   calls, no torch.compile, and never the reference Model. Allocating outputs
   (torch.empty, torch.empty_like) and reading shapes and strides are fine.
   Every kernel that runs must be one you wrote (kernels from other libraries are refused
   by name); what forward dispatches to PyTorch is traced on checked and on random timed
   calls.
2. No catch-all try/except around tensor code: no fallback paths (guarded optional imports
   are fine).
3. No streams, threads, processes or async work: everything runs on the current stream.
4. No results kept across calls: every forward recomputes its output from its inputs, which
   are fresh on every call (caching launch configs or settings is fine).
5. No file, network, subprocess or environment access (CUDA's load_inline build excepted).
6. forward must launch at least one kernel you wrote in the requested backend.
7. Any shape must work, not just the ones shown: odd sizes, sizes that are not a multiple of
   your block size, batch 1. Mask or bounds-check every load and store.
8. Return a new, plain torch.Tensor with the reference's shape, dtype and device: not an
   input, a view of one, or a tensor subclass. Do not compute in lower precision than the
   reference (accumulate in fp32 or better). Inputs are also drawn with both signs and
   other scales than the problem's own, and the reference's constant parameters (norm
   weights, zero biases) are redrawn and handed to ModelNew: use every parameter.
9. Never modify the inputs.
10. ModelNew.__init__ takes the same arguments as Model.__init__ and creates the same
    parameters in the same order (the verifier builds both after the same seed), e.g. keep
    the reference's nn.Linear and read its weight and bias in your kernel.
Timings are checked against the roofline: a time faster than this GPU's speed of light is
rejected as impossible."""

_FORMAT = """\
Reply with the complete candidate file in one ```python block: imports, kernels, and
`class ModelNew(nn.Module)`. Optionally add a module-level dict of tunable knobs, e.g.
`TUNE = {"BLOCK": [256, 512, 1024], "num_warps": [4, 8]}`, whose names are module globals
your launcher reads; the tuner will search it. Give each knob a literal list of int, float,
bool or str values, every combination of which must compile and stay correct; keep the
module-level default (e.g. `BLOCK = 512`) one of the listed values. Literal
`@triton.autotune(configs=[triton.Config({...}, num_warps=..., num_stages=...)])` configs are
searched the same way. Keep prose short: a reply cut off at the
token limit has no usable code."""


def system_prompt(backend: str) -> str:
    """The role and the rules, shared by every turn."""
    return (
        "You are an expert GPU kernel engineer. You replace PyTorch reference modules with "
        f"faster custom kernels written in {_BACKEND[backend]}. A strict verifier checks "
        "every candidate for correctness on seen and unseen shapes, then times it against "
        "PyTorch eager and torch.compile.\n\n" + RULES + "\n\n" + _FORMAT
    )


def build_messages(task: Task, previous: Sequence[Attempt] = ()) -> list[Message]:
    """System + user messages for ``task``; ``previous`` (oldest first) adds feedback.

    Every previous attempt gets one summary line; the last one the model answered gets its
    code and the verifier's full feedback.
    """
    user = task_section(task)
    answered = [a for a in previous if a.model_replied]
    if answered:
        last = answered[-1]
        lines = [summary_line(a) for a in previous]
        user += (
            "\n\n## Your previous attempts\n" + "\n".join(f"- {ln}" for ln in lines)
            + "\n\n" + attempt_feedback(last)
            + "\n\nFix every failure first; once correct, make it faster. Reply with the "
            "complete file."
        )
    return [{"role": "system", "content": system_prompt(task.backend)},
            {"role": "user", "content": user}]


def task_section(task: Task) -> str:
    """The problem, the GPU, the roofline floor and the example."""
    p = task.problem
    atol, rtol = p.tolerance
    parts = [
        f"## Problem {p.key}\nWrite ModelNew, a faster drop-in replacement for Model below, "
        f"in {task.backend.upper()}.\n\n```python\n{p.source.rstrip()}\n```",
        "## Shapes\n" + _shapes(p.shapes) + "\nIt is also checked on shapes you are not "
        "shown (batch 1, odd sizes).\n" + f"Outputs must match within atol={atol:g}, "
        f"rtol={rtol:g}, and a relative L2 error of at most {max(rtol, 1e-6):g}.",
        "## Target GPU\n" + _device(task.device),
    ]
    floors = {k: v for k, v in task.roofline_ms.items() if v is not None}
    if floors:
        parts.append(
            "## Speed of light\nThe roofline floor (the larger of FLOPs / matmul peak and "
            "bytes / bandwidth) on this GPU: "
            + ", ".join(f"{k} {_ms(v)}" for k, v in floors.items())
            + ". A kernel near it is as fast as this GPU allows."
        )
    if task.example.strip():
        parts.append(
            f"## Example of a correct {task.backend} candidate\n"
            f"```python\n{task.example.rstrip()}\n```"
        )
    return "\n\n".join(parts)


def attempt_feedback(attempt: Attempt) -> str:
    """The previous candidate and what the verifier said about it."""
    c = attempt.completion
    head = f"## Your last attempt (turn {attempt.turn})\n"
    if attempt.code is None:
        why = "no ```python block defining class ModelNew was found in your reply"
        if c.truncated:
            why += "; it was cut off at the token limit, so keep it shorter"
        return head + f"Not verified: {why}."
    body = head + f"```python\n{attempt.code.rstrip()}\n```\n\n"
    if attempt.verdict is None:
        return body + "It was not verified."
    cut = " (your reply was cut off at the token limit)" if c.truncated else ""
    return body + "### Verifier feedback" + cut + "\n" + verdict_feedback(attempt.verdict)


def verdict_feedback(verdict: Verdict) -> str:
    """Status, the reason (long logs trimmed), per-shape results and timings, SOL%."""
    lines = [f"Status: {verdict.status.value}"]
    if verdict.reason:
        lines.append("Reason:\n" + trim(verdict.reason))
    if not verdict.passed and verdict.log_tail and verdict.log_tail not in verdict.reason:
        lines.append("Log (tail):\n" + trim(verdict.log_tail, max_lines=20))
    unseen = 0
    shape_lines, timing_rows = [], []
    for s in verdict.shapes:
        if s.derived:  # shapes it was never shown stay unseen: name no sizes
            unseen += 1
            label = f"unseen shape {unseen}"
        else:
            label = f"{s.name} {_params(s.params)}"
        if s.passed:
            shape_lines.append(f"- {label}: correct")
        else:
            err = f" (max abs err {s.max_abs_err:.3g})" if s.max_abs_err is not None else ""
            shape_lines.append(f"- {label}: WRONG{err}: {trim(s.reason or 'mismatch', 6)}")
        if s.timing is not None:
            timing_rows.append(
                f"| {label} | {_ms(s.timing.median_ms)} | {_t(s.eager)} | {_t(s.compiled)} | "
                f"{_x(s.speedup_eager)} | {_x(s.speedup_compile)} | {_pct(s.sol_pct)} |"
            )
    if shape_lines:
        lines.append("Shapes:\n" + "\n".join(shape_lines))
    if timing_rows:
        lines.append(
            "Timing (median):\n| shape | yours | eager | torch.compile | vs eager | "
            "vs compile | SOL% |\n|---|---|---|---|---|---|---|\n" + "\n".join(timing_rows)
        )
    if verdict.passed:
        if verdict.timing_available:
            lines.append(
                f"Overall: {_x(verdict.speedup_eager)} vs eager, {_x(verdict.speedup_compile)} "
                f"vs torch.compile, {_pct(verdict.sol_pct)} of speed of light."
            )
        else:
            lines.append("Timing was not available on the verifying machine.")
    return "\n".join(lines)


def summary_line(attempt: Attempt) -> str:
    """One line per attempt, for the list of previous turns."""
    c, v = attempt.completion, attempt.verdict
    head = f"turn {attempt.turn}: "
    if not c.ok:
        return head + "no reply (provider error)"
    if attempt.code is None:
        return head + "no code found" + (" (reply cut off)" if c.truncated else "")
    if v is None:
        return head + "not verified"
    if v.passed:
        speed = f", {_x(v.speedup_eager)} vs eager" if v.speedup_eager is not None else ""
        return head + "correct" + speed
    first = (v.reason or "").strip().splitlines()[:1]
    return head + v.status.value + (f": {first[0][:160]}" if first else "")


def trim(text: str, max_lines: int = 40, width: int = 300) -> str:
    """At most ``max_lines`` lines: the head (where nvcc puts the first error) and the tail
    (where Python puts the exception), long lines cut."""
    lines = [ln if len(ln) <= width else ln[: width - 3] + "..." for ln in text.rstrip().splitlines()]
    if len(lines) <= max_lines:
        return "\n".join(lines)
    head = max_lines * 3 // 8
    tail = max_lines - head - 1
    return "\n".join([*lines[:head], f"... ({len(lines) - head - tail} lines omitted) ...",
                      *lines[-tail:]])


# -- evolve: mutation and crossover prompts -------------------------------------------------
def evolve_messages(task: Task, kind: str, parents: Sequence[Attempt] = (),
                    lessons: Sequence[str] = ()) -> list[Message]:
    """Messages for one evolve call: ``seed`` (a fresh candidate), ``mutate`` (improve one
    parent) or ``crossover`` (combine two). Each parent comes with its code, its verdict in
    one line and a one-line diagnosis; ``lessons`` are short notes on earlier failures
    (failures are never parents, only lessons)."""
    user = task_section(task)
    if kind == "seed":
        ask = "Write a correct, fast candidate. Reply with the complete file."
    elif kind == "mutate":
        (p,) = parents
        user += "\n\n## Parent candidate\n" + _parent(p)
        ask = ("Improve the parent: keep what makes it correct and make it faster (fuse work, "
               "cut memory traffic, choose better block sizes and launch parameters). Make one "
               "focused, real change, not a cosmetic one: a candidate that repeats an earlier "
               "one after removing comments and formatting is discarded unverified. Reply with "
               "the complete file.")
    elif kind == "crossover":
        a, b = parents
        user += ("\n\n## Parent A\n" + _parent(a) + "\n\n## Parent B\n" + _parent(b))
        ask = ("Combine the strengths of A and B into one candidate that is correct and faster "
               "than both (e.g. A's memory access pattern with B's launch configuration). Reply "
               "with the complete file.")
    else:
        raise ValueError(f"unknown evolve prompt kind {kind!r}")
    if lessons:
        user += ("\n\n## Lessons from failed candidates (do not repeat these mistakes)\n"
                 + "\n".join(f"- {x}" for x in lessons))
    user += "\n\n" + ask
    return [{"role": "system", "content": system_prompt(task.backend)},
            {"role": "user", "content": user}]


def verdict_line(verdict: Verdict) -> str:
    """Status, the reason's first line, the speedup and the gap to the roofline, on one line."""
    parts = [verdict.status.value]
    first = (verdict.reason or "").strip().splitlines()[:1]
    if first:
        parts.append(first[0][:160])
    if verdict.speedup_eager is not None:
        parts.append(f"{_x(verdict.speedup_eager)} vs eager")
    if verdict.speedup_compile is not None:
        parts.append(f"{_x(verdict.speedup_compile)} vs torch.compile")
    if verdict.sol_pct is not None and verdict.sol_pct > 0:
        parts.append(f"{_pct(verdict.sol_pct)} of speed of light "
                     f"({100 / verdict.sol_pct:.1f}x from the roofline)")
    elif verdict.passed and not verdict.timing_available:
        parts.append("not timed (no GPU)")
    return "; ".join(parts)


def diagnose(verdict: Verdict) -> str:
    """A one-line diagnosis of what to do next with a candidate: from SOL% and the speedup,
    and, where the verdict carries a profile (sandbox.profile), from where the device time
    went and what Nsight Compute says limits the main kernel."""
    if not verdict.passed:
        return f"{verdict.status.value}: fix this before anything else"
    head = _diagnose_speed(verdict)
    prof = getattr(verdict, "profile", None)
    if not prof:
        return head
    return "; ".join([head, *_profile_hints(prof)])


def _profile_hints(prof: Mapping[str, Any]) -> list[str]:
    """Short clauses from a verdict's profile: the kernel breakdown, the ncu line, and the
    advice they point to."""
    out = []
    kernels = [k for k in prof.get("kernels") or [] if isinstance(k, Mapping)]
    if kernels:
        parts = [f"{k.get('name', '?')}{'' if k.get('own') else ' (not yours)'} "
                 f"{100 * float(k.get('share') or 0):.0f}%" for k in kernels[:3]]
        out.append(f"device time ({float(prof.get('device_us') or 0):.0f} us, "
                   f"{int(prof.get('launches') or 0)} launches): " + ", ".join(parts))
        foreign = sum(float(k.get("share") or 0) for k in kernels if not k.get("own"))
        own = [k for k in kernels if k.get("own")]
        if foreign >= 0.2:
            out.append(f"{foreign:.0%} of device time is copies/fills outside your kernels: "
                       "drop the extra .contiguous()/zeros/clones or fuse them in")
        elif len(own) > 1:
            out.append(f"{len(own)} kernels of yours per call: fuse them to save launches "
                       "and round trips through memory")
    ncu = prof.get("ncu")
    if isinstance(ncu, Mapping) and not ncu.get("error"):  # "unavailable" helps no model
        line = str(ncu.get("diagnosis") or "")
        if line:
            out.append(f"ncu: {line}")
        limiter = ncu.get("limiter")
        if limiter == "memory-bound":
            out.append("cut bytes moved (fuse passes, narrower loads, reuse from SMEM/L2)")
        elif limiter == "compute-bound":
            out.append("cut instructions (tensor cores, cheaper math, less index arithmetic)")
        elif limiter == "latency-bound":
            out.append("expose more parallelism (more blocks or warps, more work in flight "
                       "per thread, fewer registers)")
    return out


def _diagnose_speed(verdict: Verdict) -> str:
    """The diagnosis from SOL% and the speedup alone."""
    sol, speed = verdict.sol_pct, verdict.speedup_eager
    if sol is not None and sol >= 80:
        return "near the speed of light: only small gains are left (launch overhead, tails)"
    if sol is not None and sol < 30:
        return ("far from the roofline: cut memory traffic (fuse passes, vectorise loads, "
                "avoid extra buffers) or raise occupancy")
    if speed is not None and speed < 1:
        return "slower than PyTorch eager: look for extra passes, small blocks or poor coalescing"
    if speed is None:
        return "correct; not timed here, so prefer fewer memory passes and fewer launches"
    return "correct and faster than eager: tune block sizes and fuse what is left"


def lesson(attempt: Attempt) -> str | None:
    """A short lesson from a failed attempt (None for a correct one)."""
    if attempt.rejected:
        return "a reply repeated an earlier candidate (same code after normalisation)"
    if not attempt.completion.ok:
        return None  # the provider failed: nothing the model did
    if attempt.code is None:
        return "a reply had no ```python block with class ModelNew" + (
            " (cut off at the token limit: keep it shorter)" if attempt.completion.truncated
            else "")
    v = attempt.verdict
    if v is None or v.passed:
        return None
    return verdict_line(v)


def _parent(a: Attempt) -> str:
    head = f"```python\n{(a.code or '').rstrip()}\n```"
    if a.verdict is None:
        return head + "\nNot verified."
    return head + f"\nVerdict: {verdict_line(a.verdict)}\nDiagnosis: {diagnose(a.verdict)}"


# -- formatting ---------------------------------------------------------------------------
def _device(d: Mapping[str, Any]) -> str:
    def get(k: str, unit: str = "") -> str:
        v = d.get(k)
        return "unknown" if v is None else f"{v:g}{unit}" if isinstance(v, float) else f"{v}{unit}"

    lines = [
        f"- name: {get('name')}",
        f"- SMs: {get('sms')}",
        f"- measured memory bandwidth: {get('bandwidth_gbs', ' GB/s')}",
        f"- measured matmul peak: {get('matmul_tflops', ' TFLOP/s')}",
    ]
    known = {"name", "sms", "bandwidth_gbs", "matmul_tflops"}
    lines += [f"- {k}: {v}" for k, v in d.items() if k not in known and v is not None]
    return "\n".join(lines)


def _shapes(shapes: Mapping[str, Mapping[str, Any]]) -> str:
    return "\n".join(f"- {name}: {_params(params)}" for name, params in shapes.items())


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.4g} ms"


def _t(t: Any) -> str:
    return "?" if t is None else _ms(t.median_ms)


def _x(v: float | None) -> str:
    return "?" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}%"
