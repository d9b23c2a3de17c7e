"""Tuned configurations (issue 10): the best knob values of one candidate for one shape on
one device, as the tuner found and re-verified them. Kept in this module of its own so the
table, its record and its methods stay one block beside the rest of the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from kbench.store._tables import _JSON, _Base, _now, _Text, _utc


class _TunedConfig(_Base):
    __tablename__ = "tuned_configs"
    __table_args__ = (
        UniqueConstraint("problem_key", "source_hash", "shape_name", "fingerprint_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    problem_key: Mapped[str] = mapped_column(_Text, index=True)
    source_hash: Mapped[str] = mapped_column(String(128))  # the candidate's source, untuned
    shape_name: Mapped[str] = mapped_column(_Text)
    fingerprint_hash: Mapped[str] = mapped_column(String(128))
    knobs: Mapped[Any] = mapped_column(_JSON)
    median_ms: Mapped[float | None] = mapped_column(Float)
    trials: Mapped[int] = mapped_column(Integer)
    study_name: Mapped[str | None] = mapped_column(_Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class TunedConfigRecord:
    """The best re-verified knob values of candidate ``source_hash`` for one shape and device.
    ``trials``: the study's evaluated configurations when it was stored."""

    problem_key: str
    source_hash: str
    shape_name: str
    fingerprint_hash: str
    knobs: dict[str, Any]
    median_ms: float | None
    trials: int
    study_name: str | None
    created_at: datetime


def _rec(t: _TunedConfig) -> TunedConfigRecord:
    return TunedConfigRecord(t.problem_key, t.source_hash, t.shape_name, t.fingerprint_hash,
                             dict(t.knobs or {}), t.median_ms, t.trials, t.study_name,
                             _utc(t.created_at))


class _TunedConfigs:
    """Store methods for tuned configurations (mixed into :class:`~kbench.store.Store`)."""

    _tx: Callable[..., Any]

    def put_tuned_config(
        self, problem_key: str, source_hash: str, shape_name: str, fingerprint_hash: str,
        knobs: Mapping[str, Any], median_ms: float | None, trials: int,
        study_name: str | None = None,
    ) -> None:
        """Stores (or replaces) the tuned configuration of one candidate, shape and device."""
        def fn(s: Session) -> None:
            row = s.scalar(select(_TunedConfig).where(
                _TunedConfig.problem_key == problem_key, _TunedConfig.source_hash == source_hash,
                _TunedConfig.shape_name == shape_name,
                _TunedConfig.fingerprint_hash == fingerprint_hash))
            if row is None:
                row = _TunedConfig(problem_key=problem_key, source_hash=source_hash,
                                   shape_name=shape_name, fingerprint_hash=fingerprint_hash)
                s.add(row)
            row.knobs, row.median_ms, row.trials = dict(knobs), median_ms, trials
            row.study_name, row.created_at = study_name, _now()

        self._tx(fn)

    def tuned_configs(
        self, problem_key: str | None = None, source_hash: str | None = None,
        fingerprint_hash: str | None = None,
    ) -> list[TunedConfigRecord]:
        """Stored tuned configurations, optionally filtered, oldest first."""
        def fn(s: Session) -> list[TunedConfigRecord]:
            q = select(_TunedConfig).order_by(_TunedConfig.id)
            if problem_key is not None:
                q = q.where(_TunedConfig.problem_key == problem_key)
            if source_hash is not None:
                q = q.where(_TunedConfig.source_hash == source_hash)
            if fingerprint_hash is not None:
                q = q.where(_TunedConfig.fingerprint_hash == fingerprint_hash)
            return [_rec(t) for t in s.scalars(q)]

        return self._tx(fn, write=False)


__all__ = ["TunedConfigRecord"]
