"""Both halves of the verifier's score: honest production-style kernels accepted, attacks refused.

``tests/candidates/honest_styles`` holds honest Triton candidates for kbench's own problems,
written the way kernel libraries write them (autograd Functions with ``ctx`` attributes,
logging, guarded optional imports, version and device probes, ``lru_cache``d settings helpers,
autotune with pruning, heuristics, launch wrappers subclassing ``triton.KernelInterface`` /
``triton.runtime.Autotuner``, libdevice, bf16 with fp32 accumulation, int64 offsets,
multi-block fallbacks). Each docstring names its ``Problem:``, its ``Style:`` and
``Expected: correct``. Every one must pass the static policy and come back ``correct`` from
the verifier on CPU (Triton's interpreter); the score test prints the acceptance table next
to the attack corpus's (``tests/candidates/attacks``: refused by the policy, or caught at run
time on CPU; attacks only a GPU run can catch are counted apart).
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kbench.problems import load, load_file
from sandbox import Limits, Status, verify
from sandbox.policy import check_source

HERE = Path(__file__).parent / "candidates"
REPO = HERE.parent.parent
CORPUS = sorted((HERE / "honest_styles").glob("*.py"))
ATTACKS = sorted((HERE / "attacks").glob("*.py"))

# Honest files that fail only where Triton's CPU interpreter differs from the GPU (the gap is
# named); they must still pass the policy, and must not fail for any other reason.
INTERPRETER_GAPS: dict[str, str] = {}  # none left: sigmoid_persistent's range() loop variable
# is an int32 tensor under the interpreter too (sandbox/_interp.py, _kbench_range)


def _doc(path: Path) -> dict[str, str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    fields: dict[str, str] = {}
    key = None
    for line in doc.splitlines():
        m = re.match(r"^(Problem|Style|Expected|Attack):\s*(.*)$", line)
        if m:
            key = m.group(1)
            fields[key] = m.group(2).strip()
        elif key == "Style" and line.startswith("    "):
            fields[key] += " " + line.strip()
        else:
            key = None
    return fields


def _spec(problem: str):
    if problem.endswith(".py"):
        return load_file(REPO / problem)
    return load(problem)[0]


def _gpu_only(expected: str) -> bool:
    return ("GPU" in expected and "CPU" in expected) or "(GPU only)" in expected


# --------------------------------------------------------------------------------------------
# Verdicts, computed once (two at a time: each verification is its own child process)
# --------------------------------------------------------------------------------------------
def _honest_verdict(path: Path):
    return verify(_spec(_doc(path)["Problem"]), path.read_text(), device="cpu", timing=False)


def _attack_outcome(path: Path) -> tuple[str, str]:
    """(where it was caught: "policy" | "run time" | "gpu only" | "NOT CAUGHT", detail)."""
    source = path.read_text()
    policy = check_source(source)
    if not policy.ok:
        return "policy", ", ".join(sorted(policy.rules))
    expected = _doc(path).get("Expected", "")
    if _gpu_only(expected):
        return "gpu only", expected.split(":", 1)[-1].strip()[:60]
    v = verify(_spec(_doc(path)["Problem"]), source, device="cpu", timing=False,
               limits=Limits(trials=2, derived_trials=2))
    if v.status is Status.CORRECT:
        return "NOT CAUGHT", "correct"
    return "run time", v.status.value


@pytest.fixture(scope="module")
def honest_verdicts() -> dict[str, object]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((p.stem for p in CORPUS), pool.map(_honest_verdict, CORPUS), strict=True))


@pytest.fixture(scope="module")
def attack_outcomes() -> dict[str, tuple[str, str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((p.stem for p in ATTACKS), pool.map(_attack_outcome, ATTACKS),
                        strict=True))


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------
def test_corpus_is_documented() -> None:
    assert len(CORPUS) >= 30
    problems = set()
    for p in CORPUS:
        doc = _doc(p)
        assert doc.get("Problem") and doc.get("Style"), f"{p.name}: needs Problem: and Style:"
        assert doc.get("Expected") == "correct", p.name
        problems.add(doc["Problem"])
        assert _spec(doc["Problem"])
    assert len(problems) >= 25  # many problems, not one problem many times
    assert set(INTERPRETER_GAPS) <= {p.stem for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_honest_style_passes_policy(path: Path) -> None:
    result = check_source(path.read_text())
    assert result.ok, result.reason()
    assert result.backend == "triton"


def _gap_marks(path: Path) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.slow]
    if path.stem in INTERPRETER_GAPS:
        marks.append(pytest.mark.xfail(strict=False, reason=f"interpreter gap: "
                                       f"{INTERPRETER_GAPS[path.stem]}"))
    return marks


@pytest.mark.parametrize("path", [pytest.param(p, marks=_gap_marks(p)) for p in CORPUS],
                         ids=lambda p: p.stem)
def test_honest_style_is_correct_on_cpu(path: Path, honest_verdicts: dict[str, object]) -> None:
    v = honest_verdicts[path.stem]
    assert v.status is Status.CORRECT, f"{v.status.value}: {v.reason}"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# The score: both halves side by side
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_score_honest_accepted_and_attacks_rejected(
        honest_verdicts: dict[str, object], attack_outcomes: dict[str, tuple[str, str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    accepted = [s for s, v in honest_verdicts.items() if v.status is Status.CORRECT]  # type: ignore[attr-defined]
    gaps = [s for s, v in honest_verdicts.items()
            if v.status is not Status.CORRECT and s in INTERPRETER_GAPS]  # type: ignore[attr-defined]
    refused = {s: v for s, v in honest_verdicts.items() if s not in accepted and s not in gaps}
    where = {k: [s for s, (w, _) in attack_outcomes.items() if w == k]
             for k in ("policy", "run time", "gpu only", "NOT CAUGHT")}
    on_cpu = len(ATTACKS) - len(where["gpu only"])
    rows = [
        ("honest styles accepted (correct on CPU)", f"{len(accepted)} / {len(CORPUS)}",
         f"{len(gaps)} interpreter gap(s)" if gaps else ""),
        ("attacks rejected on CPU", f"{len(where['policy']) + len(where['run time'])} / {on_cpu}",
         f"{len(where['policy'])} by the policy, {len(where['run time'])} at run time"),
        ("attacks caught only on a GPU", f"{len(where['gpu only'])}",
         ", ".join(where["gpu only"])),
    ]
    with capsys.disabled():
        print("\n\nverifier score (CPU)")
        for name, count, note in rows:
            print(f"  {name:<42} {count:>9}   {note}")
        for s, v in refused.items():
            print(f"  REFUSED honest {s}: {v.status.value}: {(v.reason or '')[:300]}")  # type: ignore[attr-defined]
        for s in gaps:
            print(f"  gap {s}: {INTERPRETER_GAPS[s]}")
        for s in where["NOT CAUGHT"]:
            print(f"  NOT CAUGHT attack {s}")
        for s in where["run time"]:
            print(f"  run time  {s:<32} {attack_outcomes[s][1]}")
    assert not refused, sorted(refused)
    for s in gaps:  # a gap file fails in the interpreter, never in the policy
        assert honest_verdicts[s].status is not Status.REJECTED, s  # type: ignore[attr-defined]
    assert not where["NOT CAUGHT"], where["NOT CAUGHT"]
