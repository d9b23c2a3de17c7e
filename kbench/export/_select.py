"""Which candidate of a run each problem exports: the final selection's winner if stored,
else the best verdict; only one correct on every shape it was checked on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kbench.store import CandidateRecord, RunRecord, Store, chosen_candidate

__all__ = ["Winner", "winners"]


@dataclass(frozen=True)
class Winner:
    problem_key: str
    candidate: CandidateRecord
    verdict: dict[str, Any]  # the stored Verdict.to_dict()
    chosen_by: str  # "final selection" or "best verdict"
    # the selection's check of its time from outside its process (sandbox.confirm), if any
    confirmation: dict[str, Any] | None = None

    @property
    def timing(self) -> str:
        """One line on whether this winner's time was confirmed (sandbox.confirm)."""
        if not self.verdict.get("speedup_eager") and not self.verdict.get("speedup_compile"):
            return "not timed"
        c = self.confirmation
        if not c:
            return "not confirmed (no confirmation stored: kbench run confirms on a GPU)"
        return str(c.get("reason") or ("confirmed" if c.get("agrees") else "not confirmed"))


def _not_exportable(v: dict[str, Any]) -> str | None:
    if v.get("status") != "correct":
        return f"verdict {v.get('status')}: {v.get('reason', '')}".rstrip(": ")
    shapes = v.get("shapes") or []
    if not shapes:
        return "verdict checked no shape"
    failed = [s["name"] for s in shapes if not s.get("passed")]
    if failed:
        return f"not correct on every shape (failed: {', '.join(failed)})"
    return None


def winners(store: Store, run: RunRecord) -> tuple[list[Winner], list[str]]:
    """The exportable winner per problem, and one line per problem skipped and why."""
    found: list[Winner] = []
    skipped: list[str] = []
    selections = store.selections_for(run.id)
    for row in store.results(run.id):
        key = row.problem_key
        cands = [c for c in store.candidates_for(run.id, key) if c.verdict is not None]
        sel = selections.get(key)
        chosen, how = chosen_candidate(cands, sel.winner_id if sel is not None else None)
        if chosen is None:
            skipped.append(f"{key}: no verified candidate")
            continue
        payload = chosen.verdict.payload  # type: ignore[union-attr]
        why = _not_exportable(payload)
        if why is not None:
            skipped.append(f"{key}: candidate {chosen.id} ({how}): {why}")
            continue
        conf = (sel.payload.get("confirmation") if sel is not None else None) or None
        if conf is not None and conf.get("candidate") != chosen.id:
            conf = None  # it confirmed another candidate
        found.append(Winner(key, chosen, payload, how, conf))
    return found, skipped
