"""`kbench report`: the leaderboard of a replay run on CPU (text, JSON), device fingerprints
kept apart, HTML escaping of untrusted text, and the HTML site opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kbench.report import build_report, write_html
from kbench.store import Store
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kbench" / "examples"
PROBLEMS = ["level1/relu", "level1/softmax"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's kbench
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def replay_store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report")
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", ",".join(PROBLEMS),
               "--device", "cpu", "--name", "demo", "--store", "demo.db", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "demo.db"


def test_report_text_and_json(replay_store):
    d = replay_store.parent
    r = kbench("report", "--store", str(replay_store), cwd=d)
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout and "fast_0" in r.stdout and "device" in r.stdout
    assert "no timing" in r.stdout

    j = kbench("report", "demo", "--store", str(replay_store), "--json", cwd=d)
    assert j.returncode == 0, j.stderr
    out = json.loads(j.stdout)
    assert [g["runs"] for g in out["device_groups"]] == [["demo"]]
    (run,) = out["runs"]
    assert set(run["problems"]) == set(PROBLEMS)
    allp = run["suites"]["all"]
    assert allp["n_problems"] == 2 and allp["fast_p"]["eager"]["fast_0"] == 1.0
    assert allp["fast_p"]["compile"]["fast_1"] is None  # undefined without timing (CPU)
    assert allp["gpu_minutes"] == 0.0
    assert allp["rejected"] == 0 and allp["candidates"] == 2
    assert run["fingerprint"]["device"] == "cpu"

    one = json.loads(kbench("report", "--store", str(replay_store), "--json",
                            "--problems", "level1/soft*", cwd=d).stdout)
    assert set(one["runs"][0]["problems"]) == {"level1/softmax"}
    none = kbench("report", "--store", str(replay_store), "--json", "--suite", "level2", cwd=d)
    assert none.returncode == 2 and "level2 matches no problem" in json.loads(none.stdout)["error"]


def test_report_faults_are_one_line_exit_2(replay_store, tmp_path):
    r = kbench("report", "nope", "--store", str(replay_store), cwd=tmp_path)
    assert r.returncode == 2 and "no run named 'nope'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = kbench("report", "--store", str(tmp_path / "absent.db"), cwd=tmp_path)
    assert r.returncode == 2 and "no runs" in r.stderr and not (tmp_path / "absent.db").exists()
    Store(str(tmp_path / "empty.db")).close()
    r = kbench("report", "--store", str(tmp_path / "empty.db"), cwd=tmp_path)
    assert r.returncode == 2 and "no runs in the store" in r.stderr


EVIL = '</pre></script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'


def _timed(key: str, status: Status, speedup: float | None, fp: dict, reason: str = "") -> Verdict:
    t = Timing(0.1, 0.01, 0.1, 0.09, 20, 0.01)
    shape = ShapeResult("main", {"n": 7}, False, 3, status.passed, timing=t, eager=t,
                        speedup_eager=speedup, sol_pct=40.0)
    return Verdict(key, status, reason or status.value, fp["device"], "triton", (shape,),
                   speedup_eager=speedup, speedup_compile=speedup and speedup / 2,
                   sol_pct=40.0 if speedup else None, timing_available=True, fingerprint=fp,
                   wall_s=30.0)


def _synthetic_store(url: str) -> None:
    """Two runs on two GPUs: a correct fast kernel, a rejected cheat, hostile text."""
    db = Store(url)
    pid = db.upsert_problem("level1/relu", "level1", "h1", "src")
    for name, fp in (("h100", {"device": "cuda", "gpu": "H100"}),
                     ("a100", {"device": "cuda", "gpu": "A100"})):
        run = db.create_run(name, model=f"m-{name}", strategy="evolve")
        good = db.add_candidate(pid, "# good kernel\nx = 1\n" + EVIL, "triton", run_id=run,
                                origin="llm")
        db.add_verdict(good, _timed("level1/relu", Status.CORRECT, 2.5, fp), name)
        cheat = db.add_candidate(pid, "import torch", "triton", run_id=run, origin="llm",
                                 parent_id=good)
        db.add_verdict(cheat, _timed("level1/relu", Status.REJECTED, None, fp,
                                     "calls torch.relu " + EVIL), name)
        db.add_llm_call(run, "fake", "m", [{"role": "user", "content": "hi"}], "reply",
                        problem_id=pid, candidate_id=good, input_tokens=10, output_tokens=5,
                        cost_usd=0.25)
    db.close()


def test_devices_are_kept_apart_and_untrusted_text_is_escaped(tmp_path):
    url = str(tmp_path / "s.db")
    _synthetic_store(url)
    rep = build_report(url)
    assert len(rep.groups) == 2, "runs on different GPUs must not share a leaderboard"
    for r in rep.runs:
        a = r.suites["all"]
        assert a.fast(2.0) == 1.0 and a.geomean_speedup_eager == pytest.approx(2.5)
        c = r.costs["all"]
        assert (c.rejected, c.candidates, c.tokens, c.cost_usd) == (1, 2, 15, 0.25)
        assert c.gpu_minutes == pytest.approx(1.0)  # two CUDA verdicts of 30 s
    index = write_html(rep, tmp_path / "site")
    page = (tmp_path / "site" / "problems" / "level1_relu.html").read_text()
    for html in (index.read_text(), page):
        assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "calls torch.relu" in page and "good kernel" in page and "lineage" in page
    assert "separately" in index.read_text()


def test_gpu_minutes_count_every_verdict_not_only_the_latest(tmp_path):
    url = str(tmp_path / "g.db")
    db = Store(url)
    pid = db.upsert_problem("level1/relu", "level1", "h1", "src")
    fp = {"device": "cuda", "gpu": "H100"}
    run = db.create_run("again", model="m")
    cid = db.add_candidate(pid, "x = 1\n", "triton", run_id=run, origin="llm")
    for _ in range(3):  # verified, then verified twice more (resume, re-timing)
        db.add_verdict(cid, _timed("level1/relu", Status.CORRECT, 2.0, fp), "fp")
    cpu = db.add_candidate(pid, "x = 2\n", "triton", run_id=run, origin="llm")
    db.add_verdict(cpu, _timed("level1/relu", Status.CORRECT, None, {"device": "cpu"}), "fp")
    db.close()
    (r,) = build_report(url).runs
    assert r.costs["all"].gpu_minutes == pytest.approx(1.5)  # 3 x 30 s; CPU verdicts are free


def test_html_report_in_headless_chromium(replay_store, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (CI installs Debian's chromium: see .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                                   "(in the dev extra)")
    # Synthetic runs too, so the plots have timed points and the lineage a tree.
    _synthetic_store(str(replay_store.parent / "demo.db"))  # adds runs h100 and a100
    site = tmp_path / "site"
    r = kbench("report", "--store", str(replay_store), "--html", str(site),
               cwd=replay_store.parent)
    assert r.returncode == 0, r.stderr
    errors: list[str] = []
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((site / "index.html").as_uri())
            assert page.locator("table.leaderboard tr.run-row").count() >= 3
            assert page.locator("svg.plot").count() >= 1
            assert page.locator("svg.plot polyline.series").count() >= 1
            page.locator("table.leaderboard th").first.click()  # the sorter runs cleanly
            page.screenshot(path=str(shot), full_page=True)
            page.locator("a.problem-link", has_text="level1/softmax").click()
            page.wait_for_load_state()
            assert page.url.endswith("problems/level1_softmax.html")
            assert page.locator("h1", has_text="level1/softmax").count() == 1
            assert page.locator(".source").count() >= 1
            page.go_back()
            page.locator("a.problem-link", has_text="level1/relu").click()
            page.wait_for_load_state()
            assert page.evaluate("window.__pwned === undefined")
            assert page.locator("ul.lineage").count() >= 1
        finally:
            browser.close()
    assert not errors, errors
    assert shot.stat().st_size > 0
    print(f"screenshot: {shot}")
