"""Lineage (issue 10): where each LLM attempt of a search strategy came from.

One row per LLM call that a strategy tagged (``evolve``: island, generation, slot, prompt
kind), written in the same transaction as the call and its candidate
(:meth:`Store.add_attempt` with ``lineage=``), so the population of an interrupted run is
rebuilt exactly from the store. A table of its own, created by ``create_all`` on an existing
database: nothing in the older tables changes (migration-safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from kbench.store._tables import _JSON, _Base, _now, _Text, _utc

__all__ = ["LineageRecord"]

_KNOWN = ("island", "generation", "slot", "kind", "rejected")


class _Lineage(_Base):
    __tablename__ = "lineage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    llm_call_id: Mapped[int] = mapped_column(ForeignKey("llm_calls.id"), unique=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    model: Mapped[str] = mapped_column(_Text)
    island: Mapped[int | None] = mapped_column(Integer)
    generation: Mapped[int | None] = mapped_column(Integer)
    slot: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str | None] = mapped_column(String(32))  # seed, mutate, crossover
    parent_ids: Mapped[Any] = mapped_column(_JSON)  # candidate ids, in prompt order
    rejected: Mapped[str | None] = mapped_column(_Text)  # why it was never verified
    extra: Mapped[Any] = mapped_column(_JSON, nullable=True)  # a strategy's other tags
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class LineageRecord:
    """One attempt's lineage. ``parent_ids`` are candidate ids; ``rejected`` says why the
    candidate was stored but never verified (e.g. a duplicate), else ``None``."""

    llm_call_id: int
    candidate_id: int | None
    problem_id: int
    model: str
    island: int | None
    generation: int | None
    slot: int | None
    kind: str | None
    parent_ids: tuple[int, ...]
    rejected: str | None
    extra: dict[str, Any]
    created_at: datetime

    def tags(self) -> dict[str, Any]:
        """The strategy's lineage dict as it was given (``Attempt.lineage``)."""
        out = {k: getattr(self, k) for k in _KNOWN if getattr(self, k) is not None}
        return {**self.extra, **out}


def _lineage_row(run_id: int, problem_id: int, llm_call_id: int, candidate_id: int | None,
                 model: str, tags: Mapping[str, Any], parent_ids: Sequence[int]) -> _Lineage:
    extra = {k: v for k, v in tags.items() if k not in _KNOWN}
    return _Lineage(run_id=run_id, problem_id=problem_id, llm_call_id=llm_call_id,
                    candidate_id=candidate_id, model=model, island=tags.get("island"),
                    generation=tags.get("generation"), slot=tags.get("slot"),
                    kind=tags.get("kind"), parent_ids=list(parent_ids),
                    rejected=tags.get("rejected"), extra=extra or None)


def _lineage_rec(r: _Lineage) -> LineageRecord:
    return LineageRecord(r.llm_call_id, r.candidate_id, r.problem_id, r.model, r.island,
                         r.generation, r.slot, r.kind, tuple(r.parent_ids or ()), r.rejected,
                         dict(r.extra or {}), _utc(r.created_at))
