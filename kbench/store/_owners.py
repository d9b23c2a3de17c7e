"""Who is working on a run: the process that created or resumed it (host, pid and a token of
that process's start) and when it last said it was alive (a heartbeat it writes every
:data:`HEARTBEAT_S` seconds). ``kbench run --resume`` claims a run only if its owner is gone,
so two processes never work on one run.

An owner is alive when, on this host, its pid exists and was started when the token says
(a pid reused by another process does not count); on another host (or where this host cannot
tell a process's start), when its heartbeat is younger than :data:`STALE_AFTER_S`. A process
killed outright (SIGKILL, power loss) leaves its row behind; it is then stale and the next
claim takes it over.

A table of its own (``run_owners``), created by ``create_all`` on an existing database, as
the selections and tuned configurations were: stores written by an older kbench open as
they are, and their runs have no owner (anyone may resume them, as before).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import DateTime, ForeignKey, Integer, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from kbench.errors import StoreError
from kbench.store._tables import _Base, _now, _Run, _Text, _utc

__all__ = ["RunOwner", "RunBusyError", "HEARTBEAT_S", "STALE_AFTER_S", "this_process"]

#: How often the owning process writes its heartbeat (seconds).
HEARTBEAT_S = 30.0
#: A heartbeat older than this (seconds) means the owner is gone, where liveness cannot be
#: checked directly (another host). Clocks of the hosts are assumed to agree within it.
STALE_AFTER_S = 120.0


class _RunOwner(_Base):
    __tablename__ = "run_owners"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    host: Mapped[str] = mapped_column(_Text)
    pid: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(_Text)  # the owner's start (see _start_token)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """``(state, start token)`` of process ``pid`` from Linux's ``/proc``, or None where
    the OS does not tell. The token is ``BOOT_ID:START_TICKS``: the same pid after a reboot,
    or reused by a later process, has another."""
    boot = _boot_id()
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 onwards
    if boot is None or len(fields) < 20:
        return None
    return fields[0], f"{boot}:{fields[19]}"  # fields 3 (state) and 22 (starttime)


def _start_token(pid: int) -> str | None:
    st = _stat(pid)
    return None if st is None else st[1]


@lru_cache(maxsize=1)
def _own_token(pid: int) -> str:
    return _start_token(pid) or f"uuid:{uuid.uuid4().hex}"


def this_process() -> tuple[str, int, str]:
    """``(host, pid, token)`` of the calling process."""
    pid = os.getpid()
    return socket.gethostname(), pid, _own_token(pid)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class RunOwner:
    """The process working on a run, as it recorded itself."""

    run_id: int
    host: str
    pid: int
    token: str
    started_at: datetime
    heartbeat_at: datetime

    def heartbeat_age_s(self, now: datetime | None = None) -> float:
        return ((now or _now()) - self.heartbeat_at).total_seconds()

    @property
    def is_this_process(self) -> bool:
        return (self.host, self.pid, self.token) == this_process()

    def alive(self, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> bool:
        """Whether the owner still runs (see the module's docstring for how it is told)."""
        if self.host == socket.gethostname():
            if not _pid_exists(self.pid):
                return False
            if not self.token.startswith("uuid:"):
                seen = _stat(self.pid)
                if seen is not None:  # a zombie (killed, not yet reaped) is gone
                    return seen[1] == self.token and seen[0] not in ("Z", "X")
        return self.heartbeat_age_s(now) < stale_after_s

    def describe(self, now: datetime | None = None) -> str:
        """``pid P on HOST (last heartbeat N s ago)``."""
        return (f"pid {self.pid} on {self.host} (last heartbeat "
                f"{max(0.0, self.heartbeat_age_s(now)):.0f} s ago)")


class RunBusyError(StoreError):
    """A run's owner is alive: it may not be claimed. ``owner`` says who."""

    def __init__(self, message: str, owner: RunOwner) -> None:
        super().__init__(message)
        self.owner = owner


def _rec(r: _RunOwner) -> RunOwner:
    return RunOwner(r.run_id, r.host, r.pid, r.token, _utc(r.started_at), _utc(r.heartbeat_at))


class _Owners:
    """Store methods for run ownership (mixed into :class:`~kbench.store.Store`)."""

    _tx: Callable[..., object]

    def claim_run(self, run_id: int) -> RunOwner | None:
        """Make the calling process the owner of run ``run_id``, in one transaction (the
        owner's row is locked on PostgreSQL; SQLite has one writer at a time; two first
        claims at once meet on the primary key and the loser re-reads the winner's row).

        Returns the previous owner if it was gone (its ``running`` status was stale), else
        None.

        Raises:
            RunBusyError: Another process owns the run and is alive; the message names the
                run, its pid and host, and says what to do.
        """
        host, pid, token = this_process()

        def fn(s: Session) -> RunOwner | None:
            row = s.scalar(select(_RunOwner).where(_RunOwner.run_id == run_id)
                           .with_for_update())
            now = _now()
            if row is None:
                s.add(_RunOwner(run_id=run_id, host=host, pid=pid, token=token,
                                started_at=now, heartbeat_at=now))
                s.flush()
                return None
            old = _rec(row)
            if not old.is_this_process and old.alive(now):
                name = s.scalar(select(_Run.name).where(_Run.id == run_id))
                raise RunBusyError(f"run {name!r} is still running in {old.describe(now)}; "
                                   "stop it first, or wait", old)
            row.host, row.pid, row.token = host, pid, token
            row.started_at = row.heartbeat_at = now
            return None if old.is_this_process else old

        return self._tx(fn)  # type: ignore[return-value]

    def heartbeat(self, run_id: int) -> bool:
        """The owning process is alive: its heartbeat is now. False (and nothing written) if
        the calling process does not own the run (any more)."""
        host, pid, token = this_process()

        def fn(s: Session) -> bool:
            row = s.get(_RunOwner, run_id)
            if row is None or (row.host, row.pid, row.token) != (host, pid, token):
                return False
            row.heartbeat_at = _now()
            return True

        return self._tx(fn)  # type: ignore[return-value]

    def release_run(self, run_id: int) -> None:
        """The calling process no longer works on run ``run_id`` (a no-op if it does not
        own it)."""
        host, pid, token = this_process()
        self._tx(lambda s: s.execute(delete(_RunOwner).where(
            _RunOwner.run_id == run_id, _RunOwner.host == host, _RunOwner.pid == pid,
            _RunOwner.token == token)))

    def run_owner(self, run_id: int) -> RunOwner | None:
        """The process recorded as working on run ``run_id``, alive or not; None if none
        is (the run is not running, or was made by a kbench without owners)."""
        def fn(s: Session) -> RunOwner | None:
            row = s.get(_RunOwner, run_id)
            return None if row is None else _rec(row)

        return self._tx(fn, write=False)  # type: ignore[return-value]
