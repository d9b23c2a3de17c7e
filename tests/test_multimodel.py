"""Several models in one run (a bandit on improvement per dollar picks each call's model),
the GPU-minutes budget, ``--tune`` refused on CPU, and resume of a run stored with one model
as a string. CPU only: providers are scripted and, where a GPU is pretended, the verifier is
replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.bandit import Bandit, call_cost, improvement
from agents.pricing import Price
from kbench.cli import app
from kbench.config import RunConfig
from kbench.problems import load
from kbench.runner import Runner
from kbench.store import Store
from tests.fakes.evolve_script import KeyedProvider, candidate, fake_verdict

KEY = "level1/relu"
EXAMPLES = Path(str(importlib.resources.files("kbench").joinpath("examples")))


@pytest.fixture(scope="module")
def spec():
    return load(KEY)[0]


class NamedKeyed(KeyedProvider):
    """The evolve tests' scripted provider under a model name of its own, priced at
    ``price`` USD per 1M tokens (in and out) so a dollar budget can reserve its calls."""

    def __init__(self, model: str, script, *, cost_usd: float, price: float):
        super().__init__(script, cost_usd=cost_usd, price=price)
        self.model = model
        self.prices = {model: Price(price, price)}


# -- the bandit alone ----------------------------------------------------------------------
def play(bandit: Bandit, rounds: int, gain: dict[int, float], cost: dict[int, float]
         ) -> list[int]:
    seq = []
    for _ in range(rounds):
        arm = bandit.choose()
        seq.append(arm)
        bandit.settle(arm, gain[arm], cost[arm])
    return seq


def test_bandit_converges_to_more_improvement_per_dollar_and_still_explores():
    """Both models improve equally per call; the dear one costs 5x more per call. The
    bandit ends up giving most calls to the cheap one (per dollar, not per call, decides:
    an arm chosen by improvement alone would split evenly), keeps trying the dear one late
    in the run, and chooses the same way again under the same seed."""
    gain, cost = {0: 0.1, 1: 0.1}, {0: 0.01, 1: 0.05}
    seq = play(Bandit(["cheap", "dear"], seed=7), 400, gain, cost)
    assert seq[:2] == [0, 1]  # every arm once before any twice
    assert seq.count(0) > 0.9 * len(seq)
    assert seq[200:].count(1) >= 1  # still explores after half the run
    assert seq.count(1) >= 5
    assert play(Bandit(["cheap", "dear"], seed=7), 400, gain, cost) == seq
    # the same rewards with the prices swapped: it converges to the other arm
    swapped = play(Bandit(["a", "b"], seed=7), 400, gain, {0: 0.05, 1: 0.01})
    assert swapped.count(1) > 0.9 * len(swapped)


def test_improvement_and_cost_rules():
    """First correct is worth 1, then the rise of the best speedup; failures are worth 0.
    An unknown price is charged by tokens (never as free); a free call still costs the floor."""
    assert improvement(None, False, False, None) == (0.0, None, False)
    assert improvement(None, False, True, None) == (1.0, None, True)  # first correct, untimed
    assert improvement(None, False, True, 1.5) == (2.5, 1.5, True)
    assert improvement(1.5, True, True, 1.2) == (0.0, 1.5, True)
    gain, best, _ = improvement(1.5, True, True, 2.0)
    assert gain == pytest.approx(0.5) and best == 2.0
    assert call_cost(None, 1000) == pytest.approx(1000 * 10.0 / 1e6, rel=1e-3)
    assert 0 < call_cost(0.0, 1000) < 1e-5 < call_cost(0.02, 1000)


# -- two scripted models in one real Runner run -------------------------------------------
def two_models(n: int = 64) -> tuple[NamedKeyed, NamedKeyed]:
    """model-a writes ever faster correct candidates; model-b only wrong ones. Same price."""
    a = {(KEY, s): candidate(f"A{s}", speed=1.0 + 0.1 * s) for s in range(n)}
    b = {(KEY, s): candidate(f"B{s}", fail=f"wrong values ({s})") for s in range(n)}
    return (NamedKeyed("model-a", a, cost_usd=0.01, price=10.0),
            NamedKeyed("model-b", b, cost_usd=0.01, price=10.0))


def test_two_models_in_one_run_split_calls_record_each_model_and_keep_the_budget(tmp_path,
                                                                                spec):
    """A real Runner (evolve, 2 islands x 2 slots) over two scripted models: the bandit
    sends calls to both, most to the one that improves the problem; every stored call (and
    its lineage row) names the model that wrote its reply; the dollar budget, with calls in
    flight reserved, is never exceeded."""
    a, b = two_models()
    store = Store(str(tmp_path / "kbench.db"))
    cfg = RunConfig(model=["keyed/model-a", "keyed/model-b"], strategy="evolve", islands=2,
                    population=2, generations=12, problems=KEY, max_cost_usd=0.3,
                    max_tokens=256, seed=3)
    runner = Runner(store, [a, b], [spec], cfg, "cpu", store.create_run("two"))

    async def fake_verify(s, code):
        return fake_verdict(s.key, code)

    runner._verify = fake_verify  # type: ignore[method-assign]
    asyncio.run(runner.run())

    assert runner.spend.cost_usd <= cfg.max_cost_usd + 1e-9
    assert "budget" in (runner.stop_reason or ""), runner.stop_reason
    calls = store.llm_calls_for(runner.run_id)
    assert len(calls) == len(a.calls) + len(b.calls) == runner.spend.completions
    by_model = {m: [c for c in calls if c.model == m] for m in ("model-a", "model-b")}
    assert by_model["model-b"], "the bandit never tried model-b"
    assert len(by_model["model-a"]) >= 2 * len(by_model["model-b"]), \
        {m: len(v) for m, v in by_model.items()}
    lineage = store.lineage_for(runner.run_id)
    for c in calls:  # the reply came from the model recorded with it
        assert f"TAG = '{'A' if c.model == 'model-a' else 'B'}" in c.response, c.model
        assert c.provider == "keyed" and lineage[c.id].model == c.model
    started = {arm.name: arm.started for arm in runner.agent.bandit.arms}
    assert started == {"keyed/model-a": len(a.calls), "keyed/model-b": len(b.calls)}
    # the live view has a row per model: calls, improvement, cost and the rate it is ranked by
    from rich.console import Console

    from kbench.runflow import _view

    con = Console(record=True, width=160)
    con.print(_view(runner, "two"))
    text = con.export_text()
    rows = {ln.split("│")[0].strip(): [c.strip() for c in ln.split("│")[1:]]
            for ln in text.splitlines() if ln.lstrip().startswith("keyed/")}
    arms = {arm.name: arm for arm in runner.agent.bandit.arms}
    assert set(rows) == set(arms)
    for name, cells in rows.items():
        assert cells[0] == str(arms[name].started) and cells[1] == str(arms[name].settled)
        assert cells[3] == f"{arms[name].cost:.3f}"
    ranked = [ln.split("│")[0].strip() for ln in text.splitlines()
              if ln.lstrip().startswith("keyed/")]
    assert ranked[0] == "keyed/model-a"  # the one with more improvement per dollar first


# -- GPU minutes ---------------------------------------------------------------------------
def test_gpu_minutes_budget_stops_asking_and_lets_verifications_in_flight_finish(
        tmp_path, spec, monkeypatch):
    """Each verification on the (pretended) GPU takes 30 s of wall time; with 1.5 GPU-minutes
    the first generation's four verifications (all in flight together) finish and are stored,
    and no further candidate is asked for (without the limit: three generations)."""
    import sandbox.verifier
    from kbench import runner as runner_mod

    def verify(s, code, *, device=None, **_):
        return dataclasses.replace(fake_verdict(s.key, code), device=device, wall_s=30.0)

    monkeypatch.setattr(sandbox.verifier, "measure_baselines", lambda *a, **k: {})
    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    monkeypatch.setattr(runner_mod, "device_facts", lambda store, device: {"name": "fake"})
    script = {(KEY, s): candidate(f"C{s}", speed=1.0 + s) for s in range(12)}
    provider = KeyedProvider(script)
    store = Store(str(tmp_path / "kbench.db"))
    cfg = RunConfig(model="keyed", strategy="evolve", islands=2, population=2, generations=3,
                    problems=KEY, max_gpu_minutes=1.5)
    runner = Runner(store, provider, [spec], cfg, "cuda:0", store.create_run("gpu"))
    asyncio.run(runner.run())

    assert "GPU-minutes" in (runner.stop_reason or ""), runner.stop_reason
    assert len(provider.calls) == 4
    verdicts = [c.verdict for c in store.candidates_for(runner.run_id, KEY)]
    assert len(verdicts) == 4 and all(v is not None for v in verdicts)
    assert runner.gpu_s == pytest.approx(120.0)


# -- --tune ---------------------------------------------------------------------------------
def with_knobs(reply: str) -> str:
    return reply.replace("import torch\n", "import torch\nBLOCK = 128\n"
                         "TUNE = {'BLOCK': [64, 128, 256]}\n", 1)


def test_tune_runs_on_the_best_correct_candidate_when_its_problem_finishes(tmp_path, spec,
                                                                          monkeypatch):
    """With ``tune`` a finished problem's best correct candidate (the fastest, not the
    latest) is tuned once on the executor's GPU with ``tune_trials`` trials, in the run's
    store; the tuner (kbench.tuning.tune, replaced here: CPU has no timing) stores the
    result. Its time counts toward the GPU minutes."""
    import sandbox.verifier
    from kbench import runner as runner_mod
    from kbench import tuning

    def verify(s, code, *, device=None, **_):
        return dataclasses.replace(fake_verdict(s.key, code), device=device, wall_s=1.0)

    tuned = []

    def fake_tune(spec_, source, *, device, storage_url, n_trials, seed, **_):
        tuned.append((spec_.key, source, device, storage_url, n_trials))
        return type("R", (), {"best": {"main": 1}, "complete": 3, "pruned": 1, "failed": 0,
                              "trials": 4})()

    monkeypatch.setattr(sandbox.verifier, "measure_baselines", lambda *a, **k: {})
    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    monkeypatch.setattr(runner_mod, "device_facts", lambda store, device: {"name": "fake"})
    monkeypatch.setattr(tuning, "tune", fake_tune)
    script = {(KEY, 0): with_knobs(candidate("slow", speed=1.5)),
              (KEY, 1): with_knobs(candidate("fast", speed=2.0)),
              (KEY, 2): with_knobs(candidate("wrong", fail="NaN in output"))}
    store = Store(str(tmp_path / "kbench.db"))
    cfg = RunConfig(model="keyed", strategy="oneshot", samples=3, problems=KEY, tune=True,
                    tune_trials=7)
    runner = Runner(store, KeyedProvider(script), [spec], cfg, "cuda:0", store.create_run("t"))
    asyncio.run(runner.run())

    assert len(tuned) == 1, tuned
    key, source, device, url, trials = tuned[0]
    assert (key, device, trials) == (KEY, "cuda:0", 7)
    assert "TAG = 'fast'" in source and "tmp" in url and url.endswith("kbench.db")
    assert runner.states[KEY].tuned.startswith("tuned 1 shape(s)")
    assert runner.gpu_s >= 3.0


# -- --tune on CPU -------------------------------------------------------------------------
def test_tune_on_cpu_is_one_line_and_exit_2(tmp_path):
    """``--tune`` cannot work without CUDA timing: refused before any call or stored run."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's kbench
    r = subprocess.run([sys.executable, "-m", "kbench.cli", "run", "--device", "cpu",
                        "--model", f"replay:{EXAMPLES}", "--problems", KEY, "--tune"],
                       cwd=tmp_path, text=True, capture_output=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--tune needs a CUDA GPU" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    db = tmp_path / "kbench.db"
    assert not db.exists() or Store(str(db)).list_runs() == []  # nothing ran, no run stored


# -- resume of a run stored before --model became a list ----------------------------------
def test_an_old_run_stored_with_a_string_model_resumes(tmp_path, monkeypatch):
    """A run config stored as older kbench wrote it (``model`` a string, none of the newer
    keys) resumes: the config is read as one model, and the run finishes with its calls
    recorded under that model."""
    monkeypatch.chdir(tmp_path)
    db_path = str(tmp_path / "kbench.db")
    old = RunConfig(model=f"replay:{EXAMPLES}", problems=KEY).model_dump()
    old["model"] = f"replay:{EXAMPLES}"
    for k in ("max_gpu_minutes", "tune", "tune_trials"):
        del old[k]
    store = Store(db_path)
    store.create_run("old", model=old["model"], strategy="oneshot", config=old)
    result = CliRunner().invoke(app, ["run", "--resume", "old", "--device", "cpu",
                                      "--store", db_path])
    assert result.exit_code == 0, (result.output, result.exception)
    store = Store(db_path)
    run = store.get_run("old")
    assert run.status.value == "finished"
    calls = store.llm_calls_for(run.id)
    assert len(calls) == 1 and calls[0].provider == "replay"
