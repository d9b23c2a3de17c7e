"""PostgreSQL as the store, through the CLI and the tuner: a run, its listing and its Optuna
study on a real server (``$KBENCH_TEST_PG_URL``; skipped with the reason when none answers),
and an unreachable server refused in one line that never shows the password.

The Store's own behaviour on PostgreSQL (round trips, concurrent writers) is the contract
suite's: tests/contracts/test_store_contract.py and tests/test_store.py run on both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from kbench.store import Store
from kbench.tuning import open_storage, tune
from sandbox.problem import load_file
from tests.contracts.test_store_contract import count, pg_database
from tests.test_tuning import CANDIDATE, PROBLEM, fake_objective

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "postgresql://kb:hunter2-pw@127.0.0.1:1/kb?connect_timeout=3"
SHOWN = "postgresql://kb:***@127.0.0.1:1/kb"


def kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"}
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def connections(url: str) -> int:
    """Other sessions of this user open on the server now."""
    with Store(url) as s, s.engine.connect() as c:
        n = c.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user "
            "AND datname = current_database() AND pid <> pg_backend_pid()").scalar_one()
    return n


def one_line_refusal(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert SHOWN in r.stderr and "check that the PostgreSQL server is running" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr


def test_an_unreachable_server_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    """``--store`` or kbench.toml's ``store`` naming a server that does not answer: every
    command says so in one line (URL shown, password masked, what to check), exits 2, and
    the SQLite store beside it is left byte for byte."""
    with Store(str(tmp_path / "kbench.db")) as local:
        local.create_run("kept")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args in (["runs", "list"], ["runs", "show", "kept"], ["report"],
                 ["export", "kept", "--out", "pkg", "--name", "pkg"]):
        one_line_refusal(kbench(*args, "--store", UNREACHABLE, cwd=tmp_path))
    (tmp_path / "kbench.toml").write_text(f'store = "{UNREACHABLE}"\n')
    one_line_refusal(kbench("run", "--model", f"replay:{REPO / 'kbench' / 'examples'}",
                            "--problems", "level1/relu", cwd=tmp_path))
    (tmp_path / "kbench.toml").unlink()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with Store(str(tmp_path / "kbench.db")) as local:
        assert [r.name for r in local.list_runs()] == ["kept"]


def test_a_run_stored_on_postgresql_end_to_end(tmp_path: Path) -> None:
    """kbench.toml's ``store`` on a real server: the run, its listing, its details and the
    report all come from PostgreSQL; no SQLite file appears; the password is never printed
    nor stored."""
    with pg_database() as url:
        password = make_url(url).password
        (tmp_path / "kbench.toml").write_text(f"store = {json.dumps(url)}\n")
        r = kbench("run", "--model", f"replay:{REPO / 'kbench' / 'examples'}", "--problems",
                   "level1/relu", "--name", "pg-demo", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        shown = kbench("runs", "show", "pg-demo", "--json", "--store", url, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        run = json.loads(shown.stdout)
        assert run["status"] == "finished" and run["results"]["level1/relu"]["status"] == "correct"
        listed = kbench("runs", "list", "--json", "--store", url, cwd=tmp_path)
        assert listed.returncode == 0 and "pg-demo" in listed.stdout, listed.stderr
        report = kbench("report", "--store", url, cwd=tmp_path)
        assert report.returncode == 0 and "pg-demo" in report.stdout, report.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kbench.toml"]
        assert count(url, "runs") == 1 and count(url, "verdicts") >= 1
        if password:
            for out in (r, shown, listed, report):
                assert password not in out.stdout + out.stderr
            assert password not in run["config"]["store"] and ":***@" in run["config"]["store"]
            with Store(url) as s, s.engine.connect() as c:
                rows = c.exec_driver_sql("SELECT config::text FROM runs").all()
            assert password not in repr(rows)


def test_a_tuning_study_lives_in_the_postgresql_store(tmp_path: Path) -> None:
    """tune() on a PostgreSQL store: Optuna's study is in that database (resumed by a second
    call, not duplicated), the best re-verified configuration in the store's table."""
    p = tmp_path / "double.py"
    p.write_text(PROBLEM)
    problem = load_file(p)
    with pg_database() as url:
        kw = dict(device="cpu", storage_url=url, study_name="pg", sampler="grid", seed=0,
                  objective=fake_objective, shapes=["small"])
        before = connections(url)
        first = tune(problem, CANDIDATE, n_trials=2, **kw)
        assert connections(url) <= before  # its store and Optuna's engine closed on return
        second = tune(problem, CANDIDATE, n_trials=1, **kw)
        assert first.evaluated == 2 and second.evaluated == 1
        with Store(url) as store:
            study = optuna.load_study(study_name="pg", storage=open_storage(store))
            evaluated = [t for t in study.trials if "repeat_of" not in t.user_attrs]
            assert len(evaluated) == 3
            assert [t.number for t in study.trials] == list(range(len(study.trials)))
            (row,) = store.tuned_configs(problem_key=problem.key)
            assert (row.shape_name, row.knobs, row.median_ms, row.study_name) == (
                "small", {"BLOCK": 32}, 1.0, "pg")
        assert count(url, "studies") == 1 and count(url, "tuned_configs") == 1
