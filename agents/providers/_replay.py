"""``replay:PATH``: recorded generations answered again, for re-verifying old runs and for
testing the whole loop without a model.

PATH may be:

* a KernelBench run folder of ``level_{L}_problem_{P}_sample_{S}_kernel.py`` files, matched
  to problems by level (suite ``level{L}``) and problem number (the leading number of the
  problem's file name, as in KernelBench's ``level1/19_ReLU.py``);
* a JSONL file of ``{"problem": "level1/relu", "response": "...", "sample": 0}`` lines
  (``turn`` optional, default 0; ``text`` is accepted for ``response``);
* a folder of candidate files ``<suite>/<name>.py`` (or ``<name>.py``), like
  ``kbench/examples/``; with the CUDA backend ``<name>_cuda.py`` is preferred. Such a
  folder holds one sample per problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from agents.providers._base import CallContext, Completion, Message, Provider, _failed
from kbench.errors import ConfigError

__all__ = ["ReplayProvider"]

_KB_FILE = re.compile(r"^level_(\d+)_problem_(\d+)_sample_(\d+)_kernel\.py$")
_LEVEL = re.compile(r"level_?(\d+)$")
_NUMBER = re.compile(r"^(\d+)_")

# (problem, sample, turn) -> response text; "problem" is a key, or ("kb", level, number)
_Key = tuple[object, int, int]


class ReplayProvider(Provider):
    """Answers from a recording; costs nothing and needs a :class:`CallContext`."""

    name = "replay"
    supports_n = True
    free = True

    def __init__(self, path: str | Path, *, concurrency: int = 8):
        self.path = Path(path).expanduser()
        super().__init__(str(self.path), prices=None, concurrency=concurrency)
        self.kind, self._index = _load(self.path)

    @property
    def label(self) -> str:
        return f"replay:{self.path}"

    async def _call(
        self, messages: list[Message], max_tokens: int, temperature: float, n: int,
        context: CallContext | None,
    ) -> list[Completion]:
        if context is None:
            return [_failed("replay needs to know the problem: pass context=CallContext(...)",
                            "config")]
        out = []
        for i in range(n):
            sample = context.sample + i
            text = self.lookup(context, sample)
            if text is None:
                what = f"{context.problem} sample {sample}" + (
                    f" turn {context.turn}" if context.turn else "")
                out.append(_failed(f"no recorded generation for {what} in {self.path}",
                                   "replay_missing"))
            else:
                out.append(Completion(text=text, finish_reason="stop", raw_model="replay",
                                      cost_usd=0.0))
        return out

    def lookup(self, context: CallContext, sample: int) -> str | None:
        """The recorded response for ``context``'s problem and turn, at ``sample``."""
        suite = context.suite or context.problem.partition("/")[0]
        name = context.name or context.problem.rpartition("/")[2]
        if self.kind == "kernelbench":
            level, number = _LEVEL.search(suite), _NUMBER.match(name)
            if not (level and number):
                return None
            key: object = ("kb", int(level.group(1)), int(number.group(1)))
            return self._index.get((key, sample, context.turn))
        if self.kind == "folder":
            if sample or context.turn:
                return None
            names = [f"{name}_cuda", name] if context.backend == "cuda" else [name]
            for key in [f"{suite}/{n}" for n in names] + names:
                if (key, 0, 0) in self._index:
                    return self._index[(key, 0, 0)]
            return None
        for key in (context.problem, f"{suite}/{name}"):
            if (key, sample, context.turn) in self._index:
                return self._index[(key, sample, context.turn)]
        return None


def _load(path: Path) -> tuple[str, dict[_Key, str]]:
    if not path.exists():
        raise ConfigError(f"replay:{path}: no such file or folder")
    if path.is_file():
        return "jsonl", _load_jsonl(path)
    kb = {}
    for f in path.glob("level_*_problem_*_sample_*_kernel.py"):
        m = _KB_FILE.match(f.name)
        if m:
            level, number, sample = map(int, m.groups())
            kb[(("kb", level, number), sample, 0)] = f.read_text()
    if kb:
        return "kernelbench", kb
    files: dict[_Key, str] = {}
    for f in sorted(path.glob("*.py")) + sorted(path.glob("*/*.py")):
        if not f.name.startswith("_"):
            rel = f.relative_to(path).with_suffix("").as_posix()
            files[(rel, 0, 0)] = f.read_text()
    if not files:
        raise ConfigError(
            f"replay:{path}: holds no recorded generations (expected KernelBench "
            "level_L_problem_P_sample_S_kernel.py files, or <suite>/<name>.py candidates)"
        )
    return "folder", files


def _load_jsonl(path: Path) -> dict[_Key, str]:
    out: dict[_Key, str] = {}
    counts: dict[tuple[str, int], int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            problem = rec["problem"]
            text = rec["response"] if "response" in rec else rec["text"]
            turn = int(rec.get("turn", 0))
            if not (isinstance(problem, str) and isinstance(text, str)):
                raise TypeError("problem and response must be strings")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"replay:{path}:{lineno}: expected {{\"problem\": ..., \"response\": ..., "
                f"\"sample\": N}} ({type(e).__name__}: {e})"
            ) from None
        # Without "sample", lines of one problem and turn are samples 0, 1, ... in file order.
        seq = counts.get((problem, turn), 0)
        counts[(problem, turn)] = seq + 1
        out[(problem, int(rec.get("sample", seq)), turn)] = text
    if not out:
        raise ConfigError(f"replay:{path}: no records")
    return out
