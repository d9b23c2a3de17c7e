"""Final selections (issue 10): the winner of one problem in one run after its finalists
were re-timed interleaved (:mod:`kbench.selection`). Until a row exists, the problem's best is
provisional. A table of its own, created by ``create_all`` on an existing database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from kbench.store._tables import _JSON, _Base, _finite, _now, _Text, _utc

__all__ = ["SelectionRecord", "chosen_candidate"]


class _Selection(_Base):
    __tablename__ = "selections"
    __table_args__ = (UniqueConstraint("run_id", "problem_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    problem_key: Mapped[str] = mapped_column(_Text)
    winner_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    decision: Mapped[str] = mapped_column(String(32))
    margin_ms: Mapped[float | None] = mapped_column(Float)
    spread_ms: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(_Text)
    fingerprint_hash: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(_JSON)  # the whole Selection.to_dict()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class SelectionRecord:
    """One problem's final selection in a run. ``winner_id`` is a candidate id (``None``
    when no finalist finished re-timing); ``payload`` holds the ranking, per-candidate
    medians and IQRs, the per-round times and the dropped finalists."""

    run_id: int
    problem_key: str
    winner_id: int | None
    decision: str
    margin_ms: float | None
    spread_ms: float | None
    reason: str
    fingerprint_hash: str | None
    payload: dict[str, Any]
    created_at: datetime


def chosen_candidate(cands: Sequence[Any], winner_id: int | None) -> tuple[Any, str]:
    """The candidate of record among one problem's candidates that have a verdict (store
    records, oldest first): the final selection's winner (``winner_id``) where it is among
    them, else the one whose verdict :func:`kbench.scoring.best_verdict` ranks first; with
    how it was chosen ("final selection" or "best verdict"). ``(None, "")`` when there is
    none. The report, ``kbench tune RUN`` and ``kbench export`` all take this one, as
    :meth:`Store.results` does for the verdict.

    Example:
        >>> from types import SimpleNamespace as C
        >>> a = C(id=1, verdict=C(payload={"passed": True, "speedup_eager": 1.0}))
        >>> b = C(id=2, verdict=C(payload={"passed": True, "speedup_eager": 1.1}))
        >>> [(c.id, how) for c, how in (chosen_candidate([a, b], None),
        ...                             chosen_candidate([a, b], 1))]
        [(2, 'best verdict'), (1, 'final selection')]
    """
    from kbench.scoring import best_verdict

    won = next((c for c in cands if winner_id is not None and c.id == winner_id), None)
    if won is not None:
        return won, "final selection"
    payloads = [c.verdict.payload for c in cands]
    best = best_verdict(payloads)
    if best is None:
        return None, ""
    return cands[next(i for i, p in enumerate(payloads) if p is best)], "best verdict"


def _rec(r: _Selection) -> SelectionRecord:
    return SelectionRecord(r.run_id, r.problem_key, r.winner_id, r.decision, r.margin_ms,
                           r.spread_ms, r.reason, r.fingerprint_hash, dict(r.payload or {}),
                           _utc(r.created_at))


class _Selections:
    """Store methods for final selections (mixed into :class:`~kbench.store.Store`)."""

    _tx: Callable[..., Any]

    def put_selection(self, run_id: int, problem_key: str, payload: Mapping[str, Any],
                      fingerprint_hash: str | None = None) -> None:
        """Stores (or replaces) a run's selection for one problem. ``payload``:
        :meth:`kbench.selection.Selection.to_dict` (``winner``, ``decision``, ``margin_ms``,
        ``spread_ms`` and ``reason`` are copied into columns)."""
        def fn(s: Session) -> None:
            row = s.scalar(select(_Selection).where(_Selection.run_id == run_id,
                                                    _Selection.problem_key == problem_key))
            if row is None:
                row = _Selection(run_id=run_id, problem_key=problem_key)
                s.add(row)
            row.winner_id, row.decision = payload.get("winner"), str(payload["decision"])
            row.margin_ms = _finite(payload.get("margin_ms"))
            row.spread_ms = _finite(payload.get("spread_ms"))
            row.reason, row.payload = str(payload.get("reason", "")), dict(payload)
            row.fingerprint_hash, row.created_at = fingerprint_hash, _now()

        self._tx(fn)

    def selections_for(self, run_id: int) -> dict[str, SelectionRecord]:
        """A run's final selections by problem key."""
        def fn(s: Session) -> dict[str, SelectionRecord]:
            q = select(_Selection).where(_Selection.run_id == run_id).order_by(_Selection.id)
            return {r.problem_key: _rec(r) for r in s.scalars(q)}

        return self._tx(fn, write=False)
