"""Job and Candidate records: JSON round-trip, and run_job refusing a changed problem file."""

from __future__ import annotations

import json
import textwrap

import pytest

from kbench.problems import load
from sandbox import Limits, Status
from sandbox.errors import ConfigError, ProblemError
from sandbox.job import Candidate, Job, run_job
from sandbox.timing import TimingConfig
from tests.fakes.relu import RELU as _HONEST


def _job(**kw) -> Job:
    spec = load("level1/relu")[0]
    base = dict(problem_path=str(spec.path), problem_hash=spec.source_hash,
                candidate=Candidate(textwrap.dedent(_HONEST), "triton"), device="cpu",
                limits=Limits(import_s=120, check_s=60, trials=1, derived_trials=1,
                              max_derived=1))
    return Job(**{**base, **kw})


def test_job_round_trips_through_json() -> None:
    job = Job("p/x.py", "0123456789abcdef",
              Candidate("src", "cuda", {"BLOCK": 128, "WARPS": 4}), device="cuda:1",
              timing=False, limits=Limits(check_s=7.5, timing=TimingConfig(max_reps=9)),
              allow_libraries=("cublas",), static_policy=False)
    back = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job
    assert back.limits.timing.max_reps == 9
    assert back.candidate.knob_dict() == {"BLOCK": 128, "WARPS": 4}
    assert hash(back) == hash(job)  # frozen and hashable, knobs included


def test_candidate_knobs_from_mapping_or_pairs_are_the_same() -> None:
    assert Candidate("s", knobs={"B": 1, "A": 2}) == Candidate("s", knobs=(("A", 2), ("B", 1)))


def test_run_job_refuses_a_changed_problem_file() -> None:
    with pytest.raises(ProblemError, match="content hash"):
        run_job(_job(problem_hash="0" * 16))


def test_run_job_refuses_an_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox backend"):
        run_job(_job(isolation="nonesuch"))


def test_run_job_verifies_the_candidate() -> None:
    v = run_job(_job())
    assert v.status is Status.CORRECT, v.reason
    assert v.problem == "relu"  # loaded by path: the file's stem names it
