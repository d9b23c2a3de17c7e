"""The result store: round trips, durability, concurrency and clear errors.

Tests taking ``store`` or ``url`` run on both backends: SQLite (a file) and PostgreSQL (a
fresh schema on ``$KBENCH_TEST_PG_URL``'s server, skipped with the reason when none answers).
Tests taking ``db``/``sqlite_store`` are about SQLite files themselves."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from kbench.errors import StoreError
from kbench.store import RunStatus, Store
from sandbox.verdict import ShapeResult, Status, Timing, Verdict
from tests.contracts.test_store_contract import pg_database

FP = "fp0123"


def _timing(ms: float) -> Timing:
    return Timing(median_ms=ms, iqr_ms=0.01, mean_ms=ms, min_ms=ms * 0.9, count=50, rse=0.004)


def _verdict(status: Status = Status.CORRECT, speedup: float | None = 1.7, **kw: object) -> Verdict:
    shape = ShapeResult(
        name="base", params={"N": 4096, "dtype": "float16"}, derived=False, trials=3,
        passed=status is Status.CORRECT, max_abs_err=1e-4, max_rel_err=2e-3, rel_l2_err=5e-5,
        timing=_timing(0.5), eager=_timing(0.85), compiled=None, speedup_eager=speedup,
        roofline_ms=0.2, sol_pct=40.0,
    )
    odd = ShapeResult(name="derived_0", params={"N": 4231}, derived=True, trials=2,
                      passed=False, reason="3 of 4231 elements differ", max_abs_err=math.inf)
    fields = dict(problem="level1/relu", status=status, reason="ok", device="cuda:0",
                  backend="triton", shapes=(shape, odd), speedup_eager=speedup,
                  speedup_compile=None if speedup is None else speedup / 2, sol_pct=40.0,
                  timing_available=speedup is not None,
                  fingerprint={"gpu": "H100", "driver": "550"}, wall_s=3.2, log_tail="tail")
    fields.update(kw)
    return Verdict(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kb.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, db: Path) -> Iterator[str]:
    """An empty store of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{db}"
        return
    with pg_database() as pg:
        yield pg


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as s:
        yield s


@pytest.fixture
def sqlite_store(db: Path) -> Iterator[Store]:
    with Store(str(db)) as s:
        yield s


def _dump(store: Store) -> str:
    """Every row of every table, as the database returns them."""
    with store.engine.connect() as c:
        return "\n".join(repr(c.execute(text(f'SELECT * FROM "{t}"')).all())
                         for t in inspect(c).get_table_names())


def _candidate(store: Store, run: int | None = None, key: str = "level1/relu") -> int:
    pid = store.upsert_problem(key, "level1", "h" + key, "class Model: ...")
    return store.add_candidate(pid, "class ModelNew: ...", "triton", run_id=run, origin="llm")


def test_verdict_round_trip(store: Store) -> None:
    v = _verdict()
    cid = _candidate(store)
    vid = store.add_verdict(cid, v, FP)
    (rec,) = store.verdicts_for_candidate(cid)
    assert rec.id == vid and rec.status is Status.CORRECT and rec.passed
    assert rec.speedup_eager == 1.7 and rec.fingerprint_hash == FP
    assert Verdict.from_dict(rec.payload) == v  # infinities survive the JSON column
    assert rec.verdict() == v


def test_sqlite_is_wal_with_foreign_keys(sqlite_store: Store, db: Path) -> None:
    with sqlite3.connect(db) as con:  # an outside connection sees the file's mode
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite_store.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(StoreError) as e:
        store.add_verdict(12345, _verdict(), FP)  # no such candidate
    assert "\n" not in str(e.value)
    with store.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM verdicts")).scalar() == 0


def test_plain_path_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    Store().close()
    assert (tmp_path / "kbench.db").exists()
    monkeypatch.setenv("KBENCH_STORE", str(tmp_path / "env.db"))
    with Store() as s:
        assert s.url.endswith("env.db")
    assert (tmp_path / "env.db").exists()


def test_run_lifecycle_and_duplicate_name(store: Store) -> None:
    rid = store.create_run("r1", model="fake", strategy="one-shot", config={"budget": 3})
    run = store.get_run("r1")
    assert run is not None and run.id == rid and run.status is RunStatus.RUNNING
    assert run.config == {"budget": 3} and run.created_at.tzinfo is not None
    with pytest.raises(StoreError, match="already exists.*--resume"):
        store.create_run("r1")
    store.set_run_status(rid, "finished")
    assert store.get_run("r1").status == "finished"
    with pytest.raises(ValueError):
        store.set_run_status(rid, "done")
    assert store.get_run("nope") is None
    store.create_run("r2")
    assert [r.name for r in store.list_runs()] == ["r1", "r2"]


