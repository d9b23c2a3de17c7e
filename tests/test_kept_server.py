"""The kept fork server: it outlives the command that started it, so the next command finds
torch and Triton imported; it serves its user's commands but never a candidate; it leaves
when idle, is replaced when killed, is shared by commands started together, is never reused
by a changed sandbox, and is not kept in a directory another user could write to.

Each "command" is a fresh ``python -c`` that verifies the honest ReLU through the fork-server
backend and prints the server's pid (CPU, Triton interpreter)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from sandbox._forkserver import pack_request
from sandbox.backends import available_backends
from sandbox.errors import ConfigError
from tests.fakes.relu import RELU

pytestmark = pytest.mark.skipif("forkserver" not in available_backends(),
                                reason="the fork server needs Linux and os.fork")

ROOT = Path(__file__).resolve().parents[1]

# One command: verify SOURCE (the honest ReLU unless a test gives another) and say which
# server forked the child.
_COMMAND = textwrap.dedent('''
    import json, sys
    from kbench.problems import load
    from sandbox import Limits, verify
    from sandbox.backends import ForkServerBackend
    source = open(sys.argv[1]).read()
    v = verify(load("level1/relu")[0], source, device="cpu", static_policy=False,
               isolation=ForkServerBackend(),
               limits=Limits(import_s=120, check_s=60, trials=1, derived_trials=1,
                             max_derived=1))
    print(json.dumps({"server": ForkServerBackend.server_pid(), "status": v.status.value,
                      "reason": v.reason}))
''')


@pytest.fixture
def kept(monkeypatch):
    """A private directory for kept servers (short: a socket path has at most 107 bytes),
    keeping on for 60 s; every server left in it is stopped afterwards."""
    base = Path(tempfile.mkdtemp(prefix="kbk-"))
    monkeypatch.setenv("KBENCH_SERVER_DIR", str(base))
    monkeypatch.setenv("KBENCH_KEEP_SERVER", "60")
    yield base
    from sandbox.backends._forkserver import stop_kept_servers

    for pid in stop_kept_servers():
        _wait_gone(pid)
    shutil.rmtree(base, ignore_errors=True)


def _command(tmp_path: Path, source: str = RELU, env: dict[str, str] | None = None,
             wait: bool = True) -> subprocess.Popen[str] | dict:
    cand = tmp_path / f"cand{time.monotonic_ns()}.py"
    cand.write_text(source)
    p = subprocess.Popen([sys.executable, "-c", _COMMAND, str(cand)], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, **(env or {})})
    return _result(p) if wait else p


def _result(p: subprocess.Popen[str]) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["status"] == "correct", rep["reason"]
    return rep


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, wait_s: float = 15.0) -> bool:
    end = time.monotonic() + wait_s
    while _alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _socks(base: Path) -> list[Path]:
    return sorted(base.glob("fs-*/sock"))


def _ping(sock: Path) -> dict | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(str(sock))
        conn.sendall(pack_request({"ping": True}))
        data = conn.recv(1 << 16)
        return json.loads(data) if data else None
    finally:
        conn.close()


def test_the_next_command_forks_from_the_server_the_first_one_left(kept, tmp_path):
    first = _command(tmp_path)
    assert _alive(first["server"]), "the kept server left with the command that started it"
    (sock,) = _socks(kept)
    assert _ping(sock) == {"pong": first["server"]}
    second = _command(tmp_path)
    assert second["server"] == first["server"]
    assert oct(kept.stat().st_mode & 0o777) == "0o700"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"


def test_a_kept_server_leaves_when_idle_and_takes_its_socket_away(kept, tmp_path, monkeypatch):
    monkeypatch.setenv("KBENCH_KEEP_SERVER", "1")
    rep = _command(tmp_path)
    assert _wait_gone(rep["server"], 20), "the kept server outlived its idle time"
    assert _socks(kept) == []


def test_commands_started_together_share_one_server(kept, tmp_path):
    procs = [_command(tmp_path, wait=False) for _ in range(3)]
    servers = {_result(p)["server"] for p in procs}
    assert len(servers) == 1, servers
    assert len(_socks(kept)) == 1


def test_a_killed_kept_server_is_replaced_by_the_next_command(kept, tmp_path):
    old = _command(tmp_path)["server"]
    os.kill(old, signal.SIGKILL)
    assert _wait_gone(old)
    (sock,) = _socks(kept)  # its socket stays behind: nobody answers there
    new = _command(tmp_path)["server"]
    assert new != old and _alive(new)
    assert _ping(sock) == {"pong": new}


def test_a_changed_sandbox_environment_gets_its_own_server(kept, tmp_path):
    a = _command(tmp_path)["server"]
    b = _command(tmp_path, env={"MAX_JOBS": "3"})["server"]  # allowlisted: children see it
    assert a != b and _alive(a) and _alive(b)
    assert len(_socks(kept)) == 2


def test_no_candidate_can_ask_a_kept_server_for_anything(kept, tmp_path):
    """A candidate (a descendant of the server) that connects to its socket gets nothing,
    neither a ping's answer nor a child; the command beside it still does."""
    first = _command(tmp_path)
    (sock,) = _socks(kept)
    report = tmp_path / "asked.json"
    probe = textwrap.dedent(f'''
        import json as _json, socket as _socket, struct as _struct
        _answers = []
        for _body in ({{"ping": True}}, {{"work": "/", "env": {{}}, "argv": []}}):
            _c = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            _c.settimeout(10)
            try:
                _c.connect({str(sock)!r})
                _data = _json.dumps(_body).encode()
                _c.sendall(_struct.pack(">I", len(_data)) + _data)
                _answers.append(_c.recv(1 << 16).decode())
            except OSError as _e:
                _answers.append("error: " + type(_e).__name__)
            finally:
                _c.close()
        open({str(report)!r}, "w").write(_json.dumps(_answers))
    ''')
    rep = _command(tmp_path, probe + RELU)
    assert rep["server"] == first["server"]
    answers = json.loads(report.read_text())
    assert len(answers) == 2
    assert not any("pong" in a or "pid" in a for a in answers), answers
    assert _ping(sock) == {"pong": first["server"]}  # this process is no descendant


