"""User-facing faults found by an audit: `kbench export --force` never deletes what is not
an export, broken problem files and unwritable paths are one line (exit 2), report filters
that select nothing are errors, and fast_p that needs timing is never shown as a number on a
run without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kbench.errors import ConfigError, ProblemError
from kbench.store import Store

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kbench" / "examples"


def kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's kbench
    env.pop("KBENCH_STORE", None)
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)


def one_line_error(r: subprocess.CompletedProcess[str], needle: str, code: int = 2) -> str:
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding replay run ``demo`` (level1/relu, level1/softmax, on CPU: untimed)
    and run ``empty`` (no problems)."""
    d = tmp_path_factory.mktemp("ux")
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems",
               "level1/relu,level1/softmax", "--device", "cpu", "--name", "demo",
               "--store", "demo.db", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    db = Store(str(d / "demo.db"))
    db.create_run("empty", model="m")
    db.close()
    return d / "demo.db"


# -- 1. export --force ---------------------------------------------------------------------
def test_export_force_keeps_a_folder_that_is_not_an_export(demo: Path, tmp_path: Path) -> None:
    from kbench.export import export_run

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="is not a kbench export; choose another --out"):
        export_run("demo", victim, "e9", str(demo), force=True)
    assert (victim / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
    r = kbench("export", "demo", "--out", "victim", "--name", "e9", "--force",
               "--store", str(demo), cwd=tmp_path)
    one_line_error(r, "is not a kbench export")
    assert (victim / "notes.txt").read_text() == "precious"


def test_export_force_replaces_an_earlier_export_but_not_files_added_to_it(
        demo: Path, tmp_path: Path) -> None:
    from kbench.export import MARKER, export_run

    out = tmp_path / "pkg"
    export_run("demo", out, "pkg_a", str(demo))
    mark = json.loads((out / MARKER).read_text())
    assert mark["run"] == "demo" and "pyproject.toml" in mark["files"]
    with pytest.raises(ConfigError, match="earlier kbench export of run 'demo'.*--force"):
        export_run("demo", out, "pkg_a", str(demo))
    # what pip and pytest leave in place does not count as the user's
    (out / "pkg_a.egg-info").mkdir()
    (out / "pkg_a" / "__pycache__").mkdir()
    (out / "pkg_a" / "__pycache__" / "x.pyc").write_bytes(b"")
    export_run("demo", out, "pkg_a", str(demo), force=True)
    assert (out / "pkg_a" / "__init__.py").exists() and not (out / "pkg_a.egg-info").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"did not write \(notes.txt\)"):
        export_run("demo", out, "pkg_a", str(demo), force=True)
    assert (out / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    export_run("demo", empty, "pkg_b", str(demo), force=True)  # an empty folder is fine
    assert (empty / MARKER).exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary or moved-aside folder is left behind


def test_export_force_never_replaces_the_cwd_its_parents_or_home(
        demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kbench.export import export_run

    out = tmp_path / "pkg"
    export_run("demo", out, "pkg_c", str(demo))  # an export, marker and all
    inner = out / "pkg_c"
    for cwd, target in ((out, out), (inner, out), (inner, Path(".."))):
        monkeypatch.chdir(cwd)
        with pytest.raises(ConfigError, match="current directory or holds it"):
            export_run("demo", target, "pkg_c", str(demo), force=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(out))
    with pytest.raises(ConfigError, match="home folder"):
        export_run("demo", "~", "pkg_c", str(demo), force=True)
    assert (inner / "__init__.py").exists()


def test_export_to_an_unwritable_place_is_one_line(demo: Path, tmp_path: Path) -> None:
    one_line_error(kbench("export", "demo", "--out", "/proc/kbench-x", "--name", "e8",
                          "--store", str(demo), cwd=tmp_path), "cannot write the export to")


# -- 2a, 5. problem files ------------------------------------------------------------------
_PROBLEM = '''import torch
import torch.nn as nn

batch_size = 16
dim = 4096
KBENCH = {
    "cpu_shapes": {"small": {"batch_size": 4, "dim": DIM}},
    "flops": FLOPS,
    "bytes": lambda s: 8 * s["batch_size"] * s["dim"],
}


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(BODY)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
'''


def _problem(folder: Path, name: str, flops: str = 'lambda s: s["batch_size"] * s["dim"]',
             dim: str = "100", body: str = "x", lambdas: bool = True) -> Path:
    text = _PROBLEM.replace("FLOPS", flops).replace("DIM", dim).replace("BODY", body)
    if not lambdas:
        text = "\n".join(ln for ln in text.splitlines() if '"flops"' not in ln
                         and '"bytes"' not in ln) + "\n"
    p = folder / f"{name}.py"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("flops", "needle"), [
    ('lambda s: s["bsz"] * s["dim"]', "KBENCH['flops'] failed on shape 'main' "
                                      "(batch_size=16, dim=4096): KeyError 'bsz'"),
    ('lambda s: "many"', "KBENCH['flops'] gave 'many' on shape 'main'"),
    ("lambda s: -5.0", "KBENCH['flops'] gave -5.0 on shape 'main'"),
    ('float("nan")', "KBENCH['flops'] gave nan on shape 'main'"),
])
def test_a_broken_roofline_lambda_is_one_problem_error(tmp_path: Path, flops: str,
                                                        needle: str) -> None:
    from kbench.problems import load_file, load_report

    p = _problem(tmp_path, "bad", flops=flops)
    with pytest.raises(ProblemError) as e:
        load_file(p)
    assert needle in str(e.value) and "\n" not in str(e.value)
    specs, failures = load_report(str(tmp_path))  # `problems list` names it, loads the rest
    assert specs == [] and needle in failures[0].error


def test_a_lambda_failing_on_a_derived_shape_names_it(tmp_path: Path) -> None:
    from kbench.problems import derive_shapes, load_file

    spec = load_file(_problem(tmp_path, "div", flops='lambda s: 1e6 / (s["batch_size"] - 1)'))
    batch1 = derive_shapes(spec, spec.shapes["main"])["derived_batch1"]
    with pytest.raises(ProblemError, match=r"div: KBENCH\['flops'\] failed on shape "
                       r"'derived_batch1' \(batch_size=1, dim=4096\): ZeroDivisionError"):
        spec.roofline(batch1, "derived_batch1")


def test_problems_show_refuses_what_eval_refuses(tmp_path: Path) -> None:
    _problem(tmp_path, "keyerr", flops='lambda s: s["bsz"]')
    _problem(tmp_path, "negdim", dim="-100", lambdas=False)
    _problem(tmp_path, "nameerr", body="undefined_name")
    _problem(tmp_path, "good")
    one_line_error(kbench("problems", "show", "keyerr.py", cwd=tmp_path),
                   "KBENCH['flops'] failed on shape 'main'")
    one_line_error(kbench("problems", "show", "negdim.py", cwd=tmp_path),
                   "negdim: the reference fails on its own shape 'small': RuntimeError")
    for r in (kbench("problems", "show", "nameerr.py", "--no-source", cwd=tmp_path),
              kbench("eval", "--problem", "nameerr.py", "--candidate",
                     str(EXAMPLES / "level1" / "relu.py"), "--device", "cpu", cwd=tmp_path)):
        assert r.stdout == ""
        one_line_error(r, "nameerr: the reference fails on its own shape 'small': NameError")
    r = kbench("problems", "show", "good.py", "--no-source", cwd=tmp_path)
    assert r.returncode == 0 and "GFLOP" in r.stdout, r.stdout + r.stderr
    r = kbench("problems", "list", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "KeyError 'bsz'" in r.stdout and "Traceback" not in r.stderr


# -- 6. messages ---------------------------------------------------------------------------
def test_missing_problem_path_and_directory_candidate_say_so(tmp_path: Path) -> None:
    from kbench.problems import load_report

    for sel in (str(tmp_path / "missing.py"), "./missing.py", "missing.py", "./nodir"):
        with pytest.raises(ProblemError, match="no such file or directory"):
            load_report(sel)
    with pytest.raises(ProblemError, match="no problem matches 'level1/nope'"):
        load_report("level1/nope")
    (tmp_path / "cand").mkdir()
    one_line_error(kbench("eval", "--problem", "level1/relu", "--candidate", "cand",
                          cwd=tmp_path), "--candidate cand: is a directory")
    one_line_error(kbench("eval", "--problem", str(tmp_path / "missing.py"), "--candidate",
                          str(EXAMPLES / "level1" / "relu.py"), cwd=tmp_path),
                   "missing.py: no such file or directory")


# -- 2b, 3, 4. report ----------------------------------------------------------------------
def test_report_filters_that_select_nothing_are_errors(demo: Path, tmp_path: Path) -> None:
    from kbench.report import build_report

    url = str(demo)
    with pytest.raises(ConfigError, match=r"--suite nosuite matches no problem of run 'demo' "
                       r"\(suites: level1; problems: level1/relu, level1/softmax\)"):
        build_report(url, ["demo"], suites="nosuite")
    with pytest.raises(ConfigError, match="--problems level1/nope matches no problem of run"):
        build_report(url, ["demo"], problems="level1/nope")
    with pytest.raises(ConfigError, match="selects nothing: run 'empty' has no problems"):
        build_report(url, ["empty"], suites="level1")
    with pytest.raises(ConfigError, match="matches no problem of any run in the store"):
        build_report(url, suites="level2")
    rep = build_report(url, problems="level1/soft*")  # runs holding none are left out
    assert [r.run.name for r in rep.runs] == ["demo"]
    r = kbench("report", "demo", "--suite", "nosuite", "--store", url, cwd=tmp_path)
    assert r.stdout == ""
    one_line_error(r, "matches no problem of run 'demo'")
    r = kbench("report", "--suite", "level2", "--json", "--store", url, cwd=tmp_path)
    assert "no problem of any run" in json.loads(r.stdout)["error"]
    one_line_error(r, "no problem of any run")


def test_untimed_fast_p_is_never_shown_as_a_number(demo: Path, tmp_path: Path) -> None:
    from kbench.report import build_report, print_report, write_html

    rep = build_report(str(demo))
    d = {r["run"]: r for r in rep.to_dict()["runs"]}
    for suite in ("level1", "all"):
        fp = d["demo"]["suites"][suite]["fast_p"]
        assert fp["eager"] == fp["compile"] == {
            "fast_0": 1.0, "fast_1": None, "fast_1.5": None, "fast_2": None}
    assert d["empty"]["suites"]["all"]["fast_p"]["eager"]["fast_0"] is None  # over nothing

    con = Console(record=True, width=200)
    print_report(rep, con)
    text = con.export_text()
    demo_row = next(ln for ln in text.splitlines() if ln.split()[:2] == ["demo", "level1"])
    assert demo_row.split()[2:7] == ["2", "1.00", "–/–", "–/–", "–/–"], demo_row
    empty_row = next(ln for ln in text.splitlines() if ln.split()[:2] == ["empty", "all"])
    assert empty_row.split()[2:4] == ["0", "–"] and "0.00" not in empty_row, empty_row
    assert "no timing (no GPU) in demo: fast_p for p > 0 is undefined" in text
    assert "0 by definition" not in text

    html = write_html(rep, tmp_path / "site").read_text()
    board = html.split('class="sortable leaderboard"')[1].split("</table>")[0]
    row = next(r for r in board.split('<tr class="run-row">')[1:] if ">demo<" in r)
    cells = [c.split(">", 1)[1] for c in row.split("</td>")[:12]]
    assert cells[4:12] == ["1.00", "1.00"] + ["–"] * 6, cells
    assert "no timing (no GPU) in demo" in html and "no curve for demo" in html


def test_report_html_to_a_file_or_unwritable_place_is_one_line(demo: Path,
                                                                tmp_path: Path) -> None:
    from kbench.report import build_report, write_html

    rep = build_report(str(demo), ["demo"])
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        write_html(rep, tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"
    with pytest.raises(ConfigError, match="cannot create the folder"):
        write_html(rep, "/proc/kbench-site")
    for path, needle in (("afile", "exists and is not a folder"),
                         ("/proc/kbench-site", "cannot create the folder")):
        r = kbench("report", "demo", "--store", str(demo), "--html", path, cwd=tmp_path)
        assert r.stdout == ""  # refused before the report is printed
        one_line_error(r, needle)
