"""Run configuration: an optional ``kbench.toml`` validated by pydantic, overridden by flags.

Example ``kbench.toml``::

    model = "openai/gpt-4o"     # or several: ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]
    problems = "level1"
    strategy = "refine"
    turns = 3
    max_cost_usd = 5.0

    [prices]
    "my-local-model" = { input = 0.0, output = 0.0 }

A search (``strategy = "evolve"``) takes ``islands``, ``generations``, ``population``,
``migrate_every``, ``crossover_rate``, ``stall_generations``, ``roofline_share`` and ``seed``.

Budgets: ``max_calls``, ``max_tokens_total``, ``max_cost_usd`` (calls in flight reserved),
``time_limit_s`` and ``max_gpu_minutes`` (verification and tuning time on a GPU). ``tune =
true`` tunes each problem's best correct candidate (``tune_trials`` configurations; CUDA only).

Where verifications run: ``executor = "local"`` (default) or ``"ray"`` with ``ray_address =
"HOST:PORT"`` (else a local Ray instance); ``jobs_per_device`` verifications share one GPU
at once (a Ray task then holds that share of a GPU).

Unknown keys are errors that name the key.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from agents.strategies import available_strategies, strategy_options
from kbench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "load_config"]


class RunConfig(BaseModel):
    """Everything ``kbench run`` needs besides secrets (keys come from the environment)."""

    model_config = ConfigDict(extra="forbid")

    # one or more models (``--model A --model B``); with several, a bandit picks the one
    # that serves each call (agents.bandit). A single string (older kbench.toml files and
    # stored run configs) is read as a list of one.
    model: list[str] = []
    base_url: str | None = None
    problems: str | None = None
    strategy: str = "oneshot"  # any name in agents' strategy registry
    samples: int = Field(1, ge=1)
    turns: int = Field(3, ge=1)
    # evolve (agents.strategies.Evolve): islands x population calls per generation
    islands: int = Field(2, ge=1)
    generations: int = Field(5, ge=1)
    population: int = Field(4, ge=1)
    migrate_every: int = Field(2, ge=1)
    crossover_rate: float = Field(0.3, ge=0, le=1)
    stall_generations: int | None = Field(None, ge=1)  # stop: no improvement for N generations
    roofline_share: float | None = Field(None, gt=0, le=1)  # stop: a candidate at this SOL share
    seed: int = 0
    backend: Literal["triton", "cuda"] = "triton"
    device: str | None = None
    executor: str = "local"  # any available name in kbench.executors' registry
    # executor "ray": the cluster (HOST:PORT, ray://HOST:PORT, auto); None: a local instance
    ray_address: str | None = None
    # verifications sharing one device at once: their imports, builds and checks overlap,
    # their timed phases never do (sandbox.devicelock)
    jobs_per_device: int = Field(2, ge=1, le=16)
    timing: bool = True
    max_calls: int | None = Field(None, ge=0)
    max_tokens_total: int | None = Field(None, ge=0)
    max_cost_usd: float | None = Field(None, ge=0)
    time_limit_s: float | None = Field(None, ge=0)
    # GPU time spent verifying (each CUDA verdict's wall time); no new candidates once reached
    max_gpu_minutes: float | None = Field(None, ge=0)
    # after each problem, tune the best correct candidate's knobs (kbench.tuning) on the GPU
    tune: bool = False
    tune_trials: int = Field(20, ge=1)
    concurrency: int = Field(4, ge=1)
    max_tokens: int = Field(8192, ge=256)
    temperature: float = Field(0.7, ge=0, le=2)
    store: str | None = None
    allow_libraries: list[str] = []  # libraries whose kernels candidates may run
    prices: dict[str, Any] = {}

    @field_validator("model", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            value = [v.strip() if isinstance(v, str) else v for v in value]
            seen = [v for i, v in enumerate(value) if v in value[:i]]
            if seen:
                raise PydanticCustomError("duplicate_model", "{name} is given twice",
                                          {"name": repr(seen[0])})
        return value

    @field_validator("prices")
    @classmethod
    def _price_table(cls, value: dict[str, Any]) -> dict[str, Any]:
        """``[prices]``: each entry ``{ input = USD, output = USD }`` (per 1M tokens), checked
        when the file is read, not when the model is first priced."""
        from agents.pricing import price_table

        for model, entry in value.items():
            why = _bad_price(entry)
            if why:
                raise PydanticCustomError(
                    "bad_price", "[prices] {model}: {why}; write {model} = { input = USD per 1M "
                    "tokens, output = USD per 1M tokens }", {"model": json.dumps(model), "why": why})
        try:
            price_table(value)  # the table the providers will use, built the same way
        except ConfigError as e:
            raise PydanticCustomError("bad_price", "{why}", {"why": str(e)}) from None
        return value

    @property
    def model_label(self) -> str:
        """The models as one line (``a, b``), for run names, listings and the live view."""
        return ", ".join(self.model)

    @field_validator("strategy")
    @classmethod
    def _registered(cls, name: str) -> str:
        known = available_strategies()
        if name not in known:
            raise PydanticCustomError(
                "unknown_strategy", "unknown strategy {name}; choose one of {known}",
                {"name": repr(name), "known": ", ".join(known)})
        return name

    @field_validator("executor")
    @classmethod
    def _executor_available(cls, name: str) -> str:
        from kbench.executors import available_executors, executor_names, why_unavailable

        if name not in executor_names():
            raise PydanticCustomError(
                "unknown_executor", "unknown executor {name}; choose one of {known}",
                {"name": repr(name), "known": ", ".join(available_executors())})
        why = why_unavailable(name)
        if why:
            raise PydanticCustomError("unavailable_executor", "executor {name} is not "
                                      "available: {why}", {"name": repr(name), "why": why})
        return name

    def strategy_options(self) -> dict[str, Any]:
        """The settings the chosen strategy takes (by its constructor's names), e.g.
        ``{"turns": 3, "samples": 1}`` for refine; the runner passes exactly these."""
        return {k: getattr(self, k) for k in strategy_options(self.strategy)
                if k in type(self).model_fields}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _toml(x: Any) -> str:
    """A value as written in TOML (``"x"``, ``true``), for messages."""
    try:
        return json.dumps(x)
    except (TypeError, ValueError):
        return repr(x)


def _bad_price(entry: Any) -> str | None:
    """Why a ``[prices]`` entry is not a price (None if it is one)."""
    if isinstance(entry, dict):
        unknown = [k for k in entry if k not in ("input", "output")]
        if unknown:
            return f"unknown key {unknown[0]!r} (a price has input and output)"
        missing = [k for k in ("input", "output") if k not in entry]
        if missing:
            return f"{missing[0]} is missing"
        values = [(k, entry[k]) for k in ("input", "output")]
    elif isinstance(entry, (list, tuple)) and len(entry) == 2:
        values = list(zip(("input", "output"), entry))
    else:
        return f"expected a table of input and output prices, not {_toml(entry)}"
    for k, v in values:
        if not _is_number(v):
            return f"{k} = {_toml(v)} is not a number"
        if v < 0:
            return f"{k} = {v} is negative"
    return None


def load_config(path: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Read ``path`` (or ``./kbench.toml`` if present), then apply non-None ``overrides``."""
    data: dict[str, Any] = {}
    if path is None and Path("kbench.toml").is_file():
        path = Path("kbench.toml")
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig(**data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = f"{path}: " if path else ""
        if first["type"] == "bad_price":  # the message names the entry itself
            raise ConfigError(f"{where}{first['msg']}") from None
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{where}unknown key {key!r}; known keys: "
                              f"{', '.join(RunConfig.model_fields)}") from None
        raise ConfigError(f"{where}{key}: {first['msg']}") from None
