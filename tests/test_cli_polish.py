"""Small faults a user meets at the command line: --knob checked against the candidate's
declared knobs, --resume with another --name, a store on a read-only disk or folder (read, never
written), a damaged store (refused before anything is written), Ctrl-C during `kbench eval`,
and --json with a flag typer refuses."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kbench.cli as cli
from kbench.errors import ConfigError, StoreError
from kbench.store import Store

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(str(importlib.resources.files("kbench").joinpath("examples")))
RELU = EXAMPLES / "level1" / "relu.py"  # TUNE = {"BLOCK": [1024, ...], "NUM_WARPS": [4, 8]}
AUTOTUNED = REPO / "tests" / "candidates" / "honest" / "relu_triton_autotune.py"


def kbench(*args: str, cwd: Path, env: dict[str, str] | None = None, prefix: list[str] = (),
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``kbench ARGS`` from this checkout (PYTHONPATH: whatever the editable install names)."""
    full = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"}
    full |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")])),
             "KBENCH_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-m", "kbench.cli", *args], cwd=cwd,
                          text=True, capture_output=True, env=full, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def main(argv: list[str], monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``kbench ARGV`` in this process, through :func:`kbench.cli.main` as the script runs it."""
    monkeypatch.setattr(sys, "argv", ["kbench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    got = capsys.readouterr()
    return int(e.value.code or 0), got.out, got.err


def one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def settle(db: Path) -> None:
    """Fold a store's WAL into its file, as a store that was closed cleanly is left."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def run_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one finished offline run, ``r1`` (relu, replayed), settled."""
    d = tmp_path_factory.mktemp("runstore")
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", "level1/relu", "--name",
               "r1", "--store", str(d / "store.db"), "--device", "cpu", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    settle(d / "store.db")
    return d / "store.db"


# -- 1. --knob is checked against the candidate's declared knobs ------------------------------
def test_a_knob_value_of_another_type_is_one_line(here, monkeypatch, capsys) -> None:
    code, out, err = main(["eval", "--problem", "level1/relu", "--candidate", str(RELU),
                           "--knob", "BLOCK=abc"], monkeypatch, capsys)
    one_line(code, err, "--knob BLOCK=abc", "BLOCK takes int values", "1024, 2048")
    assert not (here / "kbench.db").exists()  # refused before a store was opened


def test_an_unknown_knob_names_the_declared_ones(here, monkeypatch, capsys) -> None:
    code, out, err = main(["eval", "--problem", "level1/relu", "--candidate", str(RELU),
                           "--knob", "BLOK=64", "--json"], monkeypatch, capsys)
    one_line(code, err, "no knob 'BLOK'", "its knobs: BLOCK, NUM_WARPS")
    assert "BLOCK, NUM_WARPS" in json.loads(out)["error"]


def test_a_knob_for_a_candidate_without_knobs_is_one_line(here, monkeypatch, capsys) -> None:
    cand = here / "plain.py"
    cand.write_text(RELU.read_text().replace("TUNE = {", "_NOT_TUNE = {"))
    code, out, err = main(["eval", "--problem", "level1/relu", "--candidate", str(cand),
                           "--knob", "BLOCK=1024"], monkeypatch, capsys)
    one_line(code, err, "declares no knobs")


def test_knob_values_are_typed_as_the_declared_ones() -> None:
    from kbench.tuning._space import parse_knobs

    src = ('BLOCK = 64\nSCALE = 0.5\nPREC = "ieee"\nFLAG = True\n'
           'TUNE = {"BLOCK": [64, 128], "SCALE": [0.5, 1.0], "PREC": ["ieee", "tf32"], '
           '"FLAG": [True, False]}\n')
    # values beyond the grid, of the declared type, are taken (users try them)
    assert parse_knobs(src, {"BLOCK": "512", "SCALE": "2", "PREC": "64", "FLAG": "false"}) == \
        {"BLOCK": 512, "SCALE": 2.0, "PREC": "64", "FLAG": False}
    for name, text in (("BLOCK", "64.0"), ("BLOCK", "true"), ("SCALE", "x"), ("FLAG", "1")):
        with pytest.raises(ConfigError, match=f"--knob {name}={text}: {name} takes"):
            parse_knobs(src, {name: text})


def test_an_autotune_knob_is_applied_to_the_verified_and_stored_source(here) -> None:
    """A lifted @triton.autotune choice used to be set as a module global named
    ``relu_kernel.BLOCK``, which nothing read: now the kernel's configs are that one."""
    r = kbench("eval", "--problem", "level1/relu", "--candidate", str(AUTOTUNED), "--device",
               "cpu", "--knob", "relu_kernel.BLOCK=512", "--knob", "relu_kernel.num_warps=2",
               "--store", str(here / "s.db"), cwd=here)
    assert r.returncode == 0, r.stdout + r.stderr
    with Store(str(here / "s.db"), read_only=True) as db, db.engine.connect() as c:
        from sqlalchemy import text

        source, knobs = c.execute(text("SELECT source, knobs FROM candidates")).one()
    assert "configs=[triton.Config({'BLOCK': 512}, num_warps=2)]" in source
    assert json.loads(knobs) == {"relu_kernel.BLOCK": 512, "relu_kernel.num_warps": 2}


# -- 2. --resume keeps the run's name ------------------------------------------------------------
def test_resume_with_another_name_is_refused(here) -> None:
    db = Store(str(here / "s.db"))
    run_id = db.create_run("a", model="replay:x", config={"model": ["replay:x"]})
    db.set_run_status(run_id, "interrupted")
    db.close()
    settle(here / "s.db")
    before = digest(here / "s.db")
    r = CliRunner().invoke(cli.app, ["run", "--resume", "a", "--name", "b", "--store",
                                     str(here / "s.db")])
    assert isinstance(r.exception, ConfigError), r.output
    assert "--name b with --resume a: a resumed run keeps its name" in str(r.exception)
    assert digest(here / "s.db") == before  # nothing claimed, nothing written
    # the same name is no conflict: the resume goes on (and fails later, for its own reason)
    r = CliRunner().invoke(cli.app, ["run", "--resume", "a", "--name", "a", "--store",
                                     str(here / "s.db")])
    assert "--name" not in str(r.exception)


# -- 3. a store on a read-only location is read, never written -----------------------------------
def _read_only_view(d: Path) -> list[str] | None:
    """A command prefix under which folder ``d`` cannot be written: chmod where that binds
    this user (not root), else a read-only bind mount of ``d`` onto itself in a private mount
    namespace (root with CAP_SYS_ADMIN); None where neither works here."""
    if os.geteuid() != 0:
        for f in d.iterdir():
            f.chmod(0o444)
        d.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "-m", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(d)]
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{d}/probe" 2>/dev/null'],
                           capture_output=True)
    return prefix if probe.returncode == 0 and not (d / "probe").exists() else None


