"""Typed verdict records: what the verifier decided about one candidate, and why."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Status", "Timing", "ShapeResult", "Verdict"]


class Status(str, enum.Enum):
    """Outcome of verifying one candidate. Only ``CORRECT`` counts as a pass."""

    CORRECT = "correct"
    INCORRECT = "incorrect"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    REJECTED = "rejected"  # static policy, or an impossible / dishonest measurement
    UNSUPPORTED = "unsupported"  # cannot be verified on this machine (CUDA source, no GPU)

    @property
    def passed(self) -> bool:
        return self is Status.CORRECT


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated timed calls, in milliseconds per call.

    ``count`` is the number of samples; each sample timed ``calls_per_sample`` calls back
    to back (small kernels, see :mod:`sandbox.timing`). ``noisy``: the spread (IQR over
    median) exceeded the configured threshold, so speedups against it are less certain.
    ``launch_ms``: the host's launch cost per call that a device spin covered (timing
    protocol 4; 0 where none was). Records stored before these fields existed load with
    the defaults.
    """

    median_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    count: int
    rse: float  # relative standard error of the mean
    calls_per_sample: int = 1
    noisy: bool = False
    launch_ms: float = 0.0  # host launch cost per call covered by a device spin (0: none)

    @property
    def spread(self) -> float:
        """IQR over median: a spread that outliers do not move."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class ShapeResult:
    """Correctness (and, for timed shapes, speed) of the candidate on one shape."""

    name: str
    params: dict[str, Any]
    derived: bool  # True if kbench derived this shape; the candidate was never shown it
    trials: int
    passed: bool
    reason: str | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    rel_l2_err: float | None = None
    timing: Timing | None = None
    eager: Timing | None = None
    compiled: Timing | None = None
    speedup_eager: float | None = None
    speedup_compile: float | None = None
    roofline_ms: float | None = None
    sol_pct: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeResult:
        d = dict(d)
        for k in ("timing", "eager", "compiled"):
            if d.get(k) is not None:
                d[k] = Timing.from_dict(d[k])
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Verdict:
    """The verifier's decision on one candidate for one problem.

    ``speedup_*`` and ``sol_pct`` are geometric means (SOL%: arithmetic mean) over the timed
    shapes; they are ``None`` when timing was unavailable, never invented.
    """

    problem: str
    status: Status
    reason: str
    device: str
    backend: str
    shapes: tuple[ShapeResult, ...] = ()
    speedup_eager: float | None = None
    speedup_compile: float | None = None
    sol_pct: float | None = None
    timing_available: bool = False
    fingerprint: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent per phase
    log_tail: str = ""
    notes: tuple[str, ...] = ()  # checks skipped and why (a perturbation outside the domain)
    explain: dict[str, Any] = field(default_factory=dict)  # which checks ran, what each saw
    noisy: bool = False  # a candidate or baseline timing was noisy (see Timing.noisy)
    # Profiler feedback (sandbox.profile), correct candidates timed on a GPU only: the main
    # shape's kernel breakdown and, where run, Nsight Compute's record under "ncu".
    profile: dict[str, Any] | None = None
    # The matmul / cuDNN precision settings the candidate and its baselines ran under
    # (sandbox.precision); None in records stored before they were recorded.
    precision: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        d = dict(d)
        d.pop("passed", None)
        d["status"] = Status(d["status"])
        d["shapes"] = tuple(ShapeResult.from_dict(s) for s in d.get("shapes", ()))
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
