"""Finding the candidate in a reply: fences, several blocks, truncation, no fences, no code."""

from __future__ import annotations

import pytest

from agents.extract import code_blocks, extract_code, parses

MODEL_NEW = "import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x\n"


def fenced(body: str, lang: str = "python") -> str:
    return f"```{lang}\n{body}```\n"


def test_single_python_block() -> None:
    assert extract_code("Sure!\n\n" + fenced(MODEL_NEW) + "\nThis is fast.") == MODEL_NEW


@pytest.mark.parametrize("lang", ["python", "py", "Python", "python3", ""])
def test_python_fence_spellings(lang: str) -> None:
    assert extract_code(fenced(MODEL_NEW, lang)) == MODEL_NEW


def test_block_with_model_new_wins_over_larger_block() -> None:
    helper = "def helper():\n" + "    pass\n" * 50
    text = fenced(helper) + "and the module:\n" + fenced(MODEL_NEW)
    assert extract_code(text) == MODEL_NEW


def test_last_complete_model_new_block_is_the_revision() -> None:
    draft = MODEL_NEW.replace("return x", "return x * 0  # draft")
    text = "First try:\n" + fenced(draft) + "Better:\n" + fenced(MODEL_NEW)
    assert extract_code(text) == MODEL_NEW


def test_python_preferred_over_cpp_block_defining_model_new_text() -> None:
    cpp = "// class ModelNew is below\n__global__ void k() {}\n"
    text = fenced(cpp, "cpp") + fenced(MODEL_NEW)
    assert extract_code(text) == MODEL_NEW


def test_largest_python_block_without_model_new() -> None:
    small, big = "x = 1\n", "import torch\n\ndef f(x):\n    return x\n"
    assert extract_code(fenced(small) + fenced(big)) == big


def test_truncated_reply_without_closing_fence() -> None:
    text = "Here it is:\n```python\n" + MODEL_NEW + "    def more(self):\n        return (x"
    code = extract_code(text)
    assert code is not None and code.startswith("import torch") and code.endswith("return (x")
    assert not parses(code)
    [block] = code_blocks(text)
    assert not block.closed


def test_complete_block_preferred_over_truncated_one() -> None:
    text = fenced(MODEL_NEW) + "Faster version:\n```python\n" + MODEL_NEW + "# cut"
    assert extract_code(text) == MODEL_NEW


def test_no_fences_code_only_reply() -> None:
    assert extract_code(MODEL_NEW) == MODEL_NEW  # e.g. a replayed KernelBench kernel file


def test_no_fences_prose_before_code() -> None:
    text = "Here is my solution.\n" + MODEL_NEW
    assert extract_code(text) == MODEL_NEW


@pytest.mark.parametrize("text", [
    "", None, "I cannot help with that.", "Use a Triton kernel with BLOCK=1024.",
    fenced("nvcc -O3 kernel.cu", "bash"),
])
def test_no_usable_code(text: str | None) -> None:
    assert extract_code(text) is None


def test_thinking_is_skipped() -> None:
    draft = MODEL_NEW.replace("return x", "return None")
    text = "<think>\n" + fenced(draft) + "</think>\nFinal:\n" + fenced(MODEL_NEW)
    assert extract_code(text) == MODEL_NEW


def test_tilde_and_long_fences() -> None:
    assert extract_code("~~~python\n" + MODEL_NEW + "~~~\n") == MODEL_NEW
    inner = MODEL_NEW + '"""\n```python\nexample\n```\n"""\n'
    assert extract_code("````python\n" + inner + "````\n") == inner


def test_cuda_candidate_in_python_block() -> None:
    body = 'from torch.utils.cpp_extension import load_inline\nsrc = """__global__ void k(){}"""\n' + MODEL_NEW
    assert extract_code(fenced("__global__ void k(){}\n", "cuda") + fenced(body)) == body