def test_reading_commands_read_a_store_on_a_read_only_location(run_store, tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(run_store, ro / "store.db")
    before = digest(ro / "store.db")
    prefix = _read_only_view(ro)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here: running as root without "
                    "unshare/mount (the read-only opening is tested below without it)")
    try:
        db = str(ro / "store.db")
        r = kbench("runs", "list", "--store", db, prefix=prefix, cwd=tmp_path)
        assert r.returncode == 0 and "r1" in r.stdout, r.stdout + r.stderr
        r = kbench("runs", "show", "r1", "--json", "--store", db, prefix=prefix, cwd=tmp_path)
        assert r.returncode == 0 and json.loads(r.stdout)["run"] == "r1", r.stderr
        r = kbench("report", "--json", "--store", db, prefix=prefix, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        r = kbench("export", "r1", "--out", str(tmp_path / "pkg"), "--name", "pkg", "--store",
                   db, prefix=prefix, cwd=tmp_path)
        assert r.returncode == 0 and (tmp_path / "pkg").is_dir(), r.stdout + r.stderr
        # a command that writes says so in one line, before it starts
        r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", "level1/relu",
                   "--store", db, prefix=prefix, cwd=tmp_path)
        one_line_error(r, f"the store at {db} cannot be written")
        assert digest(ro / "store.db") == before
        assert sorted(p.name for p in ro.iterdir()) == ["store.db"]
    finally:
        ro.chmod(0o755)


