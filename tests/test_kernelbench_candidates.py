"""KernelBench's own problems against candidates written the way models write them.

Cheats that KernelBench's input distribution and fresh parameters let through — a copy kernel
for ReLU / LeakyReLU / ELU / HardTanh (``torch.rand`` inputs are all >= 0), norms that ignore
their affine parameters (ones and zeros until trained), a GEMM that drops its bias — must come
back ``incorrect`` naming the case that caught them. Honest Triton versions of the same
problems must be ``correct`` under the interpreter, with and without the trailing
``get_inputs`` / ``get_init_inputs`` and shape constants that KernelBench-style files keep.

KernelBench's files are outside test data (``../shared/kernelbench`` or
``$KBENCH_KERNELBENCH_DIR``); the module is skipped when they are absent.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from kbench.problems import load_file
from sandbox.policy import check_source
from sandbox.verdict import Status
from sandbox.verifier import verify

ROOT = Path(__file__).resolve().parents[1]
KB = Path(os.environ.get("KBENCH_KERNELBENCH_DIR", ROOT.parent / "shared" / "kernelbench"))
CANDS = ROOT / "tests" / "candidates" / "kernelbench"

pytestmark = pytest.mark.skipif(not (KB / "level1").is_dir(),
                                reason=f"KernelBench's problems are not at {KB}")


def _doc_field(path: Path, field: str) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = next(r for r in doc.splitlines() if r.startswith(f"{field}:"))
    return line.split(":", 1)[1].strip()


def _problem(path: Path) -> Path:
    return KB / _doc_field(path, "Problem").split()[0]


def _trailing(problem: Path) -> str:
    """The problem file's module-level constants, get_inputs and get_init_inputs, as models
    copy them to the end of a candidate."""
    src = problem.read_text()
    keep = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) or (isinstance(node, ast.FunctionDef) and node.name in
                                            ("get_inputs", "get_init_inputs")):
            keep.append(ast.get_source_segment(src, node))
    return "\n\n" + "\n\n".join(k for k in keep if k) + "\n"


HONEST = sorted(p for p in CANDS.glob("*.py") if _doc_field(p, "Expected") == "correct")
CHEATS = sorted(p for p in CANDS.glob("*.py") if _doc_field(p, "Expected") != "correct")


def test_corpus_covers_the_issue():
    names = {p.stem for p in CHEATS}
    assert {"relu_copy", "leaky_relu_copy", "elu_copy", "hardtanh_copy", "layernorm_no_affine",
            "groupnorm_no_affine", "batchnorm_no_affine",
            "gemm_multiply_leaky_relu_no_bias"} <= names
    assert {p.stem for p in HONEST} >= {n.replace("_copy", "").replace("_no_affine", "")
                                        .replace("_no_bias", "") for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("trailing", [False, True], ids=["plain", "trailing_get_inputs"])
@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_kernelbench_candidate_is_correct(path: Path, trailing: bool):
    source = path.read_text() + (_trailing(_problem(path)) if trailing else "")
    v = verify(load_file(_problem(path)), source, device="cpu", timing=False)
    if v.backend == "cuda":  # checked on the GPU machine (bench/kernelbench_verdicts.py)
        assert v.status is Status.UNSUPPORTED and "CUDA GPU" in v.reason
        return
    assert v.status is Status.CORRECT, v.reason


@pytest.mark.slow
@pytest.mark.parametrize("path", CHEATS, ids=lambda p: p.stem)
def test_kernelbench_cheat_is_incorrect_and_the_case_is_named(path: Path):
    source = path.read_text() + _trailing(_problem(path))
    v = verify(load_file(_problem(path)), source, device="cpu", timing=False)
    assert v.status is Status.INCORRECT, v.reason
    expected = _doc_field(path, "Expected")
    if "perturbed-input" in expected:
        assert "inputs redrawn with both signs" in v.reason, v.reason
    elif "redrawn-parameter" in expected:
        assert "+params" in v.reason and "parameters and buffers redrawn" in v.reason, v.reason
    failed = [s for s in v.shapes if not s.passed]
    assert failed and all(s.reason for s in failed)


def test_a_candidate_that_calls_its_own_get_inputs_is_rejected():
    honest = (CANDS / "relu.py").read_text() + _trailing(KB / "level1" / "19_ReLU.py")
    assert check_source(honest).ok
    calls = honest.replace("x = x.contiguous()", "x = get_inputs()[0]")
    r = check_source(calls)
    assert not r.ok and "get_inputs" in r.reason(), r.reason()


def test_trailing_functions_still_have_their_import_time_code_checked():
    honest = (CANDS / "relu.py").read_text()
    sneaky = honest + "\n\nimport os\n\n\ndef get_inputs(x=os.getcwd()):\n    return []\n"
    r = check_source(sneaky)
    assert not r.ok and "forbidden-import" in r.rules


def test_the_child_disarms_trailing_harness_functions():
    import types

    from sandbox._child import _disarm_harness_functions

    mod = types.ModuleType("cand")
    mod.get_inputs = lambda: [1]
    _disarm_harness_functions(mod)
    with pytest.raises(RuntimeError, match="called its own get_inputs"):
        mod.get_inputs()


@pytest.mark.parametrize("name", ["zero_out_kernel", "result_reuse_kernel"])
def test_kernelbench_adversarial_extension_without_a_kernel_is_refused(name: str):
    source = (KB / "adversarial" / f"{name}.py").read_text()
    r = check_source(source)
    assert not r.ok
    assert r.rules == {"no-kernel"}, r.reason()  # the real reason, not the trailing get_inputs


def test_kernelbench_adversarial_stream_kernel_is_refused_for_its_vendor_calls():
    r = check_source((KB / "adversarial" / "non_default_stream_kernel.py").read_text())
    assert not r.ok and "reference-call" not in r.rules
    assert {"cuda-vendor", "cuda-unsafe"} <= r.rules
