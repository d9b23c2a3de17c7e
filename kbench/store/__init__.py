"""The result store: every run, problem, candidate, verdict, baseline and LLM call.

SQLite by default (one file, WAL, one writer at a time), PostgreSQL for runs spread over
machines. Each write method commits its own short transaction before it returns, so a
verdict is durable as soon as it is produced; a crash loses at most the call in flight.
On PostgreSQL any number of runs may write at once: the schema is created under an advisory
lock, upserts rest on unique constraints (the loser of a race re-reads the winner's row), and
a transaction the server rolled back (serialization failure, deadlock) is run again. A
password in the URL is never shown, and never stored (a run's config keeps ``user:***@``).
Reads return frozen records, never live ORM objects, so callers never hold a session.

Example:
    >>> from kbench.store import Store
    >>> store = Store("sqlite://")  # in memory
    >>> run = store.create_run("demo", model="fake")
    >>> store.get_run("demo").status
    <RunStatus.RUNNING: 'running'>
"""

from kbench.store._lineage import LineageRecord  # issue 10: evolve lineage
from kbench.store._owners import RunBusyError, RunOwner  # who works on a run
from kbench.store._records import (
    BaselineRecord,
    CandidateRecord,
    DeviceFactsRecord,
    LLMCallRecord,
    ProblemRecord,
    ResultRow,
    RunRecord,
    VerdictRecord,
)
from kbench.store._selection import SelectionRecord, chosen_candidate  # issue 10
from kbench.store._store import Store
from kbench.store._tables import ENV_VAR, RunStatus
from kbench.store._tuned import TunedConfigRecord  # issue 10: tuned configurations

__all__ = [
    "Store",
    "RunStatus",
    "RunRecord",
    "ProblemRecord",
    "CandidateRecord",
    "VerdictRecord",
    "LineageRecord",
    "BaselineRecord",
    "DeviceFactsRecord",
    "LLMCallRecord",
    "ResultRow",
    "ENV_VAR",
    "TunedConfigRecord",
    "SelectionRecord",
    "chosen_candidate",
    "RunOwner",
    "RunBusyError",
]
