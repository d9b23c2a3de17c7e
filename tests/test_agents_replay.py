"""replay:PATH: KernelBench run folders, kbench JSONL, and folders of candidate files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.extract import extract_code
from agents.providers import CallContext, ReplayProvider, make_provider
from kbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
KERNEL = "import torch\n\nclass ModelNew(torch.nn.Module):\n    pass  # {tag}\n"


def ask(p, problem: str, n: int = 1, sample: int = 0, turn: int = 0, backend: str = "triton"):
    suite, _, name = problem.rpartition("/")
    ctx = CallContext(problem, suite=suite, name=name, sample=sample, turn=turn, backend=backend)
    return p.complete_sync([], max_tokens=1, temperature=0.0, n=n, context=ctx)


@pytest.fixture
def kb_run(tmp_path: Path) -> Path:
    for level, number, sample in [(1, 19, 0), (1, 19, 1), (2, 19, 0), (1, 3, 0)]:
        f = tmp_path / f"level_{level}_problem_{number}_sample_{sample}_kernel.py"
        f.write_text(KERNEL.format(tag=f"L{level} P{number} S{sample}"))
    (tmp_path / "eval_results.json").write_text("{}")
    return tmp_path


def test_kernelbench_folder_matched_by_level_and_number(kb_run: Path) -> None:
    p = make_provider(f"replay:{kb_run}")
    assert isinstance(p, ReplayProvider) and p.kind == "kernelbench"
    a, b = ask(p, "level1/19_ReLU", n=2)
    assert "L1 P19 S0" in a.text and "L1 P19 S1" in b.text
    assert a.cost_usd == 0.0 and a.input_tokens == 0 and a.raw_model == "replay"
    assert extract_code(a.text) == a.text  # a bare kernel file is usable code
    [c] = ask(p, "level2/19_Conv2d_ReLU_BiasAdd")
    assert "L2 P19 S0" in c.text
    [d] = ask(p, "level1/3_Batched_matrix_multiplication")
    assert "L1 P3 S0" in d.text


def test_kernelbench_missing_sample_is_a_failed_attempt(kb_run: Path) -> None:
    p = make_provider(f"replay:{kb_run}")
    a, b, c = ask(p, "level1/19_ReLU", n=3)
    assert a.ok and b.ok and not c.ok and c.error_kind == "replay_missing"
    assert "level1/19_ReLU sample 2" in c.error and not c.fatal
    [d] = ask(p, "level1/relu")  # no leading number: no KernelBench match
    assert not d.ok


def test_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "responses.jsonl"
    lines = [
        {"problem": "level1/relu", "response": "r0", "sample": 0},
        {"problem": "level1/relu", "response": "r1", "sample": 1},
        {"problem": "level1/relu", "response": "r0t1", "sample": 0, "turn": 1},
        {"problem": "level1/softmax", "text": "s0"},
        {"problem": "level1/softmax", "text": "s1"},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    p = make_provider(f"replay:{f}")
    assert [c.text for c in ask(p, "level1/relu", n=2)] == ["r0", "r1"]
    assert [c.text for c in ask(p, "level1/relu", turn=1)] == ["r0t1"]
    assert [c.text for c in ask(p, "level1/softmax", n=2)] == ["s0", "s1"]  # file order
    [missing] = ask(p, "level1/relu", turn=2)
    assert missing.error_kind == "replay_missing" and "turn 2" in missing.error


def test_jsonl_bad_line_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "level1/relu", "response": "x"}\n{"response": "no problem"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: expected"):
        make_provider(f"replay:{f}")


def test_candidate_folder_prefers_cuda_variant(tmp_path: Path) -> None:
    (tmp_path / "level1").mkdir()
    (tmp_path / "level1" / "relu.py").write_text("triton relu")
    (tmp_path / "level1" / "relu_cuda.py").write_text("cuda relu")
    p = make_provider(f"replay:{tmp_path}")
    assert p.kind == "folder"
    assert ask(p, "level1/relu")[0].text == "triton relu"
    assert ask(p, "level1/relu", backend="cuda")[0].text == "cuda relu"
    assert not ask(p, "level1/relu", n=2)[1].ok  # one sample per problem


def test_repository_examples_replay() -> None:
    folder = REPO / "kbench" / "examples"
    assert (folder / "level1" / "relu.py").is_file()
    p = make_provider(f"replay:{folder}")
    [c] = ask(p, "level1/relu")
    assert c.ok and "class ModelNew" in extract_code(c.text)


def test_replay_needs_a_context(kb_run: Path) -> None:
    p = make_provider(f"replay:{kb_run}")
    [c] = p.complete_sync([], max_tokens=1, temperature=0.0)
    assert c.error_kind == "config" and "CallContext" in c.error


@pytest.mark.parametrize("make", [
    lambda d: d / "nope",
    lambda d: d,  # an empty folder
    lambda d: (d / "empty.jsonl").write_text("\n") and d / "empty.jsonl",
])
def test_bad_replay_paths(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match="replay:") as e:
        make_provider(f"replay:{path}")
    assert "\n" not in str(e.value)


KERNELBENCH = REPO.parent / "shared" / "kernelbench"


@pytest.fixture
def rk_run(tmp_path: Path) -> Path:
    """A robust-kbench run folder: level_L/task_P/P_Name.py, plus files that map nowhere."""
    tmp_path = tmp_path / "robust-kbench-run"  # beside kb_run's files, when both are used
    for level, number, name in [(1, 19, "ReLU"), (2, 19, "Conv2d_ReLU_BiasAdd"),
                                (1, 3, "Batched_matrix_multiplication")]:
        task = tmp_path / f"level_{level}" / f"task_{number}"
        task.mkdir(parents=True)
        (task / f"{number}_{name}.py").write_text(KERNEL.format(tag=f"L{level} P{number}"))
    (tmp_path / "level_1" / "task_19" / "19_ReLU_v2.py").write_text(KERNEL.format(tag="v2"))
    (tmp_path / "level_1" / "task_19" / "helpers.py").write_text("# no number\n")
    (tmp_path / "level_1" / "task_19" / "20_Other.py").write_text("# wrong task\n")
    (tmp_path / "level_1" / "task_19" / "results.json").write_text("{}")
    return tmp_path


def test_robust_kbench_folder_matched_by_level_and_number(rk_run: Path) -> None:
    p = make_provider(f"replay:{rk_run}")
    assert p.kind == "kernelbench"
    a, b = ask(p, "level1/19_ReLU", n=2)  # two files in the task folder: samples in name order
    assert "L1 P19" in a.text and "v2" in b.text
    assert "L2 P19" in ask(p, "level2/19_Conv2d_ReLU_BiasAdd")[0].text
    assert "L1 P3" in ask(p, "level1/3_Batched_matrix_multiplication")[0].text
    assert not ask(p, "level1/relu")[0].ok  # no leading number: no match
    level = make_provider(f"replay:{rk_run / 'level_1'}")  # one level folder works too
    assert "L1 P19" in ask(level, "level1/19_ReLU")[0].text


def test_unmappable_files_are_named_with_the_reason(rk_run: Path, kb_run: Path) -> None:
    p = make_provider(f"replay:{rk_run}")
    assert len(p.warnings) == 2 and all("maps to no problem" in w for w in p.warnings)
    assert {Path(w.split()[2].rstrip(":")).name for w in p.warnings} == {"helpers.py",
                                                                         "20_Other.py"}
    (kb_run / "level_1_problem_4_kernel.py").write_text("no sample number")
    (kb_run / "level_1_problem_5_sample_0_kernel.py").write_bytes(b"# caf\xe9\n")
    k = make_provider(f"replay:{kb_run}")
    assert k.kind == "kernelbench" and len(k.warnings) == 2
    assert any("level_1_problem_4_kernel.py: maps to no problem" in w for w in k.warnings)
    assert any("level_1_problem_5_sample_0_kernel.py: not UTF-8" in w for w in k.warnings)
    assert not ask(k, "level1/5_Matrix_scalar_multiplication")[0].ok


def test_a_layout_folder_with_nothing_usable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "level_1" / "task_2").mkdir(parents=True)
    (tmp_path / "level_1" / "task_2" / "kernel.py").write_text("x")
    with pytest.raises(ConfigError, match=r"no usable generation.*kernel\.py"):
        make_provider(f"replay:{tmp_path}")


@pytest.mark.skipif(not (KERNELBENCH / "level1" / "19_ReLU.py").is_file(),
                    reason="KernelBench's problem files (../shared/kernelbench) are absent")
def test_both_layouts_map_to_kernelbench_problem_files(rk_run: Path, kb_run: Path) -> None:
    """The problems as `--problems path/to/KernelBench/level1` loads them."""
    from kbench.problems import load

    [spec] = load(str(KERNELBENCH / "level1" / "19_ReLU.py"))
    ctx = CallContext(spec.key, suite=spec.suite, name=spec.name)
    for run, tag in ((rk_run, "L1 P19"), (kb_run, "L1 P19 S0")):
        [c] = make_provider(f"replay:{run}").complete_sync([], max_tokens=1, temperature=0.0,
                                                           context=ctx)
        assert c.ok and tag in c.text
