"""Finding the candidate file in a model's reply.

Example:
    >>> extract_code("Here:\\n```python\\nclass ModelNew: pass\\n```\\nDone.")
    'class ModelNew: pass\\n'
    >>> extract_code("I cannot help with that.") is None
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.policy import parse

__all__ = ["extract_code", "CodeBlock", "code_blocks", "parses"]

_OPEN = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+#.-]*)[^`]*$")
_PYTHON = {"python", "py", "python3", "py3", ""}
_MODEL_NEW = re.compile(r"^\s*class\s+ModelNew\b", re.M)
# The first line that looks like Python code, for replies without fences.
_CODE_START = re.compile(r"^(import |from \S+ import |class |def |@|#!|\"\"\"|# )", re.M)


@dataclass(frozen=True)
class CodeBlock:
    lang: str  # the fence's info word, lower-cased ("" when none)
    body: str
    closed: bool  # False: the reply ended inside this block (truncated)

    @property
    def is_python(self) -> bool:
        return self.lang in _PYTHON

    @property
    def defines_model_new(self) -> bool:
        return bool(_MODEL_NEW.search(self.body))


def code_blocks(text: str) -> list[CodeBlock]:
    """The fenced blocks of ``text`` in order; an unclosed last block runs to the end."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("lang").lower()
        closer = re.compile(rf"^\s{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not closer.match(lines[j]):
            j += 1
        blocks.append(CodeBlock(lang, "".join(lines[i + 1 : j]), closed=j < len(lines)))
        i = j + 1
    return blocks


def extract_code(text: str | None) -> str | None:
    """The candidate source in a reply, or ``None`` when there is no usable code.

    Preference: a fenced block defining ``class ModelNew`` (complete before truncated,
    Python-tagged before others, the last of equals: models revise as they go); else the
    largest Python block; else, for a reply without fences, the reply itself from its first
    line of code, if it defines ``ModelNew``. Reasoning in ``<think>...</think>`` is skipped.
    """
    if not text:
        return None
    text = _strip_thinking(text)
    blocks = [b for b in code_blocks(text) if b.body.strip()]
    with_model = [b for b in blocks if b.defines_model_new]
    if with_model:
        best = max(enumerate(with_model), key=lambda ib: (ib[1].closed, ib[1].is_python, ib[0]))
        return best[1].body
    python = [b for b in blocks if b.is_python]
    if python:
        return max(python, key=lambda b: len(b.body)).body
    if blocks or not _MODEL_NEW.search(text):
        return None
    start = _CODE_START.search(text)
    code = text[start.start():] if start else text
    return code if code.endswith("\n") else code + "\n"


def _strip_thinking(text: str) -> str:
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return text


def parses(code: str) -> bool:
    """Whether ``code`` is syntactically valid Python (a truncated reply usually is not)."""
    try:
        parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
