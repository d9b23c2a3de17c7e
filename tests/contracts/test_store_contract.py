"""The contract every Store backend passes: a subclass of :class:`StoreContract` supplies one
fixture, ``url``, naming an empty database of its kind. SQLite (a file) always runs;
PostgreSQL runs where ``KBENCH_TEST_PG_URL`` names a reachable server (each test in a fresh
schema of its own, dropped afterwards), else it is skipped with the reason.

What is asserted is what :mod:`kbench.store` promises: every write commits before it
returns (another Store, in another process, sees it); reads return frozen records that
round-trip what was written; upserts are idempotent; threads and processes, each with its
own Store, write at once without losing or duplicating rows (on a new database too, racing
to create the schema); tuning's Optuna studies live in the same database; errors are
one-line :class:`StoreError` s that never show a password, and none is ever stored.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from kbench.errors import ConfigError, StoreError
from kbench.store import RunStatus, Store
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

FP = "fp-contract"
ROOT = Path(__file__).resolve().parents[2]


def timing(ms: float) -> Timing:
    return Timing(median_ms=ms, iqr_ms=0.01, mean_ms=ms, min_ms=ms * 0.9, count=50, rse=0.004)


def verdict(status: Status = Status.CORRECT, speedup: float | None = 1.7) -> Verdict:
    shape = ShapeResult(
        name="base", params={"N": 4096, "dtype": "float16"}, derived=False, trials=3,
        passed=status is Status.CORRECT, max_abs_err=1e-4, max_rel_err=2e-3, rel_l2_err=5e-5,
        timing=timing(0.5), eager=timing(0.85), speedup_eager=speedup, roofline_ms=0.2,
        sol_pct=40.0)
    odd = ShapeResult(name="derived_0", params={"N": 4231}, derived=True, trials=2,
                      passed=False, reason="3 of 4231 elements differ", max_abs_err=math.inf)
    return Verdict("level1/relu", status, "ok" if status is Status.CORRECT else "wrong values",
                   "cuda:0", "triton", shapes=(shape, odd), speedup_eager=speedup,
                   speedup_compile=None if speedup is None else speedup / 2, sol_pct=40.0,
                   timing_available=speedup is not None, fingerprint={"gpu": "H100"},
                   wall_s=3.2, phases={"check": 1.5}, log_tail="tail", notes=("a note",))


WRITERS, STEPS = 4, 12
# One writer of the concurrent-writer test: its own Store, released with the others by a file.
WRITER = """
import json, sys, time
from pathlib import Path
from kbench.errors import StoreError
from kbench.store import Store
from sandbox.verdict import Status, Timing, Verdict
url, sync, i, steps, fp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
(sync / f"ready-{i}").touch()
while not (sync / "go").exists():
    time.sleep(0.01)
s = Store(url)
rid = s.create_run(f"run-{i}", model="m", config={"writer": i})
try:
    s.create_run("contested")
    contested = "won"
except StoreError as e:
    contested = str(e)
t = Timing(median_ms=1.0, iqr_ms=0.1, mean_ms=1.0, min_ms=0.9, count=5, rse=0.01)
out = {"i": i, "run": rid, "contested": contested, "problems": [], "calls": [], "candidates": []}
for j in range(steps):
    key = f"s/p{j % 3}"
    pid = s.upsert_problem(key, "s", "h", "src")
    call, cand = s.add_attempt(rid, pid, "p", "m", [{"role": "user", "content": "x"}], "y",
                               source=f"src {i}.{j}", backend="triton", attempt=j,
                               lineage={"island": i, "generation": j}, parent_ids=[])
    s.add_verdict(cand, Verdict(key, Status.CORRECT, f"src {i}.{j}", "cpu", "triton"), "fp")
    s.put_baseline("s/p0", "h", "base", "eager", fp, t)
    s.put_device_facts(fp, {"gpu": "x"}, {"writer": i, "step": j})
    s.put_tuned_config("s/p0", "h", "base", fp, {"BLOCK": i * 100 + j}, 1.0, j)
    s.put_selection(rid, key, {"winner": cand, "decision": "only", "reason": "r"})
    out["problems"].append(pid)
    out["calls"].append(call)
    out["candidates"].append(cand)
