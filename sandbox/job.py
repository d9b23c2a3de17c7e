"""Frozen records that fully describe one verification, so that any process can run it.

A :class:`Job` names the problem by path and content hash, carries the :class:`Candidate`
(source, kernel backend, knobs), the device, the :class:`Limits` and the policy switches.
It round-trips through JSON (``to_dict`` / ``from_dict``), and :func:`run_job` turns it into
a :class:`~sandbox.verdict.Verdict` with no access to the store or the LLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.errors import ProblemError
from sandbox.timing import TimingConfig

if TYPE_CHECKING:
    from sandbox.baselines import Cache
    from sandbox.verdict import Verdict

__all__ = ["Candidate", "Job", "Limits", "run_job"]


@dataclass(frozen=True)
class Limits:
    """Time limits (seconds) for one verification and its trial counts."""

    import_s: float = 300.0  # import + compile (load_inline builds can be slow)
    check_s: float = 300.0  # all correctness trials after import
    timing_s: float = 300.0  # the cap of the timing phase's hang limit (scaled below it)
    compile_allowance_s: float = 60.0  # hang limit of timing: this + reference-scaled time
    hang_factor: float = 20.0  # ... reference's time x most calls of the rule x this
    timed_sets: int = 100  # fresh timed input sets per shape (at least 16; one per call of a batch)
    trials: int = 3  # per declared shape (correctness only: timing has its own sets)
    derived_trials: int = 2
    max_derived: int = 3
    max_sol_pct: float = 125.0  # faster than this share of the roofline time is impossible
    timing: TimingConfig = field(default_factory=TimingConfig)
    profile_ncu: bool = False  # Nsight Compute's headline metrics too (sandbox.profile)
    # Memory caps of the child (sandbox.memcap): on a GPU, the caching allocator's share of
    # the device (None: no cap) and a per-process check of device memory after each phase;
    # on CPU runs, the address space in bytes (0: half this machine's RAM).
    gpu_memory_fraction: float | None = 0.9
    host_memory_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Limits:
        return cls(**{**d, "timing": TimingConfig(**d.get("timing", {}))})


Knobs = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Candidate:
    """One candidate kernel: its file's text, the kernel backend it is written for
    (``triton``, ``cuda``; ``""`` when not declared — the verdict's backend is always the one
    the static policy detects) and the knob values to run it with (names from its ``TUNE``).

    ``knobs`` may be given as a mapping; it is kept as sorted ``(name, value)`` pairs so the
    record stays hashable."""

    source: str
    backend: str = ""
    knobs: Knobs = ()

    def __post_init__(self) -> None:
        pairs = self.knobs.items() if isinstance(self.knobs, Mapping) else self.knobs
        object.__setattr__(self, "knobs", tuple(sorted((str(k), v) for k, v in pairs)))

    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "backend": self.backend, "knobs": self.knob_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(source=d["source"], backend=d.get("backend", ""), knobs=d.get("knobs", {}))


@dataclass(frozen=True)
class Job:
    """All a worker needs to verify one candidate.

    ``problem_hash`` is the problem file's content hash (``ProblemSpec.source_hash``): a
    worker that finds a different file at ``problem_path`` refuses the job. ``isolation``
    names the :mod:`sandbox.backends` Backend the candidate's child runs in.

    Example:
        >>> job = Job("p.py", "0123456789abcdef", Candidate("src", "triton", {"BLOCK": 64}))
        >>> Job.from_dict(job.to_dict()) == job
        True
    """

    problem_path: str
    problem_hash: str
    candidate: Candidate
    device: str | None = None
    timing: bool = True
    limits: Limits = field(default_factory=Limits)
    allow_libraries: tuple[str, ...] = ()
    static_policy: bool = True
    isolation: str = ""  # a backend name; "" is the default backend here

    def __post_init__(self) -> None:
        object.__setattr__(self, "problem_path", str(self.problem_path))
        object.__setattr__(self, "allow_libraries", tuple(self.allow_libraries))

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_path": self.problem_path, "problem_hash": self.problem_hash,
            "candidate": self.candidate.to_dict(), "device": self.device,
            "timing": self.timing, "limits": self.limits.to_dict(),
            "allow_libraries": list(self.allow_libraries),
            "static_policy": self.static_policy, "isolation": self.isolation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        return cls(
            problem_path=d["problem_path"], problem_hash=d["problem_hash"],
            candidate=Candidate.from_dict(d["candidate"]), device=d.get("device"),
            timing=bool(d.get("timing", True)), limits=Limits.from_dict(d.get("limits", {})),
            allow_libraries=tuple(d.get("allow_libraries", ())),
            static_policy=bool(d.get("static_policy", True)),
            isolation=d.get("isolation", ""),
        )


def run_job(job: Job, cache: Cache | None = None) -> Verdict:
    """Verify ``job``'s candidate against the problem file it names.

    Raises :class:`ProblemError` if the file is missing, broken, or not the one the job was
    made for (its content hash differs); faults of the candidate become the verdict."""
    from sandbox.backends import default_backend, get_backend
    from sandbox.problem import load_file
    from sandbox.verifier import verify

    spec = load_file(job.problem_path)
    if spec.source_hash != job.problem_hash:
        raise ProblemError(f"{job.problem_path}: content hash {spec.source_hash} differs from "
                           f"the job's {job.problem_hash} (the problem file changed)")
    return verify(spec, job.candidate.source, device=job.device, cache=cache,
                  timing=job.timing, knobs=job.candidate.knob_dict() or None, limits=job.limits,
                  allow_libraries=job.allow_libraries, static_policy=job.static_policy,
                  isolation=get_backend(job.isolation) if job.isolation else default_backend())