@pytest.mark.parametrize(
    "url, words",
    [
        ("{tmp}/no/such/dir/kb.db", "does not exist"),
        ("{tmp}", "is a directory"),
        ("postgresql://u:hunter2@127.0.0.1:1/kb", "postgresql://u:***@127.0.0.1:1/kb"),
        ("postgresql://u:hunter2@127.0.0.1:1/kb", "check that the PostgreSQL server is running"),
        ("nosuchdb://x/y", "unsupported URL"),
    ],
)
def test_bad_store_is_one_line_store_error(tmp_path: Path, url: str, words: str) -> None:
    with pytest.raises(StoreError) as e:
        Store(url.format(tmp=tmp_path))
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "hunter2" not in msg


def test_not_a_database_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open store") as e:
        Store(str(bad))
    assert "\n" not in str(e.value)


def test_problem_upsert_and_candidates_for_resume(store: Store) -> None:
    rid = store.create_run("r")
    p1 = store.upsert_problem("level1/relu", "level1", "abc", "src")
    assert store.upsert_problem("level1/relu", "level1", "abc", "src") == p1
    assert store.upsert_problem("level1/relu", "level1", "def", "src2") != p1
    assert store.get_problem(p1).source_hash == "abc"
    c1 = store.add_candidate(p1, "v1", "triton", run_id=rid, origin="llm", knobs={"BLOCK": 128})
    c2 = store.add_candidate(p1, "v2", "cuda", run_id=rid, origin="llm", parent_id=c1, attempt=1)
    store.add_verdict(c1, _verdict(Status.INCORRECT, None), FP)
    store.add_verdict(c1, _verdict(Status.CORRECT, 1.1), FP)
    cands = store.candidates_for(rid, "level1/relu")
    assert [c.id for c in cands] == [c1, c2]
    assert cands[0].knobs == {"BLOCK": 128} and cands[0].verdict.status is Status.CORRECT
    assert cands[1].parent_id == c1 and cands[1].attempt == 1 and cands[1].verdict is None
    assert store.candidates_for(rid, "level1/other") == []


def test_results_pick_best_and_count_attempts(store: Store) -> None:
    rid = store.create_run("r")
    other = store.create_run("other")
    a = _candidate(store, rid, "s/a")
    store.add_verdict(a, _verdict(Status.CORRECT, 3.0), FP)
    store.add_verdict(a, _verdict(Status.CORRECT, 1.2), FP)  # later but slower
    store.add_verdict(a, _verdict(Status.TIMEOUT, None), FP)
    b = _candidate(store, rid, "s/b")
    store.add_verdict(b, _verdict(Status.INCORRECT, None, reason="first"), FP)
    store.add_verdict(b, _verdict(Status.COMPILE_ERROR, None, reason="latest"), FP)
    _candidate(store, rid, "s/c")  # never verified
    pid = store.upsert_problem("s/d", "s", "hd", "src")  # an LLM call, no candidate
    store.add_llm_call(rid, "fake", "m", [{"role": "user", "content": "hi"}], "", problem_id=pid,
                       error="refused")
    store.add_verdict(_candidate(store, other, "s/e"), _verdict(), FP)
    res = dict(store.results(rid))
    assert sorted(res) == ["s/a", "s/b", "s/c", "s/d"]
    assert res["s/a"]["speedup_eager"] == 3.0
    assert res["s/b"]["reason"] == "latest"
    assert res["s/c"] is None and res["s/d"] is None