s.close()
print(json.dumps(out))
"""


def count(url: str, table: str) -> int:
    """Rows in one table, counted by the database itself (not through the Store)."""
    with Store(url) as s, s.engine.connect() as c:
        return c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def run_python(code: str, *args: str, timeout: float = 120) -> str:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


class StoreContract:
    """Inherit and supply a ``url`` fixture: an empty database of the backend under test."""

    @pytest.fixture
    def url(self) -> Iterator[str]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        with Store(url) as s:
            yield s

    # -- round trips ---------------------------------------------------------------------
    def test_runs_round_trip(self, store: Store) -> None:
        config = {"model": "openai/gpt-4o", "budget": {"usd": 2.5}, "problems": ["a", "b"]}
        rid = store.create_run("r1", model="openai/gpt-4o", strategy="refine", config=config,
                               notes="first")
        other = store.create_run("r2")
        rec = store.get_run("r1")
        assert rec is not None and rec.id == rid and rec.name == "r1"
        assert (rec.model, rec.strategy, rec.config, rec.notes) == (
            "openai/gpt-4o", "refine", config, "first")
        assert rec.status is RunStatus.RUNNING and rec.created_at.tzinfo is not None
        store.set_run_status(rid, "finished")
        assert store.get_run("r1").status is RunStatus.FINISHED
        assert [r.id for r in store.list_runs()] == [rid, other]
        assert store.get_run("nope") is None
        ordered = {"zeta": 1, "a": {"z": 1, "b": 2}, "middle": 3}  # as written, not sorted
        store.create_run("ordered", config=ordered)
        cfg = store.get_run("ordered").config
        assert list(cfg) == ["zeta", "a", "middle"] and list(cfg["a"]) == ["z", "b"]
        with pytest.raises(FrozenInstanceError):
            rec.name = "x"  # type: ignore[misc]

    def test_duplicate_run_and_missing_ids_are_one_line_store_errors(self, store: Store) -> None:
        store.create_run("taken")
        with pytest.raises(StoreError) as e:
            store.create_run("taken")
        assert "already exists" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(StoreError, match="no run with id 999"):
            store.set_run_status(999, RunStatus.FAILED)
        with pytest.raises(ValueError):
            store.set_run_status(1, "exploded")
        assert len(store.list_runs()) == 1

    def test_problem_upsert_is_idempotent(self, store: Store) -> None:
        a = store.upsert_problem("level1/relu", "level1", "h1", "class Model: ...")
        assert store.upsert_problem("level1/relu", "level1", "h1", "class Model: ...") == a
        b = store.upsert_problem("level1/relu", "level1", "h2", "class Model: ... # v2")
        assert b != a  # new content, new row: verdicts stay tied to what was checked
        rec = store.get_problem(a)
        assert (rec.id, rec.key, rec.suite, rec.source_hash, rec.source) == (
            a, "level1/relu", "level1", "h1", "class Model: ...")
        assert store.get_problem(b).source_hash == "h2" and store.get_problem(10_000) is None

    def test_candidates_and_verdicts_round_trip(self, store: Store) -> None:
        rid = store.create_run("r")
        pid = store.upsert_problem("level1/relu", "level1", "h", "src")
        knobs = {"BLOCK": [64, 128], "num_warps": 4}
        c1 = store.add_candidate(pid, "class ModelNew: ...", "triton", run_id=rid, origin="llm",
                                 attempt=0, knobs=knobs)
        c2 = store.add_candidate(pid, "class ModelNew: ... # 2", "cuda", run_id=rid,
                                 origin="llm", parent_id=c1, attempt=1)
        store.add_candidate(pid, "elsewhere", "triton")  # no run: not the run's
        bad, good = verdict(Status.INCORRECT, None), verdict(speedup=2.5)
        store.add_verdict(c1, bad, FP)
        v2 = store.add_verdict(c1, good, FP)
        first, second = store.candidates_for(rid, "level1/relu")
        assert (first.id, first.run_id, first.problem_id, first.problem_key) == (
            c1, rid, pid, "level1/relu")
        assert (first.source, first.backend, first.origin, first.knobs) == (
            "class ModelNew: ...", "triton", "llm", knobs)
        assert first.verdict is not None and first.verdict.id == v2  # the latest
        assert (second.id, second.parent_id, second.attempt, second.backend) == (c2, c1, 1, "cuda")
        assert second.verdict is None
        recs = store.verdicts_for_candidate(c1)
        assert [r.status for r in recs] == [Status.INCORRECT, Status.CORRECT]
        assert recs[0].verdict() == bad and recs[1].verdict() == good  # the whole record
        assert (recs[1].passed, recs[1].speedup_eager, recs[1].speedup_compile,
                recs[1].sol_pct, recs[1].fingerprint_hash) == (True, 2.5, 1.25, 40.0, FP)
        assert store.candidates_for(rid, "level1/other") == []
        rows = dict(store.results(rid))
        assert rows["level1/relu"]["speedup_eager"] == 2.5

    def test_baselines_and_device_facts_round_trip_and_replace(self, store: Store) -> None:
        key = ("level1/relu", "h", "base", "eager", FP)
        assert store.get_baseline(*key) is None
        bid = store.put_baseline(*key, timing(0.8), shape={"N": 4096},
                                 fingerprint={"gpu": "H100"}, payload={"compile_s": 1.5})
        rec = store.get_baseline(*key)
        assert rec.id == bid and rec.timing == timing(0.8) and rec.median_ms == 0.8
        assert (rec.shape, rec.fingerprint, rec.payload["compile_s"]) == (
            {"N": 4096}, {"gpu": "H100"}, 1.5)
        assert store.put_baseline(*key, timing(0.7)) == bid  # replaced, not duplicated
        assert store.get_baseline(*key).timing == timing(0.7)
        assert store.get_baseline("level1/relu", "h", "base", "compile", FP) is None
        assert store.get_device_facts(FP) is None
        store.put_device_facts(FP, {"gpu": "H100"}, {"bandwidth_gbs": 3000.0, "sms": 132})
        store.put_device_facts(FP, {"gpu": "H100", "driver": "550"}, {"bandwidth_gbs": 3100.0})
        facts = store.get_device_facts(FP)
        assert facts.fingerprint == {"gpu": "H100", "driver": "550"}
        assert facts.facts == {"bandwidth_gbs": 3100.0}

    def test_llm_calls_round_trip_without_secrets(self, store: Store,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        secret = "sk-contract-0123456789abcdefXYZ"
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        rid = store.create_run("r")
        pid = store.upsert_problem("level1/relu", "level1", "h", "src")
        msgs = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": f"write relu ({secret})"}]
        a = store.add_llm_call(rid, "openai", "gpt-4o", msgs, "reply", problem_id=pid,
                               usage={"api_key": secret, "n": 1}, input_tokens=10,
                               output_tokens=5, cost_usd=0.01, latency_s=1.5)
        b, cand = store.add_attempt(rid, pid, "openai", "gpt-4o", msgs, "```code```",
                                    source="class ModelNew: ...", backend="triton", attempt=2,
                                    input_tokens=7, output_tokens=3, cost_usd=None,
                                    error=f"401 for {secret}")
        c, none = store.add_attempt(rid, pid, "openai", "gpt-4o", msgs, "no code",
                                    source=None, backend="triton")
        assert cand is not None and none is None
        first, second, third = store.llm_calls_for(rid)
        assert [x.id for x in (first, second, third)] == [a, b, c]
        assert (first.provider, first.model, first.problem_id, first.response) == (
            "openai", "gpt-4o", pid, "reply")
        assert (first.input_tokens, first.output_tokens, first.cost_usd, first.latency_s) == (
            10, 5, 0.01, 1.5)
        assert first.usage == {"n": 1}
        assert first.prompt[0] == msgs[0] and secret not in json.dumps(first.prompt)
        assert second.candidate_id == cand and second.cost_usd is None
        assert second.error is not None and secret not in second.error
        (rec,) = store.candidates_for(rid, "level1/relu")
        assert (rec.id, rec.origin, rec.attempt) == (cand, "llm", 2)
        assert [r.problem_key for r in store.results(rid)] == ["level1/relu"]

    def test_long_names_round_trip(self, store: Store) -> None:
        """No length limit SQLite ignores is enforced by another backend: a long run name,
        the label of several models given by long replay paths, a problem deep in folders."""
        name = "run-" + "n" * 400
        models = ", ".join(f"replay:/data/{'d' * 150}/run{i}" for i in range(3))
        key = "/".join(["suite", *["folder" * 10] * 8, "problem"])
        shape, study = "shape_" * 60, "tune:" + key * 2
        msgs = [{"role": "user", "content": "x"}]
        rid = store.create_run(name, model=models, strategy="s" * 150)
        pid = store.upsert_problem(key, "suite" * 40, "h", "src")
        call = store.add_llm_call(rid, "p" * 150, models, msgs, "r", problem_id=pid)
        _, cand = store.add_attempt(rid, pid, "p" * 150, models, msgs, "r", source="c",
                                    backend="triton", lineage={"kind": "seed"})
        store.put_baseline(key, "h", shape, "eager", FP, timing(1.0))
        store.put_tuned_config(key, "h", shape, FP, {"BLOCK": 64}, 1.0, 3, study_name=study)
        store.put_selection(rid, key, {"winner": cand, "decision": "only", "reason": "r"})
        run = store.get_run(name)
        assert (run.id, run.model, run.strategy) == (rid, models, "s" * 150)
        assert store.get_problem(pid).key == key and store.get_problem(pid).suite == "suite" * 40
        first, second = store.llm_calls_for(rid)
        assert first.id == call and (first.provider, first.model) == ("p" * 150, models)
        assert store.lineage_for(rid)[second.id].model == models
        assert [c.id for c in store.candidates_for(rid, key)] == [cand]
        assert store.get_baseline(key, "h", shape, "eager", FP).shape_name == shape
        (tuned,) = store.tuned_configs(problem_key=key)
        assert (tuned.shape_name, tuned.study_name) == (shape, study)
        assert store.selections_for(rid)[key].winner_id == cand

    def test_nul_characters_are_stored_as_replacement_characters(self, store: Store) -> None:
        """A NUL in an LLM reply, a candidate's source, a verdict's reason or a config never
        fails the write (PostgreSQL's text and JSONB cannot hold NUL): every backend stores
        it as U+FFFD, the same way, and keeps everything else."""
        nul, kept = "a\x00b", "a\ufffdb"
        rid = store.create_run("r", config={"note": nul, nul: [nul]}, notes=nul)
        pid = store.upsert_problem("level1/relu", "level1", "h", nul)
        call, cand = store.add_attempt(rid, pid, "p", "m", [{"role": "user", "content": nul}],
                                       nul, source=nul, backend="triton", error=nul,
                                       usage={"note": nul}, lineage={"rejected": nul})
        store.add_verdict(cand, Verdict("level1/relu", Status.INCORRECT, nul, "cpu", "triton",
                                        log_tail=nul), FP)
        run = store.get_run("r")
        assert run.config == {"note": kept, kept: [kept]} and run.notes == kept
        assert store.get_problem(pid).source == kept
        (rec,) = store.llm_calls_for(rid)
        assert (rec.id, rec.response, rec.error, rec.prompt[0]["content"], rec.usage) == (
            call, kept, kept, kept, {"note": kept})
        (c,) = store.candidates_for(rid, "level1/relu")
        assert c.source == kept and c.verdict.reason == kept
        assert c.verdict.verdict().log_tail == kept
        assert store.lineage_for(rid)[call].rejected == kept

    # -- sharing ---------------------------------------------------------------------------
    def test_a_second_store_sees_committed_writes(self, store: Store, url: str) -> None:
        rid = store.create_run("shared")
        with Store(url) as other:
            assert other.get_run("shared").id == rid
            other.set_run_status(rid, "interrupted")
        assert store.get_run("shared").status is RunStatus.INTERRUPTED

    def test_another_process_sees_committed_writes(self, store: Store, url: str) -> None:
        pid = store.upsert_problem("level1/relu", "level1", "h", "src")
        cid = store.add_candidate(pid, "cand", "triton")
        store.add_verdict(cid, verdict(speedup=3.0), FP)
        out = run_python(
            "import json, sys\n"
            "from kbench.store import Store\n"
            "from sandbox.verdict import Status, Verdict\n"
            "s = Store(sys.argv[1])\n"
            "(v,) = s.verdicts_for_candidate(int(sys.argv[2]))\n"
            "rid = s.create_run('from-child')\n"
            "s.add_verdict(int(sys.argv[2]), Verdict('k', Status.INCORRECT, 'child', 'cpu',"
            " 'triton'), 'fp')\n"
            "print(json.dumps([v.speedup_eager, rid]))\n",
            url, str(cid))
        speed, rid = json.loads(out.strip().splitlines()[-1])
        assert speed == 3.0
        assert store.get_run("from-child").id == rid
        assert [v.reason for v in store.verdicts_for_candidate(cid)] == ["ok", "child"]

    def test_concurrent_writers_lose_no_rows(self, store: Store, url: str) -> None:
        """Threads sharing one Store and threads with their own Store, all writing at once:
        every row lands, and racing upserts of one problem agree on one id."""
        rid = store.create_run("busy")
        errors: list[BaseException] = []
        pids: list[int] = []
        barrier = threading.Barrier(6)

        def work(i: int, own: bool) -> None:
            s = Store(url) if own else store
            try:
                barrier.wait(10)
                for j in range(10):
                    pid = s.upsert_problem("level1/shared", "level1", "h", "src")
                    pids.append(pid)
                    cid = s.add_candidate(pid, f"c{i}.{j}", "triton", run_id=rid)
                    s.add_verdict(cid, verdict(speedup=1.0 + j), FP)
                    s.add_llm_call(rid, "p", "m", [{"role": "user", "content": "x"}], "y",
                                   problem_id=pid)
                    s.put_baseline("level1/shared", "h", "base", "eager", FP, timing(1.0 + j))
            except BaseException as e:  # a thread swallows it otherwise
                errors.append(e)
            finally:
                if own:
                    s.close()

        threads = [threading.Thread(target=work, args=(i, i % 2 == 0)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len(set(pids)) == 1 and len(pids) == 60
        cands = store.candidates_for(rid, "level1/shared")
        assert sorted(c.source for c in cands) == sorted(f"c{i}.{j}" for i in range(6)
                                                        for j in range(10))
        assert all(c.verdict is not None for c in cands)
        assert len(store.llm_calls_for(rid)) == 60
        assert store.get_baseline("level1/shared", "h", "base", "eager", FP) is not None

    def test_concurrent_processes_lose_no_rows(self, store: Store, url: str) -> None:
        pid = store.upsert_problem("level1/relu", "level1", "h", "src")
        cid = store.add_candidate(pid, "cand", "triton")
        code = ("import sys\n"
                "from kbench.store import Store\n"
                "from sandbox.verdict import Status, Verdict\n"
                "s = Store(sys.argv[1])\n"
                "for j in range(25):\n"
                "    s.add_verdict(int(sys.argv[2]), Verdict('k', Status.CORRECT, sys.argv[3],"
                " 'cpu', 'triton'), 'fp')\n")
        procs = [subprocess.Popen([sys.executable, "-c", code, url, str(cid), f"p{i}"],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
        reasons = [v.reason for v in store.verdicts_for_candidate(cid)]
        assert sorted(reasons) == ["p0"] * 25 + ["p1"] * 25

    def test_runs_started_at_once_on_a_new_database_lose_and_duplicate_nothing(
            self, url: str, tmp_path: Path) -> None:
        """Several processes, each its own Store on one URL of an EMPTY database, released
        together: they race to create the schema, then each writes its run's attempts
        (LLM call + candidate + lineage), verdicts, shared upserts, and a run name they all
        want. Every row lands exactly once, racing upserts agree on one row, one process
        gets the contested name and the others a clear error."""
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(tmp_path), str(i),
                                   str(STEPS), FP],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in range(WRITERS)]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < WRITERS and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        (tmp_path / "go").touch()  # all imported and waiting: release them together
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))

        winners = [r for r in reports if r["contested"] == "won"]
        assert len(winners) == 1, reports
        assert all("already exists" in r["contested"] for r in reports if r not in winners)
        for table, n in {"runs": WRITERS + 1, "problems": 3, "candidates": WRITERS * STEPS,
                         "verdicts": WRITERS * STEPS, "llm_calls": WRITERS * STEPS,
                         "lineage": WRITERS * STEPS, "baselines": 1, "device_facts": 1,
                         "tuned_configs": 1, "selections": WRITERS * 3}.items():
            assert count(url, table) == n, table

        with Store(url) as store:
            assert sorted(r.name for r in store.list_runs()) == sorted(
                [f"run-{i}" for i in range(WRITERS)] + ["contested"])
            pids = {pid for r in reports for pid in r["problems"]}
            assert len(pids) == 3  # every process got the same three problem ids
            for r in reports:
                rid = r["run"]
                calls = store.llm_calls_for(rid)
                assert [c.id for c in calls] == r["calls"]  # its own, in its order, once
                cands = [c for k in ("s/p0", "s/p1", "s/p2")
                         for c in store.candidates_for(rid, k)]
                assert sorted(c.id for c in cands) == sorted(r["candidates"])
                assert sorted(c.source for c in cands) == sorted(
                    f"src {r['i']}.{j}" for j in range(STEPS))
                assert all(c.verdict is not None and c.verdict.reason == c.source
                           for c in cands)
                assert sorted(x.candidate_id for x in store.lineage_for(rid).values()) == \
                    sorted(r["candidates"])
                assert set(store.selections_for(rid)) == {"s/p0", "s/p1", "s/p2"}
            every = [x for r in reports for x in r["candidates"]]
            assert len(set(every)) == len(every) == WRITERS * STEPS
            assert store.get_baseline("s/p0", "h", "base", "eager", FP) is not None
            (tuned,) = store.tuned_configs()
            assert tuned.knobs["BLOCK"] in {i * 100 + STEPS - 1 for i in range(WRITERS)}

    def test_a_runs_config_never_keeps_a_password(self, store: Store, url: str) -> None:
        """A run's config names its store; the stored copy has the password masked (the
        whole table is searched, not just the record)."""
        cfg = {"store": "postgresql://kb:hunter2-pw@db.example:5432/kb",
               "also": ["postgresql+psycopg://kb:hunter2-pw@db/kb?sslmode=require",
                        "postgresql://kb@db/kb?password=hunter2-pw&sslmode=require"],
               "model": ["openai/gpt-4o"]}
        rid = store.create_run("r", config=cfg, notes="from postgresql://kb:hunter2-pw@db/kb")
        rec = store.get_run("r")
        assert rec.id == rid and rec.model is None
        assert rec.config == {"store": "postgresql://kb:***@db.example:5432/kb",
                              "also": ["postgresql+psycopg://kb:***@db/kb?sslmode=require",
                                       "postgresql://kb@db/kb?password=***&sslmode=require"],
                              "model": ["openai/gpt-4o"]}
        assert rec.notes == "from postgresql://kb:***@db/kb"
        with store.engine.connect() as c:
            rows = c.execute(text("SELECT * FROM runs")).all()
        assert "hunter2" not in repr(rows) and "kb:***@db" in repr(rows)

    def test_optuna_studies_share_the_stores_database(self, url: str, tmp_path: Path) -> None:
        """Tuning's Optuna storage is the store's own database; processes opening it at once
        on a new database (Optuna's tables not there yet) all get it, and a study made by
        one is resumed, not duplicated, by another."""
        import optuna

        from kbench.tuning import open_storage

        code = ("import sys, optuna\n"
                "from kbench.store import Store\n"
                "from kbench.tuning import open_storage\n"
                "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
                "st = open_storage(Store(sys.argv[1]))\n"
                "for name in ('shared', 'own-' + sys.argv[2]):\n"
                "    s = optuna.create_study(storage=st, study_name=name, load_if_exists=True)\n"
                "    s.add_trial(optuna.trial.create_trial(value=float(sys.argv[2]),"
                " params={}, distributions={}))\n")
        procs = [subprocess.Popen([sys.executable, "-c", code, url, str(i)], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for i in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-3000:]
        with Store(url) as store:
            storage = open_storage(store)
            names = sorted(optuna.get_all_study_names(storage=storage))
            assert names == ["own-0", "own-1", "own-2", "shared"]
            shared = optuna.load_study(study_name="shared", storage=storage)
            assert sorted(t.value for t in shared.trials) == [0.0, 1.0, 2.0]
            assert store.list_runs() == [] and count(url, "studies") == 4  # one database

    def test_bad_baseline_mode_is_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(ValueError, match="mode"):
            store.put_baseline("k", "h", "base", "inductor", FP, timing(1.0))
        assert store.get_baseline("k", "h", "base", "inductor", FP) is None


# -- backends -------------------------------------------------------------------------------
class TestSQLite(StoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> Iterator[str]:
        yield f"sqlite:///{tmp_path / 'contract.db'}"

    def test_a_plain_path_is_the_same_store(self, store: Store, url: str) -> None:
        store.create_run("by-url")
        with Store(url.removeprefix("sqlite:///")) as by_path:
            assert by_path.get_run("by-url") is not None


PG_ENV = "KBENCH_TEST_PG_URL"


@functools.cache
def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or ``None`` (``$KBENCH_TEST_PG_URL`` names a
    server that answers; CI's ``.ci/run`` starts one and sets it)."""
    url = os.environ.get(PG_ENV, "")
    if not url:
        return f"{PG_ENV} is not set (no PostgreSQL server to test against; .ci/run starts one)"
    try:
        engine = create_engine(_admin_url(url), connect_args={"connect_timeout": 5})
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - the reason is the skip message
        first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
        return f"{PG_ENV} is set but no PostgreSQL server answers there: {first}"
    return None


def _admin_url(url: str) -> URL:
    u = make_url(url)
    return u.set(drivername="postgresql+psycopg") if u.drivername in ("postgres", "postgresql") else u


@contextlib.contextmanager
def pg_database(*settings: str) -> Iterator[str]:
    """A store URL on ``$KBENCH_TEST_PG_URL``'s server naming an empty database of its own:
    a fresh schema (``search_path`` in the URL's ``options``), dropped afterwards, so tests
    never see each other's rows and CI runs may share one server. ``settings``: more server
    settings for its sessions (``name=value``). Skips when there is none."""
    why = pg_unavailable()
    if why:
        pytest.skip(why)
    base = os.environ[PG_ENV]
    schema = f"kbt_{uuid.uuid4().hex[:16]}"
    admin = create_engine(_admin_url(base))
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    u = make_url(base)
    options = " ".join(f"-c{o}" for o in (f"search_path={schema}", *settings))
    u = u.update_query_dict({"options": options})
    try:
        yield u.render_as_string(hide_password=False)
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class TestPostgreSQL(StoreContract):
    @pytest.fixture
    def url(self) -> Iterator[str]:
        with pg_database() as url:
            yield url

    def test_tables_live_in_the_urls_database(self, store: Store, url: str) -> None:
        store.create_run("r")
        assert store.engine.dialect.name == "postgresql"
        with store.engine.connect() as c:
            schema = c.execute(text("SELECT current_schema()")).scalar()
            n = c.execute(text("SELECT count(*) FROM runs")).scalar()
        assert schema == make_url(url).query["options"].split("=")[1] and n == 1

    def test_writers_under_serializable_isolation_retry_and_lose_nothing(
            self, tmp_path: Path) -> None:
        """A database whose sessions default to SERIALIZABLE (a DBA's choice kbench does not
        control): racing writers get serialization failures, which the Store retries (the
        server rolled them back whole), so the concurrent-writer test still holds exactly."""
        with pg_database("default_transaction_isolation=serializable") as url:
            with Store(url) as s, s.engine.connect() as c:
                assert c.execute(text("SHOW transaction_isolation")).scalar() == "serializable"
            self.test_runs_started_at_once_on_a_new_database_lose_and_duplicate_nothing(
                url, tmp_path)


# -- opening ------------------------------------------------------------------------------
def test_reading_commands_never_create_a_store(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs list`` / ``runs show`` / ``--resume`` on a store that does not exist say so
    and leave no file behind (opening a Store would create one)."""
    from rich.console import Console

    from kbench.runflow import list_runs, show_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    console = Console(record=True, width=200)
    for db in (str(tmp_path / "absent.db"), f"sqlite:///{tmp_path / 'absent.db'}", None):
        list_runs(db, False, console)
        list_runs(db, True, console)
        with pytest.raises(ConfigError, match="no run named 'x': no store at"):
            show_run("x", db, False, console)
    assert "no runs yet (no store at" in console.export_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    env = {**os.environ, "KBENCH_STORE": str(tmp_path / "from-env.db")}
    r = subprocess.run([sys.executable, "-c", "from kbench.cli import main; main()", "runs", "list"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no store at" in r.stdout and not (tmp_path / "from-env.db").exists()


def test_a_store_in_a_missing_folder_is_refused_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "kb.db"
    with pytest.raises(StoreError) as e:
        Store(str(target))
    assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "no").exists()
    with pytest.raises(StoreError, match="is a directory"):
        Store(str(tmp_path))


@pytest.mark.parametrize("content", [
    pytest.param(b"this is not a database\n" * 200, id="text"),
    pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, id="bad-header"),
])
def test_a_corrupt_file_is_a_one_line_store_error(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "kb.db"
    f.write_bytes(content)
    with pytest.raises(StoreError) as e:
        with Store(str(f)) as s:
            s.list_runs()
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg, msg
    assert f.read_bytes() == content  # left as it was


def test_a_truncated_store_is_a_one_line_store_error(tmp_path: Path) -> None:
    f = tmp_path / "kb.db"
    with Store(str(f)) as s:
        rid = s.create_run("r")
        for i in range(200):
            s.add_llm_call(rid, "p", "m", [{"role": "user", "content": "x" * 500}], f"y{i}")
    for side in ("-wal", "-shm"):
        Path(str(f) + side).unlink(missing_ok=True)
    f.write_bytes(f.read_bytes()[: 3 * 4096])
    with pytest.raises(StoreError) as e:
        with Store(str(f)) as s:
            s.llm_calls_for(rid)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_another_programs_database_is_a_one_line_store_error(tmp_path: Path) -> None:
    """A SQLite file whose ``runs`` table is someone else's: refused in one line (at open or
    at the first read), never a traceback from deep in SQLAlchemy."""
    import sqlite3

    f = tmp_path / "other.db"
    with sqlite3.connect(f) as con:
        con.execute("CREATE TABLE runs (x INTEGER)")
    con.close()
    with pytest.raises(StoreError) as e:
        with Store(str(f)) as s:
            s.list_runs()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://kbench:hunter2-secret@127.0.0.1:1/kbench?connect_timeout=2",
     "postgresql://kbench:***@127.0.0.1:1/kbench?connect_timeout=2"),
    ("postgresql://kbench@127.0.0.1:1/kbench?password=hunter2-secret&connect_timeout=2",
     "postgresql://kbench@127.0.0.1:1/kbench?connect_timeout=2&password=***"),
])
def test_unreachable_server_error_hides_the_password(url: str, shown: str) -> None:
    with pytest.raises(StoreError) as e:
        Store(url)
    msg = str(e.value)
    assert "\n" not in msg and "hunter2-secret" not in msg and shown in msg
    assert "check that the PostgreSQL server is running" in msg
    with pytest.raises(StoreError, match="unsupported URL"):
        Store("nosuchdb://x/y")


def test_a_database_holding_none_of_kbenchs_tables_is_refused_untouched(tmp_path: Path) -> None:
    """Pointing --store at another program's SQLite file (no table of kbench's in it) is a
    one-line error naming its tables, and the file gains no kbench table."""
    import sqlite3

    f = tmp_path / "app.db"
    with sqlite3.connect(f) as con:
        con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.close()
    with pytest.raises(StoreError, match=r"holds another program's tables \(users\)") as e:
        Store(str(f))
    assert "\n" not in str(e.value)
    with sqlite3.connect(f) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert tables == {"users"}
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an empty SQLite file is a new store, as before
    Store(str(empty)).close()
