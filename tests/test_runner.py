"""`kbench run` end to end on CPU: replay over the shipped examples, the real OpenAI SDK
against a local fake server, resume after a kill, and the stored verdicts and fast_p."""

from __future__ import annotations

import importlib.resources
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbench.cli import app
from kbench.problems import load
from kbench.scoring import summary
from kbench.store import Store
from tests.fakes.llm_server import (  # noqa: F401 - fixture
    FakeLLMServer,
    Reply,
    llm_server_fixture,
    no_code,
    rate_limited,
    server_error,
)

EXAMPLES = Path(str(importlib.resources.files("kbench").joinpath("examples")))
STARTERS = sorted(
    f"{p.parent.name}/{p.stem}" for p in EXAMPLES.glob("*/*.py") if not p.stem.endswith("_cuda")
)


def kbench(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


def test_every_starter_problem_has_an_example():
    """The README's replay demo names the starter problems: each has a Triton example, each
    example is for a problem that exists, and each CUDA example has its Triton sibling."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    m = re.search(r"--model replay:kbench/examples --problems (\S+)", readme)
    assert m, "README.md no longer shows the replay demo over the starter problems"
    assert sorted(m.group(1).split(",")) == STARTERS
    for key in STARTERS:
        assert load(key)[0].key == key, key
    for cuda in EXAMPLES.glob("*/*_cuda.py"):
        twin = f"{cuda.parent.name}/{cuda.stem.removesuffix('_cuda')}"
        assert twin in STARTERS, f"{cuda.name} has no Triton example {twin}"
    suites = {k.split("/")[0] for k in STARTERS}
    assert suites == {"level1", "level2", "level3", "attention", "quant", "kvcache"}


def test_config_takes_any_registered_strategy_and_the_runner_builds_it(tmp_path, monkeypatch):
    """A strategy registered by name needs no change to the config or the runner: the
    config validates against the registry, the runner passes the settings it takes."""
    from agents import OneShot, make_provider, strategies
    from kbench.config import RunConfig, load_config
    from kbench.errors import ConfigError
    from kbench.runner import Runner

    class Probe(OneShot):
        name = "probe"

        def __init__(self, turns: int = 1, samples: int = 1, width: int = 7):
            super().__init__(samples)
            self.turns, self.width = turns, width

    monkeypatch.setitem(strategies._REGISTRY, "probe", Probe)
    with pytest.raises(ConfigError, match=r"strategy: unknown strategy 'beam'; choose one of "
                                          r"evolve, oneshot, probe, refine"):
        load_config(None, {"strategy": "beam"})
    cfg = load_config(None, {"strategy": "probe", "turns": 5, "samples": 2})
    assert cfg.strategy_options() == {"turns": 5, "samples": 2}  # width: not a run setting
    store = Store(str(tmp_path / "kbench.db"))
    runner = Runner(store, make_provider(f"replay:{EXAMPLES}"), [], cfg, "cpu",
                    store.create_run("r"))
    assert type(runner.strategy) is Probe
    assert (runner.strategy.turns, runner.strategy.samples, runner.strategy.width) == (5, 2, 7)
    refine = Runner(store, make_provider(f"replay:{EXAMPLES}"), [],
                    RunConfig(strategy="refine", turns=4, samples=3), "cpu", store.create_run("s"))
    assert (refine.strategy.turns, refine.strategy.samples) == (4, 3)


def test_config_takes_an_available_executor_and_the_runner_verifies_on_it(tmp_path):
    """``executor`` is validated against kbench.executors' registry (an unavailable one says
    why); the runner builds it with the devices ``--device`` names."""
    from agents import make_provider
    from kbench.config import RunConfig, load_config
    from kbench.errors import ConfigError
    from kbench.executors import LocalExecutor
    from kbench.runner import Runner

    with pytest.raises(ConfigError, match=r"executor: unknown executor 'slurm'; choose one of "):
        load_config(None, {"executor": "slurm"})
    cfg = load_config(None, {"executor": "ray", "ray_address": "10.0.0.1:6379"})
    assert (cfg.executor, cfg.ray_address) == ("ray", "10.0.0.1:6379")
    store = Store(str(tmp_path / "kbench.db"))
    runner = Runner(store, make_provider(f"replay:{EXAMPLES}"), [], RunConfig(), "cpu",
                    store.create_run("r"))
    assert isinstance(runner.executor, LocalExecutor) and runner.executor.devices == ["cpu"]


@pytest.mark.slow
def test_replay_run_over_the_starter_problems(tmp_path):
    r = kbench("run", "--model", f"replay:{EXAMPLES}", "--problems", ",".join(STARTERS),
               "--device", "cpu", "--name", "starters", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fast_0" in r.stdout
    db = Store(str(tmp_path / "kbench.db"))
    run = db.get_run("starters")
    assert run is not None and run.status.value == "finished"
    rows = dict(db.results(run.id))
    assert set(rows) == set(STARTERS)
    for key, v in rows.items():
        assert v is not None and v["status"] == "correct", (key, v and v["reason"])
        assert v["timing_available"] is False and v["speedup_eager"] is None
    s = summary(rows)
    assert s.n_problems == len(STARTERS) and s.n_correct == len(STARTERS)
    assert s.fast(0, "eager") == 1.0 and s.fast(1, "eager") == 0.0  # no timing on CPU
    assert len(db.llm_calls_for(run.id)) == len(STARTERS)

    again = kbench("run", "--resume", "starters", "--device", "cpu", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(db.llm_calls_for(run.id)) == len(STARTERS), "resume repeats no stored call"


def test_kill_mid_run_leaves_a_consistent_store_and_resume_finishes(tmp_path):
    keys = ["level1/relu", "level1/softmax", "level1/matmul"]
    cmd = [sys.executable, "-m", "kbench.cli", "run", "--model", f"replay:{EXAMPLES}",
           "--problems", ",".join(keys), "--device", "cpu", "--name", "killed",
           "--concurrency", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    db_path = tmp_path / "kbench.db"
    deadline = time.monotonic() + 300
    db = None
    while time.monotonic() < deadline:
        if db_path.exists():
            db = db or Store(str(db_path))
            run = db.get_run("killed")
            if run is not None and db.llm_calls_for(run.id):
                break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert db is not None
    run = db.get_run("killed")
    calls_before = len(db.llm_calls_for(run.id))
    assert calls_before >= 1
    r = kbench("run", "--resume", "killed", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = dict(db.results(run.id))
    assert set(rows) == set(keys)
    assert all(v is not None and v["status"] == "correct" for v in rows.values())
    assert len(db.llm_calls_for(run.id)) == len(keys), "each problem was asked exactly once"
    for k in keys:
        assert all(c.verdict is not None for c in db.candidates_for(run.id, k))


def test_openai_compatible_server_with_errors_and_a_reply_without_code(llm_server, tmp_path,
                                                                       monkeypatch):
    """Real openai SDK against a local server: a 429 and a 500 are retried by the SDK, a
    reply with no code is a recorded failed attempt, and the run goes on to the end."""
    honest = (EXAMPLES / "level1" / "relu.py").read_text()
    llm_server.script(
        rate_limited(), Reply(f"Here you go:\n```python\n{honest}\n```"),  # turn 0: correct
        server_error(), no_code(),                                          # turn 1: no code
        Reply("```python\nimport torch\nclass ModelNew(torch.nn.Module):\n"
              "    def forward(self, x):\n        return torch.relu(x)\n```"),  # turn 2: rejected
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, [
        "run", "--model", "fake-model", "--base-url", llm_server.openai_url,
        "--problems", "level1/relu", "--strategy", "refine", "--turns", "3",
        "--device", "cpu", "--name", "fake",
    ])
    assert result.exit_code == 0, result.output
    db = Store(str(tmp_path / "kbench.db"))
    run = db.get_run("fake")
    calls = db.llm_calls_for(run.id)
    assert len(calls) == 3
    cands = db.candidates_for(run.id, "level1/relu")
    assert [c.verdict.status.value for c in cands] == ["correct", "rejected"]
    assert calls[1].candidate_id is None and "cannot write" in calls[1].response
    assert "reference" in cands[1].verdict.reason or "torch.relu" in cands[1].verdict.reason
    rows = dict(db.results(run.id))
    assert rows["level1/relu"]["status"] == "correct"
    # 429 retried + answer, 500 retried + answer, answer: five requests for three calls
    assert len(llm_server.calls("/chat/completions")) == 5


def test_persistent_provider_error_is_recorded_and_the_run_goes_on(llm_server, tmp_path,
                                                                  monkeypatch):
    honest = (EXAMPLES / "level1" / "relu.py").read_text()
    llm_server.script(*[server_error()] * 5,  # outlasts the SDK's retries: a failed call
                      Reply(f"```python\n{honest}\n```"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [
        "run", "--model", "fake-model", "--base-url", llm_server.openai_url,
        "--problems", "level1/relu", "--strategy", "refine", "--turns", "2",
        "--device", "cpu", "--name", "flaky",
    ])
    assert result.exit_code == 0, result.output
    db = Store(str(tmp_path / "kbench.db"))
    calls = db.llm_calls_for(db.get_run("flaky").id)
    assert len(calls) == 2 and calls[0].error and calls[1].error is None


@pytest.mark.parametrize("args, message", [
    (["--model", "nope/x", "--problems", "level1/relu"], "unknown provider"),
    (["--model", "openai/gpt-4o", "--problems", "level1/relu"], "OPENAI_API_KEY"),
    (["--model", "m", "--base-url", "http://127.0.0.1:9", "--problems", "level1/relu"],
     "cannot reach"),
    (["--model", f"replay:{EXAMPLES}", "--problems", "level9"], "no problem matches"),
    (["--model", f"replay:{EXAMPLES}", "--problems", "level1/relu", "--max-calls", "0"],
     "max-calls is 0"),
    (["--problems", "level1/relu"], "--model is required"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    env_free = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    r = subprocess.run([sys.executable, "-m", "kbench.cli", "run", "--device", "cpu", *args],
                       cwd=tmp_path, text=True, capture_output=True, env=env_free, timeout=300)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_config_file_unknown_key_is_named(tmp_path):
    (tmp_path / "kbench.toml").write_text('model = "openai/gpt-4o"\nmax_cots_usd = 3\n')
    r = kbench("run", "--problems", "level1/relu", cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "unknown key 'max_cots_usd'" in r.stderr


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes(tmp_path):
    keys = ["level1/relu", "level1/softmax", "level1/matmul"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbench.cli", "run", "--model", f"replay:{EXAMPLES}",
         "--problems", ",".join(keys), "--device", "cpu", "--name", "ctrlc"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db_path = tmp_path / "kbench.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if db_path.exists():
            run = Store(str(db_path)).get_run("ctrlc")
            if run is not None and Store(str(db_path)).llm_calls_for(run.id):
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume ctrlc" in err + _
    db = Store(str(db_path))
    assert db.get_run("ctrlc").status.value == "interrupted"
    r = kbench("run", "--resume", "ctrlc", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run = db.get_run("ctrlc")
    assert run.status.value == "finished"
    assert {k for k, v in db.results(run.id) if v and v["status"] == "correct"} == set(keys)
    assert len(db.llm_calls_for(run.id)) == len(keys)


def test_live_view_shows_the_best_status_and_ends_before_the_summary(llm_server, tmp_path,
                                                                      monkeypatch):
    """Two refine turns, correct then a failed call: the live view says correct, as the
    summary and `runs show` do; piped (not a TTY), the view's last row and the summary's
    title are separate lines."""
    honest = (EXAMPLES / "level1" / "relu.py").read_text()
    llm_server.script(Reply(f"```python\n{honest}\n```"), *[server_error()] * 5)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [
        "run", "--model", "fake-model", "--base-url", llm_server.openai_url,
        "--problems", "level1/relu", "--strategy", "refine", "--turns", "2",
        "--device", "cpu", "--name", "best",
    ])
    assert result.exit_code == 0, result.output
    db = Store(str(tmp_path / "kbench.db"))
    run = db.get_run("best")
    calls = db.llm_calls_for(run.id)
    assert len(calls) == 2 and calls[0].error is None and calls[1].error  # the second failed
    assert dict(db.results(run.id))["level1/relu"]["status"] == "correct"
    lines = result.output.splitlines()
    [row] = [ln for ln in lines if ln.lstrip().startswith("level1/relu")]
    cells = [c.strip() for c in row.split("│")]
    assert cells[1:3] == ["2", "correct"], row
    title = next(i for i, ln in enumerate(lines) if "run best: 1/1 correct" in ln)
    assert lines[title].strip().startswith("run best:"), lines[title]
    assert lines.index(row) < title and "level1/relu" not in lines[title]


def test_a_gpu_run_measures_each_problems_baselines_ahead_and_verifies_after(tmp_path,
                                                                             monkeypatch):
    """On a GPU, a run starts measuring each problem's baselines on the executor as the
    problem starts (while its first candidates are being written); a verification of that
    problem waits for them instead of measuring them itself. (Devices are opaque names to
    the executor: this runs on CPU with the verifier replaced.)"""
    import asyncio
    import threading

    import sandbox.verifier
    from agents import make_provider
    from kbench import runner as runner_mod
    from kbench.config import RunConfig
    from kbench.runner import Runner
    from sandbox.verdict import Status, Verdict

    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def measure(spec, cache, *, device=None, **_):
        with lock:
            events.append(("baselines start", spec.key))
        time.sleep(0.3)
        with lock:
            events.append(("baselines end", spec.key))
        assert cache is store and device == "cuda:0"
        return {}

    def verify(spec, code, *, device=None, **_):
        with lock:
            events.append(("verify", spec.key))
        return Verdict(problem=spec.key, status=Status.CORRECT, device=device, backend="triton",
                       reason="correct")

    monkeypatch.setattr(sandbox.verifier, "measure_baselines", measure)
    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    monkeypatch.setattr(runner_mod, "device_facts", lambda store, device: {"name": "fake"})
    store = Store(str(tmp_path / "kbench.db"))
    problems = [load("level1/relu")[0], load("level1/softmax")[0]]
    runner = Runner(store, make_provider(f"replay:{EXAMPLES}"), problems, RunConfig(),
                    "cuda:0", store.create_run("r"))
    asyncio.run(runner.run())
    for key in ("level1/relu", "level1/softmax"):
        mine = [e for e, k in events if k == key]
        assert mine[:2] == ["baselines start", "baselines end"], events
        assert mine.count("baselines start") == 1 and "verify" in mine[2:], events


def test_a_gpu_run_prebuilds_cuda_candidates_whatever_its_backend(tmp_path, monkeypatch):
    """A CUDA candidate in a run whose prompt asked for Triton (the default backend) is
    still built on CPU cores before its verification takes a GPU slot; a Triton candidate
    is not sent to the build pool at all. (On CPU, with the verifier and the build
    replaced.)"""
    import asyncio
    import json
    import threading

    import sandbox.prebuild
    import sandbox.verifier
    from agents import make_provider
    from kbench import runner as runner_mod
    from kbench.config import RunConfig
    from kbench.runner import Runner
    from sandbox.prebuild import Prebuilt
    from sandbox.verdict import Status, Verdict

    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def kind(code: str) -> str:
        return "cuda" if "load_inline" in code else "triton"

    def prebuild(code, device, **_):
        with lock:
            events.append(("prebuild", kind(code)))
        return Prebuilt("built")

    def verify(spec, code, *, device=None, **_):
        with lock:
            events.append(("verify", kind(code)))
        return Verdict(problem=spec.key, status=Status.CORRECT, device=device, backend="triton",
                       reason="correct")

    monkeypatch.setattr(sandbox.prebuild, "prebuild", prebuild)
    monkeypatch.setattr(sandbox.verifier, "measure_baselines", lambda *a, **k: {})
    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    monkeypatch.setattr(runner_mod, "device_facts", lambda store, device: {"name": "fake"})
    replies = tmp_path / "replies.jsonl"
    with replies.open("w") as fh:
        for sample, name in enumerate(("relu_cuda", "relu")):
            code = (EXAMPLES / "level1" / f"{name}.py").read_text()
            fh.write(json.dumps({"problem": "level1/relu", "sample": sample,
                                 "response": f"```python\n{code}\n```"}) + "\n")
    store = Store(str(tmp_path / "kbench.db"))
    cfg = RunConfig(samples=2)
    assert cfg.backend != "cuda"
    runner = Runner(store, make_provider(f"replay:{replies}"), [load("level1/relu")[0]], cfg,
                    "cuda:0", store.create_run("r"))
    asyncio.run(runner.run())
    assert sorted(events) == [("prebuild", "cuda"), ("verify", "cuda"), ("verify", "triton")]
    assert events.index(("prebuild", "cuda")) < events.index(("verify", "cuda")), events