def test_a_read_only_store_writes_nothing(run_store, tmp_path, monkeypatch, capsys) -> None:
    """Reading commands open the store read-only (as root too, where chmod binds nothing):
    the file's bytes and time stay as they were, and a write is refused."""
    db = tmp_path / "store.db"
    shutil.copy(run_store, db)
    c = sqlite3.connect(db)  # a store made before run_owners existed
    c.execute("DROP TABLE run_owners")
    c.commit()
    c.close()
    settle(db)
    before = digest(db)
    opened: list[bool] = []
    real_init = Store.__init__

    def spy(self: Store, *a: object, **kw: object) -> None:
        real_init(self, *a, **kw)  # type: ignore[arg-type]
        opened.append(self.read_only)

    monkeypatch.setattr(Store, "__init__", spy)
    for argv in (["runs", "list"], ["runs", "show", "r1"]):
        code, out, err = main([*argv, "--store", str(db)], monkeypatch, capsys)
        assert code == 0 and "r1" in out, err
    assert opened == [True, True]
    assert digest(db) == before  # run_owners read as empty, not created
    with Store(str(db), read_only=True) as s:
        with pytest.raises(StoreError, match="opened for reading only; nothing was written"):
            s.create_run("new")
    assert digest(db) == before


def test_a_store_that_cannot_be_read_at_all_is_one_line(tmp_path, monkeypatch) -> None:
    import kbench.store._store as store_mod

    db = tmp_path / "s.db"
    Store(str(db)).close()

    def refuse(path: Path) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store_mod, "_ro_connect", refuse)
    with pytest.raises(StoreError, match=f"the store at {db} cannot be read "
                                         r"\(read-only location\?\): unable to open"):
        Store(str(db), read_only=True)


# -- 4. a damaged store is refused before anything is written -----------------------------------
def damage(db: Path) -> None:
    """Overwrite three pages in the middle of the file; its header stays intact."""
    pages = db.stat().st_size // 4096
    with open(db, "r+b") as f:
        f.seek(pages // 2 * 4096)
        f.write(b"\xff" * 3 * 4096)


def test_a_damaged_store_is_refused_for_writing(run_store, tmp_path) -> None:
    db = tmp_path / "dmg.db"
    shutil.copy(run_store, db)
    damage(db)
    before = digest(db)
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", "level1/relu", "--name",
               "r2", "--store", str(db), "--device", "cpu", cwd=tmp_path)
    one_line_error(r, f"the store at {db} is damaged (database disk image is malformed): "
                      "keep a copy, then restore it from a backup or start a new store with "
                      "--store NEW")
    assert digest(db) == before
    with pytest.raises(StoreError, match="is damaged"):
        Store(str(db))


def test_quick_check_is_skipped_on_large_stores(run_store, tmp_path, monkeypatch) -> None:
    import kbench.store._store as store_mod

    db = tmp_path / "dmg.db"
    shutil.copy(run_store, db)
    damage(db)
    monkeypatch.setattr(store_mod, "QUICK_CHECK_MAX_BYTES", db.stat().st_size - 1)
    Store(str(db), read_only=False).close()  # (too large to check on every opening)


