"""The frozen records that pass between the runner, the strategies and the prompt builder.

* :class:`Task`: everything fixed about one problem's prompts (problem, backend, GPU facts,
  roofline floor, an example candidate).
* :class:`Request`: one call a strategy asks for (messages, how many samples, lineage).
* :class:`Attempt`: one sample's outcome: the completion, the code found in it and the
  verifier's verdict. A problem's *history* is its attempts in the order they were made;
  an attempt's index in it is its id (``Request.parents`` refers to those ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.providers import CallContext, Completion, Message

if TYPE_CHECKING:
    from sandbox.problem import ProblemSpec
    from sandbox.verdict import Verdict

__all__ = ["BACKENDS", "Task", "Request", "Attempt", "History"]

BACKENDS = ("triton", "cuda")


@dataclass(frozen=True, eq=False)
class Task:
    """What every prompt for one problem shares.

    ``device`` holds the GPU's facts: ``name``, ``sms``, ``bandwidth_gbs`` (measured),
    ``matmul_tflops`` (measured); absent ones are shown as unknown. ``roofline_ms`` maps a
    shape name to its speed-of-light floor in ms on that GPU, where known. ``example`` is
    the text of a correct candidate in ``backend`` (e.g. kbench/examples/level1/relu.py).
    """

    problem: ProblemSpec
    backend: str = "triton"
    device: Mapping[str, Any] = field(default_factory=dict)
    example: str = ""
    roofline_ms: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass(frozen=True, eq=False)
class Request:
    """One provider call: ``n`` samples, the first of which is sample ``sample``."""

    messages: tuple[Message, ...]
    n: int = 1
    sample: int = 0
    turn: int = 0
    parents: tuple[int, ...] = ()  # history ids of the attempts this request builds on
    # a strategy's own bookkeeping, stored with the attempt and given back on resume
    # (evolve: island, generation, slot, kind); JSON-safe values only
    lineage: Mapping[str, Any] = field(default_factory=dict)

    def context(self, task: Task) -> CallContext:
        p = task.problem
        return CallContext(problem=p.key, suite=p.suite, name=p.name, sample=self.sample,
                           turn=self.turn, backend=task.backend)


@dataclass(frozen=True, eq=False)
class Attempt:
    """One sample: its completion, the code extracted (``None``: no usable code) and the
    verdict (``None`` when there was nothing to verify)."""

    sample: int
    turn: int
    completion: Completion
    code: str | None
    verdict: Verdict | None = None
    parents: tuple[int, ...] = ()
    # the request's lineage, plus ``rejected`` (why it was not verified, e.g. a duplicate)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    # the store's id of this candidate, where a run stored it: how reports and reasons name it
    candidate_id: int | None = None

    def label(self, index: int) -> str:
        """How a message names this attempt: its store id (``#42``, as reports show it),
        else its place in the history (``attempt 3``)."""
        return f"#{self.candidate_id}" if self.candidate_id is not None else f"attempt {index}"

    @property
    def rejected(self) -> str | None:
        """Why this candidate was never verified (a strategy's screen refused it), or None."""
        return self.lineage.get("rejected")

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed

    @property
    def fitness(self) -> float:
        """fast_p's view of this attempt: 0 if incorrect, else its speedup over eager
        (a correct attempt without timing ranks just above every incorrect one)."""
        if not self.passed:
            return 0.0
        speedup = self.verdict.speedup_eager if self.verdict else None
        return speedup if speedup is not None else 1e-3

    @property
    def model_replied(self) -> bool:
        """False when the call itself failed (provider error): nothing to give feedback on."""
        return self.completion.ok


History = Sequence[Attempt]