def test_results_and_the_live_view_use_the_scores_best_verdict_rule(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """One best-verdict rule: kbench.scoring.best_verdict, given each problem's verdicts oldest
    first, decides the store's results and the runner's live status alike."""
    import kbench.scoring
    import kbench.store._store
    from kbench.runner import ProblemState

    assert kbench.store._store.best_verdict is kbench.scoring.best_verdict
    rid = store.create_run("r")
    a = _candidate(store, rid, "s/a")
    verdicts = [_verdict(Status.CORRECT, 1.2, reason="slow"), _verdict(Status.CORRECT, None),
                _verdict(Status.CORRECT, 3.0, reason="fast"), _verdict(Status.TIMEOUT, None)]
    for v in verdicts:
        store.add_verdict(a, v, FP)
    seen: list[list[str]] = []

    def spy(vs):
        seen.append([v["status"] if isinstance(v, dict) else v.status.value for v in vs])
        return kbench.scoring.best_verdict(vs)

    monkeypatch.setattr(kbench.store._store, "best_verdict", spy)
    assert dict(store.results(rid))["s/a"]["reason"] == "fast"
    assert seen == [["correct", "correct", "correct", "timeout"]]  # every verdict, oldest first
    st = ProblemState("s/a")
    for v in verdicts:
        st.add_verdict(v)
    assert (st.best, st.best_speedup, st.last) == ("correct", 3.0, "timeout")
    monkeypatch.setattr("kbench.runner.best_verdict", lambda vs: vs[0])  # a different rule...
    st = ProblemState("s/a")
    for v in verdicts:
        st.add_verdict(v)
    assert st.best_speedup == 1.2  # ...is the one the live view follows


def test_baselines_and_device_facts(store: Store) -> None:
    key = ("level1/relu", "h", "base", "eager", FP)
    assert store.get_baseline(*key) is None
    bid = store.put_baseline(*key, _timing(0.8), shape={"N": 4096}, fingerprint={"gpu": "H100"})
    rec = store.get_baseline(*key)
    assert rec.id == bid and rec.median_ms == 0.8 and rec.timing == _timing(0.8)
    assert rec.shape == {"N": 4096}
    assert store.put_baseline(*key, _timing(0.7)) == bid  # replaced, not duplicated
    assert store.get_baseline(*key).timing == _timing(0.7)
    assert store.get_baseline("level1/relu", "h", "base", "compile", FP) is None
    with pytest.raises(ValueError):
        store.put_baseline("k", "h", "base", "inductor", FP, _timing(1.0))
    assert store.get_device_facts(FP) is None
    store.put_device_facts(FP, {"gpu": "H100"}, {"hbm_gbps": 3000.0, "tflops_bf16": 700.0})
    store.put_device_facts(FP, {"gpu": "H100"}, {"hbm_gbps": 3100.0})
    assert store.get_device_facts(FP).facts == {"hbm_gbps": 3100.0}


def test_llm_call_never_stores_secrets(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-0123456789abcdefghijXYZ"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    rid = store.create_run("r")
    msgs = [{"role": "user", "content": f"key is {secret}", "headers": {"Authorization": "x"}}]
    cid = store.add_llm_call(rid, "openai", "gpt-x", msgs, "done", usage={"api_key": secret,
                             "input_tokens": 10}, input_tokens=10, output_tokens=5,
                             cost_usd=0.01, latency_s=1.5, error=f"401 for {secret}")
    (call,) = store.llm_calls_for(rid)
    assert call.id == cid and call.input_tokens == 10 and call.usage == {"input_tokens": 10}
    assert call.prompt == [{"role": "user", "content": "key is [redacted]"}]
    dump = _dump(store)
    assert "key is [redacted]" in dump  # the dump holds the call...
    assert secret not in dump and "Authorization" not in dump  # ...and no secret


def test_stored_calls_and_provider_errors_share_one_scrubber(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """agents.redact is the one scrubber: what a provider error hides, the store hides too,
    on both write paths (add_llm_call and add_attempt build the row in one place)."""
    import agents.providers._base
    import agents.redact
    import kbench.store._store

    assert agents.providers._base.redact is agents.redact.redact
    assert kbench.store._store.redact is agents.redact.redact
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    text = ("masked sk-proj-****wxyz, Bearer abcdefghijklmnopqrst and tok-0123456789; "
            "keep task-0123456789 and ask-me")
    expect = ("masked [redacted], [redacted] and [redacted]; keep task-0123456789 and ask-me")
    assert agents.providers._base.scrub(text) == expect
    rid = store.create_run("r")
    pid = store.upsert_problem("s/a", "s", "h", "src")
    store.add_llm_call(rid, "p", "m", [{"role": "user", "content": text}], text, error=text)
    store.add_attempt(rid, pid, "p", "m", [{"role": "user", "content": text}], text,
                      source=None, backend="triton", error=text, usage={"note": text})
    for call in store.llm_calls_for(rid):
        assert call.response == call.error == call.prompt[0]["content"] == expect
    assert call.usage == {"note": expect}


def test_concurrent_add_verdict_all_committed(store: Store, url: str) -> None:
    cid = _candidate(store)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(15):
                store.add_verdict(cid, _verdict(speedup=1.0 + i + j / 100), FP)
        except BaseException as e:  # surfaced below; a thread would swallow it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.verdicts_for_candidate(cid)) == 60
    with Store(url) as fresh:
        assert len(fresh.verdicts_for_candidate(cid)) == 60


def test_verdict_survives_crash_after_add(url: str) -> None:
    first = Store(url)  # never closed: the "process" dies
    cid = _candidate(first)
    with pytest.raises(RuntimeError):
        first.add_verdict(cid, _verdict(speedup=2.5), FP)
        raise RuntimeError("worker crashed right after storing the verdict")
    with Store(url) as reopened:
        (rec,) = reopened.verdicts_for_candidate(cid)
        assert rec.verdict() == _verdict(speedup=2.5)


def test_verdict_survives_hard_exit_of_writer(url: str) -> None:
    """A writer process killed (``os._exit``: no cleanup, no close) right after add_verdict."""
    script = (
        "import os, sys\n"
        "from kbench.store import Store\n"
        "from sandbox.verdict import Status, Verdict\n"
        "s = Store(sys.argv[1])\n"
        "pid = s.upsert_problem('k', None, 'h', 'src')\n"
        "cid = s.add_candidate(pid, 'cand', 'triton')\n"
        "s.add_verdict(cid, Verdict('k', Status.CORRECT, 'ok', 'cpu', 'triton'), 'fp')\n"
        "print(cid, flush=True)\n"
        "os._exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, url], capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]
    with Store(url) as reopened:
        (rec,) = reopened.verdicts_for_candidate(int(proc.stdout.split()[-1]))
        assert rec.passed and rec.reason == "ok"


# -- who works on a run: claims, heartbeats, stale owners ----------------------------------------
def test_a_run_owned_by_a_live_process_cannot_be_claimed_until_it_dies(store: Store) -> None:
    """Another process of this host owns the run: refused while it lives (its pid and start
    match), taken over once it is gone; the previous owner is returned as stale."""
    from kbench.store import RunBusyError

    rid = store.create_run("r")
    script = ("import sys, time\nfrom kbench.store import Store\n"
              "s = Store(sys.argv[1]); s.claim_run(int(sys.argv[2]))\n"
              "print('claimed', flush=True); time.sleep(120)\n")
    other = subprocess.Popen([sys.executable, "-c", script, store.engine.url.render_as_string(
        hide_password=False), str(rid)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "claimed"
        with pytest.raises(RunBusyError) as e:
            store.claim_run(rid)
        assert str(e.value).startswith(f"run 'r' is still running in pid {other.pid} on ")
        assert str(e.value).endswith("stop it first, or wait") and "\n" not in str(e.value)
        assert not store.heartbeat(rid)  # not this process's run: nothing written
        store.release_run(rid)  # not this process's either: a no-op
        assert store.run_owner(rid).pid == other.pid and store.run_owner(rid).alive()
    finally:
        other.kill()
        other.wait()
    assert not store.run_owner(rid).alive()
    stale = store.claim_run(rid)
    assert stale is not None and stale.pid == other.pid
    owner = store.run_owner(rid)
    assert owner.is_this_process and owner.alive() and store.heartbeat(rid)
    assert store.claim_run(rid) is None  # claiming again is harmless
    store.release_run(rid)
    assert store.run_owner(rid) is None


def test_an_owner_on_another_host_is_alive_while_its_heartbeat_is_fresh(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    import kbench.store._owners as owners
    from kbench.store import RunBusyError

    rid = store.create_run("r")
    here = owners.this_process()
    monkeypatch.setattr(owners, "this_process", lambda: ("elsewhere", 4242, "boot:1"))
    store.claim_run(rid)
    monkeypatch.setattr(owners, "this_process", lambda: here)
    with pytest.raises(RunBusyError, match="still running in pid 4242 on elsewhere"):
        store.claim_run(rid)
    old = owners._now() - timedelta(seconds=owners.STALE_AFTER_S + 1)
    with store.engine.begin() as c:
        c.execute(text("UPDATE run_owners SET heartbeat_at = :t"), {"t": old})
    assert store.claim_run(rid).host == "elsewhere"  # gone: taken over
    assert store.run_owner(rid).is_this_process


def test_a_store_from_before_run_owners_opens_and_its_runs_can_be_claimed(db: Path) -> None:
    """The table is added by create_all on an existing store: nothing else changes."""
    with Store(str(db)) as s:
        rid = s.create_run("old")
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE run_owners")
    with Store(str(db)) as s:
        assert "run_owners" in inspect(s.engine).get_table_names()
        assert s.get_run("old").id == rid and s.run_owner(rid) is None
        assert s.claim_run(rid) is None and s.run_owner(rid).is_this_process