# -- 5. Ctrl-C during kbench eval ----------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_during_eval_says_nothing_was_stored_and_leaves_no_child(tmp_path) -> None:
    full = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"}
    full |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")])),
             "KBENCH_CACHE_DIR": str(tmp_path / "cache"), "KBENCH_KEEP_SERVER": "0"}
    db = tmp_path / "s.db"
    # BLOCK=2: the interpreter runs a program per two elements, for long enough to interrupt
    p = subprocess.Popen([sys.executable, "-m", "kbench.cli", "eval", "--problem",
                          "level1/relu", "--candidate", str(RELU), "--device", "cpu",
                          "--knob", "BLOCK=2", "--store", str(db)], cwd=tmp_path, env=full,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:  # until the candidate's child runs
        kids = _descendants(p.pid)
        seen |= kids
        if any(_descendants(k) for k in kids):
            break
        time.sleep(0.1)
    assert p.poll() is None, "eval ended before it could be interrupted"
    time.sleep(0.5)
    seen |= _descendants(p.pid)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert err.strip() == "interrupted: nothing was stored for this candidate", err
    deadline = time.monotonic() + 10
    while any(_running(k) for k in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [k for k in seen if _running(k)]
    with Store(str(db), read_only=True) as s, s.engine.connect() as c:
        from sqlalchemy import text

        assert c.execute(text("SELECT count(*) FROM candidates")).scalar() == 0


# -- 6. --json: a flag typer refuses is JSON too -------------------------------------------------
@pytest.mark.parametrize("argv", [["runs", "list", "--json", "--bogus"],
                                  ["report", "--bogus", "--json"],
                                  ["runs", "show", "--json"]])
def test_json_with_a_flag_typer_refuses_prints_json(here, monkeypatch, capsys, argv) -> None:
    code, out, err = main(argv, monkeypatch, capsys)
    one_line(code, err)
    assert json.loads(out)["error"] in ("No such option: --bogus", "Missing argument 'run'.")


def test_json_commands_still_answer_and_exit_as_before(here, monkeypatch, capsys) -> None:
    code, out, err = main(["runs", "list", "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out) == []
    code, out, err = main(["runs", "show", "nope", "--json"], monkeypatch, capsys)
    one_line(code, err, "no run named 'nope'")
    assert "no run named" in json.loads(out)["error"]
    code, out, err = main(["problems", "list", "level1/relu", "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["problems"][0]["id"] == "level1/relu"


def test_a_finished_run_leaves_everything_in_the_store_file(tmp_path):
    """The console script leaves with os._exit; the store's connections are closed first, so
    SQLite folds its -wal file into kbench.db, and a copy of kbench.db alone holds the run
    (it once held nothing: the run sat in kbench.db-wal)."""
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", "level1/relu",
               "--name", "walrun", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    wal = tmp_path / "kbench.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the run was left in the -wal file"
    copy = tmp_path / "copy" / "only.db"
    copy.parent.mkdir()
    shutil.copy(tmp_path / "kbench.db", copy)
    assert [run.name for run in Store(str(copy), read_only=True).list_runs()] == ["walrun"]


@pytest.mark.parametrize("args", [[], ["problems"], ["runs"]])
def test_help_lists_each_command_on_whole_lines(args):
    """`kbench --help`'s command table flows each docstring as one paragraph: typer's rich
    help kept the docstrings' line breaks, and `tune`, `report` and `export` read
    "... with Optuna, per" / "shape; store ..." on lines cut mid-sentence."""
    r = CliRunner().invoke(cli.app, [*args, "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    group = {(): cli.app, ("problems",): cli.problems_app, ("runs",): cli.runs_app}[tuple(args)]
    for info in group.registered_commands:
        doc = info.help or ""
        assert "\n" not in doc.split("\n\n")[0] and "``" not in doc, info.name
    panel = r.output[r.output.index("Commands"):].splitlines()[1:]
    rows = [ln.strip()[1:-1] for ln in panel if ln.strip().startswith("│")]
    start = len(rows[0]) - len(rows[0].split(maxsplit=1)[1])  # where descriptions begin
    width = len(rows[0]) - start - 1
    for line, nxt in zip(rows, rows[1:]):
        if nxt[:start].strip():  # the next row is another command's
            continue
        text, word = line[start:].rstrip(), nxt[start:].split()[0]
        assert len(text) + 1 + len(word) > width, f"line cut short before {word!r}:\n{r.output}"
