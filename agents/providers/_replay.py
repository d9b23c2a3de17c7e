"""``replay:PATH``: recorded generations answered again, for re-verifying old runs and for
testing the whole loop without a model.

PATH may be:

* a KernelBench run folder of ``level_{L}_problem_{P}_sample_{S}_kernel.py`` files, matched
  to problems by level (suite ``level{L}``) and problem number (the leading number of the
  problem's file name, as in KernelBench's ``level1/19_ReLU.py``);
* a robust-kbench run folder, ``level_{L}/task_{P}/{P}_{Name}.py`` (or one ``level_{L}``
  folder of ``task_{P}`` folders), matched the same way; several files in one task folder
  are samples 0, 1, ... in name order;
* a JSONL file of ``{"problem": "level1/relu", "response": "...", "sample": 0}`` lines
  (``turn`` optional, default 0; ``text`` is accepted for ``response``);
* a folder of candidate files ``<suite>/<name>.py`` (or ``<name>.py``), like
  ``kbench/examples/``; with the CUDA backend ``<name>_cuda.py`` is preferred. Such a
  folder holds one sample per problem.

A ``.py`` file of a KernelBench or robust-kbench folder that maps to no problem (a name
outside the layout, a number that disagrees with its task folder, bytes that are not UTF-8)
is skipped and named, with the reason, in :attr:`ReplayProvider.warnings`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from agents.providers._base import CallContext, Completion, Message, Provider, _failed
from sandbox.errors import ConfigError

__all__ = ["ReplayProvider"]

_KB_FILE = re.compile(r"^level_(\d+)_problem_(\d+)_sample_(\d+)_kernel\.py$")
_LEVEL = re.compile(r"level_?(\d+)$")
_NUMBER = re.compile(r"^(\d+)_")
_RK_LEVEL = re.compile(r"^level_(\d+)$")  # robust-kbench: level_1/task_19/19_ReLU.py
_RK_TASK = re.compile(r"^task_(\d+)$")

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
        self.warnings: list[str] = []  # files skipped, each named with the reason
        self.kind, self._index = _load(self.path, self.warnings)

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


def _read(f: Path, warnings: list[str]) -> str | None:
    try:
        return f.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        warnings.append(f"replay: skipped {f}: not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                        f"at offset {e.start})")
    except OSError as e:
        warnings.append(f"replay: skipped {f}: cannot be read ({e.strerror or e})")
    return None


def _load_kernelbench(path: Path, warnings: list[str]) -> dict[_Key, str]:
    """KernelBench's ``level_L_problem_P_sample_S_kernel.py`` files directly in ``path``."""
    found = sorted(path.glob("level_*.py"))
    if not any(_KB_FILE.match(f.name) for f in found):
        return {}
    kb: dict[_Key, str] = {}
    for f in sorted(path.glob("*.py")):
        m = _KB_FILE.match(f.name)
        if not m:
            warnings.append(f"replay: skipped {f}: maps to no problem (expected "
                            "level_L_problem_P_sample_S_kernel.py)")
            continue
        level, number, sample = map(int, m.groups())
        text = _read(f, warnings)
        if text is not None:
            kb[(("kb", level, number), sample, 0)] = text
    return kb


def _load_robust_kbench(path: Path, warnings: list[str]) -> dict[_Key, str]:
    """robust-kbench's ``level_L/task_P/P_Name.py`` under ``path``, or ``task_P/P_Name.py``
    when ``path`` is itself a ``level_L`` folder."""
    m = _RK_LEVEL.match(path.name)
    levels = ([(int(m.group(1)), path)] if m and any(path.glob("task_*")) else
              [(int(lm.group(1)), d) for d in sorted(path.glob("level_*"))
               if d.is_dir() and (lm := _RK_LEVEL.match(d.name))])
    out: dict[_Key, str] = {}
    for level, ldir in levels:
        for task in sorted(ldir.glob("task_*")):
            tm = _RK_TASK.match(task.name)
            if not (task.is_dir() and tm):
                continue
            number, sample = int(tm.group(1)), 0
            for f in sorted(task.glob("*.py")):
                nm = _NUMBER.match(f.name)
                if not (nm and int(nm.group(1)) == number):
                    warnings.append(f"replay: skipped {f}: maps to no problem (expected "
                                    f"{number}_<Name>.py in {task.name}/)")
                    continue
                text = _read(f, warnings)
                if text is not None:
                    out[(("kb", level, number), sample, 0)] = text
                    sample += 1
    return out


def _load(path: Path, warnings: list[str]) -> tuple[str, dict[_Key, str]]:
    if not path.exists():
        raise ConfigError(f"replay:{path}: no such file or folder")
    if path.is_file():
        return "jsonl", _load_jsonl(path)
    kb = {**_load_kernelbench(path, warnings), **_load_robust_kbench(path, warnings)}
    if kb:
        return "kernelbench", kb
    if warnings:  # files of a known layout, none of them usable
        raise ConfigError(f"replay:{path}: no usable generation; {warnings[0]}")
    files: dict[_Key, str] = {}
    for f in sorted(path.glob("*.py")) + sorted(path.glob("*/*.py")):
        if not f.name.startswith("_"):
            text = _read(f, warnings)
            if text is not None:
                files[(f.relative_to(path).with_suffix("").as_posix(), 0, 0)] = text
    if not files:
        raise ConfigError(
            f"replay:{path}: holds no recorded generations (expected KernelBench "
            "level_L_problem_P_sample_S_kernel.py files, robust-kbench "
            "level_L/task_P/P_Name.py files, or <suite>/<name>.py candidates)"
        )
    return "folder", files


def _load_jsonl(path: Path) -> dict[_Key, str]:
    out: dict[_Key, str] = {}
    counts: dict[tuple[str, int], int] = {}
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"replay:{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                          f"offset {e.start})") from None
    for lineno, line in enumerate(lines, 1):
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