def test_a_kept_server_is_not_dumpable_and_its_children_are(kept, tmp_path):
    """Non-dumpable, no process of the user can attach to the server or write its memory
    (to poison what every later child inherits); each child is dumpable again, so that its
    own job can still read its ``/proc`` entries (the sweep of escaped processes does)."""
    report = tmp_path / "dumpable.json"
    probe = textwrap.dedent(f'''
        import ctypes as _ct, json as _json
        open({str(report)!r}, "w").write(_json.dumps(
            _ct.CDLL(None).prctl(3, 0, 0, 0, 0)))  # PR_GET_DUMPABLE
    ''')
    rep = _command(tmp_path, probe + RELU)
    assert json.loads(report.read_text()) == 1
    if os.getuid() != 0:  # a non-dumpable process's /proc entries belong to root
        assert os.stat(f"/proc/{rep['server']}").st_uid == 0


def test_set_dumpable_turns_the_flag_off_for_a_process_and_what_it_forks():
    import ctypes

    from sandbox._forkserver import set_dumpable

    get = ctypes.CDLL(None).prctl
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = set_dumpable(False)
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(get(3, 0, 0, 0, 0))
            _, status = os.waitpid(grandchild, 0)
            code = 0 if ok and get(3, 0, 0, 0, 0) == 0 and os.waitstatus_to_exitcode(status) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get(3, 0, 0, 0, 0) == 1  # this process untouched


def test_a_directory_others_can_write_to_keeps_no_server(kept, tmp_path, monkeypatch):
    shared = Path(tempfile.mkdtemp(prefix="kbs-"))
    try:
        shared.chmod(0o777)
        monkeypatch.setenv("KBENCH_SERVER_DIR", str(shared))
        rep = _command(tmp_path)
        assert _wait_gone(rep["server"]), "a server was kept in a shared directory"
        assert list(shared.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("raw", ["soon", "-5", "inf"])
def test_a_bad_keep_setting_says_what_to_write(monkeypatch, raw):
    from sandbox.backends._forkserver import keep_seconds

    monkeypatch.setenv("KBENCH_KEEP_SERVER", raw)
    with pytest.raises(ConfigError, match=r"KBENCH_KEEP_SERVER=.*0 to stop it"):
        keep_seconds()
    monkeypatch.setenv("KBENCH_KEEP_SERVER", "0")
    assert keep_seconds() is None
    monkeypatch.delenv("KBENCH_KEEP_SERVER")
    assert keep_seconds() == 600.0
