"""`kbench run` and the commands around it, as a user meets them: an interrupt or a signal
marks this process's own run (never another's), a run worked on by a live process cannot be
resumed by a second one, a resumed run keeps its settings, every command finds the store the
same way, a failed model call says why, and kbench.toml's [prices] is checked when read."""

from __future__ import annotations

import importlib.resources
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import kbench.cli as cli
from agents import Completion
from kbench.config import load_config
from kbench.errors import ConfigError, KbenchError
from kbench.runflow import execute
from kbench.store import Store
from tests.fakes.llm_server import Reply, llm_server_fixture  # noqa: F401 - fixture
from tests.fakes.provider import ScriptedProvider

EXAMPLES = Path(str(importlib.resources.files("kbench").joinpath("examples")))
REPLAY = f"replay:{EXAMPLES}"


def kbench(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"} | (env or {})
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env=full, timeout=timeout)


def start_run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"} | env
    return subprocess.Popen([sys.executable, "-m", "kbench.cli", "run", *args], cwd=cwd,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no kbench.toml, no $KBENCH_STORE and a private cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


# -- 1. an interrupt marks this process's own run, never the newest one -------------------------
def scripted(monkeypatch: pytest.MonkeyPatch, *, reply=None, check=None) -> None:
    """``--model scripted/x`` builds a ScriptedProvider with ``reply`` (and ``check``)."""
    import agents

    def make(model: str, *args: Any, **kw: Any) -> ScriptedProvider:
        p = ScriptedProvider(reply or (lambda *a: Completion("no code")))
        if check is not None:
            p.check = check  # type: ignore[method-assign]
        return p

    monkeypatch.setattr(agents, "make_provider", make)


def test_ctrl_c_on_an_unnamed_run_marks_its_own_run_not_the_newest(here, monkeypatch):
    """Another process starts a run while this one (no --name) is being interrupted: the
    other run is the newest in the store, and must stay running."""
    url = str(here / "kb.db")

    def reply(*_: Any) -> Completion:
        with Store(url) as other:  # another process's run, started just now
            other.create_run("someone-else")
        raise KeyboardInterrupt

    scripted(monkeypatch, reply=reply)
    console = Console(record=True, width=200)
    with pytest.raises(KeyboardInterrupt):
        execute({"model": ["scripted/x"], "problems": "level1/relu", "store": url}, None,
                None, None, lambda d: "cpu", console)
    with Store(url) as db:
        runs = {r.name: r.status.value for r in db.list_runs()}
    assert runs.pop("someone-else") == "running", runs
    [(own, status)] = runs.items()
    assert status == "interrupted"
    assert f"kbench run --resume {own}" in console.export_text()


def test_ctrl_c_before_the_run_exists_marks_nothing(here, monkeypatch):
    url = str(here / "kb.db")
    with Store(url) as db:
        db.create_run("someone-else")

    async def check() -> None:
        raise KeyboardInterrupt

    scripted(monkeypatch, check=check)
    console = Console(record=True, width=200)
    with pytest.raises(KeyboardInterrupt):
        execute({"model": ["scripted/x"], "problems": "level1/relu", "store": url}, None,
                None, None, lambda d: "cpu", console)
    with Store(url) as db:
        assert [(r.name, r.status.value) for r in db.list_runs()] == [("someone-else", "running")]
    assert "before the run was created: nothing was stored" in console.export_text()


# -- 2. SIGTERM and SIGHUP end a run as Ctrl-C does ---------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_marks_the_run_interrupted_and_says_how_to_resume(llm_server, tmp_path, sig):
    llm_server.script(Reply(delay_s=30))  # a call in flight when the signal comes
    db = tmp_path / "kb.db"
    proc = start_run(["--model", "fake-model", "--base-url", llm_server.openai_url,
                      "--problems", "level1/relu", "--device", "cpu", "--name", "sig"],
                     tmp_path, {"KBENCH_STORE": str(db)})
    wait_for(lambda: llm_server.in_flight > 0 or proc.poll() is not None, "the model call")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out + err
    assert "Traceback" not in err, err
    assert f"{sig.name} received" in out and "kbench run --resume sig" in out, out
    with Store(str(db)) as s:
        run = s.get_run("sig")
        assert run.status.value == "interrupted"
        assert s.run_owner(run.id) is None  # released: a resume may take it at once


# -- 3. a run that a live process works on cannot be resumed by another -------------------------
def test_resume_of_a_run_still_running_is_refused_until_its_process_dies(llm_server, tmp_path):
    llm_server.script(Reply(delay_s=30))
    db = tmp_path / "kb.db"
    env = {"KBENCH_STORE": str(db)}
    proc = start_run(["--model", "fake-model", "--base-url", llm_server.openai_url,
                      "--problems", "level1/relu", "--device", "cpu", "--name", "busy"],
                     tmp_path, env)
    try:
        wait_for(lambda: llm_server.in_flight > 0 or proc.poll() is not None, "the model call")
        r = kbench("run", "--resume", "busy", "--device", "cpu", cwd=tmp_path, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert f"run 'busy' is still running in pid {proc.pid} on " in r.stderr, r.stderr
        assert "stop it first, or wait" in r.stderr
        assert len(llm_server.calls("/chat/completions")) == 1  # nothing asked twice
    finally:
        proc.kill()  # SIGKILL: no chance to mark anything
        proc.communicate()
    listed = kbench("runs", "list", "--json", cwd=tmp_path, env=env)
    [row] = json.loads(listed.stdout)
    assert row["status"] == "running" and row["stale"] is True
    llm_server.script(Reply())
    r = kbench("run", "--resume", "busy", "--device", "cpu", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with Store(str(db)) as s:
        assert s.get_run("busy").status.value == "finished"


# -- 4. every command finds the store the same way ----------------------------------------------
def test_every_command_reads_the_store_kbench_toml_names(here):
    (here / "kbench.toml").write_text('store = "elsewhere.db"\n')
    r = CliRunner().invoke(cli.app, ["run", "--model", REPLAY, "--problems", "level1/relu",
                                     "--device", "cpu", "--name", "in-toml-store"])
    assert r.exit_code == 0, r.output
    for args in (["runs", "list", "--json"], ["runs", "show", "in-toml-store", "--json"],
                 ["report", "--json"]):
        r = CliRunner().invoke(cli.app, args)
        assert r.exit_code == 0 and "in-toml-store" in r.stdout, (args, r.output, r.exception)
    r = CliRunner().invoke(cli.app, ["export", "in-toml-store", "--out", "pkg", "--name", "pkg"])
    assert r.exit_code == 0, (r.output, r.exception)
    r = CliRunner().invoke(cli.app, ["eval", "--problem", "level1/relu", "--candidate",
                                     str(EXAMPLES / "level1" / "relu.py"), "--device", "cpu"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert not (here / "kbench.db").exists()
    with Store(str(here / "elsewhere.db")) as s:
        assert len(s.candidates_for(s.get_run("in-toml-store").id, "level1/relu")) == 1
        with s.engine.connect() as c:  # eval's candidate (no run) is stored there too
            n = c.exec_driver_sql("SELECT count(*) FROM candidates WHERE run_id IS NULL")
            assert n.scalar() == 1


def test_kbench_store_beats_kbench_toml_and_the_flag_beats_both(here, monkeypatch):
    (here / "kbench.toml").write_text('store = "toml.db"\n')
    for name in ("toml", "env", "flag"):
        with Store(str(here / f"{name}.db")) as s:
            s.create_run(f"in-{name}")
    r = CliRunner().invoke(cli.app, ["runs", "list", "--json"])
    assert [d["name"] for d in json.loads(r.stdout)] == ["in-toml"]
    monkeypatch.setenv("KBENCH_STORE", str(here / "env.db"))
    r = CliRunner().invoke(cli.app, ["runs", "list", "--json"])
    assert [d["name"] for d in json.loads(r.stdout)] == ["in-env"]
    r = CliRunner().invoke(cli.app, ["runs", "list", "--json", "--store", "flag.db"])
    assert [d["name"] for d in json.loads(r.stdout)] == ["in-flag"]


# -- 5. a resumed run keeps its settings --------------------------------------------------------
def test_resume_refuses_flags_that_change_what_the_run_asks(here):
    db = str(here / "kb.db")
    r = CliRunner().invoke(cli.app, ["run", "--model", REPLAY, "--problems",
                                     "level1/relu,level1/softmax", "--device", "cpu",
                                     "--name", "r", "--store", db])
    assert r.exit_code == 0, r.output
    with Store(db) as s:
        calls = len(s.llm_calls_for(s.get_run("r").id))
    r = CliRunner().invoke(cli.app, ["run", "--resume", "r", "--store", db,
                                     "--problems", "level1/matmul"])
    assert isinstance(r.exception, ConfigError), r.output
    msg = str(r.exception)
    assert msg.startswith("--problems differs from run r's level1/relu,level1/softmax: ") \
        and "start a new run with --name" in msg and "\n" not in msg, msg
    r = CliRunner().invoke(cli.app, ["run", "--resume", "r", "--store", db, "--strategy",
                                     "refine", "--model", "replay:elsewhere"])
    assert isinstance(r.exception, ConfigError), r.output
    assert str(r.exception).startswith("--model, --strategy differ from run r's"), r.exception
    # the same settings (problems in another order), budgets and the device may be given
    r = CliRunner().invoke(cli.app, ["run", "--resume", "r", "--store", db, "--problems",
                                     "level1/softmax, level1/relu", "--model", REPLAY,
                                     "--max-calls", "10", "--device", "cpu"])
    assert r.exit_code == 0, (r.output, r.exception)
    with Store(db) as s:
        assert len(s.llm_calls_for(s.get_run("r").id)) == calls


# -- 6. why a model call failed is shown --------------------------------------------------------
def test_a_failed_call_says_why_at_the_end_of_the_run_and_in_runs_show(here):
    db = str(here / "kb.db")
    why = "no recorded generation for level1/argmax sample 0"
    r = CliRunner().invoke(cli.app, ["run", "--model", REPLAY, "--problems",
                                     "level1/relu,level1/argmax", "--device", "cpu",
                                     "--name", "f", "--store", db])
    assert r.exit_code == 0, r.output
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("level1/argmax:")]
    assert "the model call failed" in line and why in line
    r = CliRunner().invoke(cli.app, ["runs", "show", "f", "--store", db])
    assert any(ln.startswith("level1/argmax:") and why in ln for ln in r.output.splitlines()), \
        r.output
    r = CliRunner().invoke(cli.app, ["runs", "show", "f", "--store", db, "--json"])
    errors = json.loads(r.stdout)["call_errors"]
    assert set(errors) == {"level1/argmax"} and why in errors["level1/argmax"]


def test_a_shown_call_error_never_shows_a_secret(here, monkeypatch):
    from kbench.runflow import show_run

    db = str(here / "kb.db")
    with Store(db) as s:
        rid = s.create_run("leak")
        pid = s.upsert_problem("level1/relu", "level1", "h", "src")
        s.add_llm_call(rid, "openai", "gpt-4o", [], "", problem_id=pid,
                       error="401 Unauthorized: key sk-proj-abcdefghijklmnop1234 rejected")
    console = Console(record=True, width=300)
    show_run("leak", db, False, console)
    text = console.export_text()
    assert "401 Unauthorized: key [redacted] rejected" in text and "abcdefghijklmnop" not in text


# -- 7. [prices] is checked when kbench.toml is read --------------------------------------------
@pytest.mark.parametrize(("entry", "why"), [
    ('{ inptu = 2, output = 1 }', "unknown key 'inptu'"),
    ('{ input = "x", output = 1 }', 'input = "x" is not a number'),
    ('{ input = 1 }', "output is missing"),
    ('{ input = -1, output = 1 }', "input = -1 is negative"),
    ("3", "expected a table of input and output prices"),
])
def test_a_bad_price_is_refused_when_the_config_is_read(here, entry, why):
    (here / "kbench.toml").write_text(f'[prices]\n"my-model" = {entry}\n')
    with pytest.raises(ConfigError) as e:
        load_config(None, {})
    assert str(e.value).startswith('kbench.toml: [prices] "my-model": ' + why), e.value
    # and before anything runs, in one line (the model priced is not even this one)
    r = CliRunner().invoke(cli.app, ["run", "--model", REPLAY, "--problems", "level1/relu",
                                     "--device", "cpu"])
    assert isinstance(r.exception, KbenchError) and why in str(r.exception)
    assert not (here / "kbench.db").exists()


def test_a_price_in_kbench_toml_prices_its_model_and_keeps_the_built_in_ones(llm_server, here):
    honest = (EXAMPLES / "level1" / "relu.py").read_text()
    llm_server.script(Reply(f"```python\n{honest}\n```", usage=(1000, 500)))
    (here / "kbench.toml").write_text('[prices]\n"fake-model" = { input = 2.0, output = 4.0 }\n')
    r = CliRunner().invoke(cli.app, ["run", "--model", "fake-model", "--base-url",
                                     llm_server.openai_url, "--problems", "level1/relu",
                                     "--device", "cpu", "--name", "p", "--max-cost", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    with Store(str(here / "kbench.db")) as s:
        [call] = s.llm_calls_for(s.get_run("p").id)
    assert call.cost_usd == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)
