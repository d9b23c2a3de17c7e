"""``--strategy evolve``: lineage, migration, duplicate rejection before verification,
failures as lessons, budgets with calls in flight, stop rules, and resume (in process after a
budget stop, and after SIGKILL of a real ``kbench run`` verifying with the interpreter)."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import Agent, Budget, Task, make_strategy
from agents.providers import Completion
from agents.records import Attempt
from agents.strategies import code_key, near_key, normalise_source
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


# samples are (generation * islands + island) * population + slot: 2 islands x 2 slots
SCRIPT = {
    0: candidate("A", speed=1.2), 1: candidate("X", fail="wrong values at [3, 7]"),
    2: candidate("B", speed=0.8), 3: candidate("A", speed=1.2, comment="same A, reformatted"),
    4: candidate("C", speed=2.0), 5: candidate("D", speed=1.0),
    6: candidate("E", speed=0.9), 7: candidate("F", fail="NaN in output"),
    8: candidate("G", speed=2.1), 9: candidate("H", speed=1.1),
    10: candidate("I", speed=2.5), 11: candidate("C", speed=2.0, comment="C again"),
}
DUPLICATES = {3: 0, 11: 4}  # sample -> the sample it repeats
FAILURES = {1, 7}


def evolve_cfg(**kw) -> RunConfig:
    base = dict(model="keyed", strategy="evolve", islands=2, population=2, generations=3,
                migrate_every=2, problems=KEY)
    return RunConfig(**{**base, **kw})


def run_evolve(store: Store, run_id: int, spec, cfg: RunConfig, provider: KeyedProvider,
               verified: list[str]) -> Runner:
    """The real Runner with the verifier replaced by :func:`fake_verdict`."""
    runner = Runner(store, provider, [spec], cfg, "cpu", run_id)

    async def fake_verify(s, code):
        verified.append(code)
        return fake_verdict(s.key, code)

    runner._verify = fake_verify  # type: ignore[method-assign]
    asyncio.run(runner.run())
    return runner


def population(store: Store, run_id: int) -> list[tuple]:
    """Every attempt as (generation, island, slot, kind, parents as (gen, island, slot),
    normalised-code hash, verdict status or 'rejected')."""
    calls = store.llm_calls_for(run_id)
    lin = store.lineage_for(run_id)
    cands = {c.id: c for c in store.candidates_for(run_id, KEY)}
    where = {lin[c.id].candidate_id: (lin[c.id].generation, lin[c.id].island, lin[c.id].slot)
             for c in calls}
    out = []
    for c in calls:
        r = lin[c.id]
        cand = cands.get(r.candidate_id)
        status = "rejected" if r.rejected else (cand.verdict.status.value if cand and cand.verdict
                                                else None)
        out.append((r.generation, r.island, r.slot, r.kind,
                    tuple(where[p] for p in r.parent_ids),
                    code_key(cand.source) if cand else None, status))
    return sorted(out)


def test_normalisation_drops_comments_docstrings_and_formatting_only():
    a = 'import torch\nBLOCK = 128\ndef f(x):\n    """doc"""\n    return x + 1  # add\n'
    b = "import torch\n\n# a comment\nBLOCK = 128\n\n\ndef f( x ):\n    return (x + 1)\n"
    c = a.replace("128", "256")
    assert normalise_source(a) == normalise_source(b) and code_key(a) == code_key(b)
    assert code_key(a) != code_key(c)  # a changed knob is a real mutation, not a duplicate
    assert code_key("def broken(:\n  pass") == code_key("def broken(:  pass")  # no parse


_KERNEL = """
import torch
import triton
import triton.language as tl

BLOCK = 1024
TUNE = {"BLOCK": [512, 1024]}


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0), mask=mask)


def launch(inp):
    out = torch.empty_like(inp)
    n = inp.numel()
    relu_kernel[(triton.cdiv(n, BLOCK),)](inp, out, n, BLOCK=BLOCK)
    return out


class ModelNew(torch.nn.Module):
    def forward(self, x):
        return launch(x)
"""


def test_near_duplicates_are_the_same_code_with_its_own_names_changed():
    renamed = (_KERNEL.replace("relu_kernel", "k_relu").replace("x_ptr", "src")
               .replace("out_ptr", "dst").replace("offs", "idx").replace("launch", "run")
               .replace("inp", "t"))
    assert code_key(renamed) != code_key(_KERNEL)  # not an exact duplicate
    assert near_key(renamed) == near_key(_KERNEL)
    # names whose spelling matters are not renamed: these are different programs
    different = {
        "a changed knob": _KERNEL.replace("BLOCK = 1024", "BLOCK = 512"),
        "a knob renamed (TUNE and the launch keyword still say BLOCK)":
            _KERNEL.replace("BLOCK = 1024", "BLK = 1024"),
        "a keyword argument renamed": _KERNEL.replace("BLOCK=BLOCK", "BLOCK_SIZE=BLOCK"),
        "no ModelNew": _KERNEL.replace("class ModelNew", "class Model2"),
        "another method name": _KERNEL.replace("def forward", "def fwd"),
        "another library op": _KERNEL.replace("torch.empty_like", "torch.zeros_like"),
        "another builtin": _KERNEL.replace("return launch(x)", "return launch(abs(x))"),
    }
    for why, code in different.items():
        assert near_key(code) != near_key(_KERNEL), why
    # a parameter passed on by keyword to a library keeps its name: device vs dtype differ
    a = "import torch\ndef f(device):\n    return torch.empty(1, device=device)\n"
    b = "import torch\ndef f(dtype):\n    return torch.empty(1, dtype=dtype)\n"
    assert near_key(a) != near_key(b)
    assert near_key(a) == near_key(a.replace("def f", "def g"))


def test_screen_names_a_near_duplicate():
    s = make_strategy("evolve", islands=1, population=2, generations=2)
    first = Attempt(sample=0, turn=0, completion=Completion(_KERNEL), code=_KERNEL)
    renamed = _KERNEL.replace("relu_kernel", "my_relu")
    assert s.screen(renamed, [first]) == (
        "near-duplicate of candidate attempt 0 (the same code with its own names changed)")
    assert s.screen(_KERNEL + "\n# again\n", [first]) == (
        "duplicate of candidate attempt 0 (same code after normalisation)")
    # a stored attempt is named by its store id, as `runs show --lineage` shows it
    stored = Attempt(sample=0, turn=0, completion=Completion(_KERNEL), code=_KERNEL,
                     candidate_id=17)
    other = Attempt(sample=1, turn=0, completion=Completion("x"), code="x = 1\n",
                    candidate_id=3)
    assert s.screen(_KERNEL + "\n# again\n", [other, stored]) == (
        "duplicate of candidate #17 (same code after normalisation)")
    assert s.screen(_KERNEL.replace("1024", "2048"), [first]) is None


def test_lineage_migration_duplicates_and_lessons(tmp_path, spec):
    store = Store(str(tmp_path / "kbench.db"))
    run_id = store.create_run("evo", model="keyed", strategy="evolve")
    provider = KeyedProvider({(KEY, s): t for s, t in SCRIPT.items()})
    verified: list[str] = []
    runner = run_evolve(store, run_id, spec, evolve_cfg(), provider, verified)

    calls = store.llm_calls_for(run_id)
    lin = store.lineage_for(run_id)
    assert len(calls) == 12 and sorted(c.sample for c, _ in provider.calls) == list(range(12))
    rows = [lin[c.id] for c in calls]
    sample_of = {r.candidate_id: (r.generation * 2 + r.island) * 2 + r.slot for r in rows}
    for r in rows:
        s = sample_of[r.candidate_id]
        assert r.model == "keyed-model" and r.generation == s // 4
        assert r.island == (s // 2) % 2 and r.slot == s % 2
        assert r.kind == "seed" if r.generation == 0 else r.kind in ("mutate", "crossover")
        if r.generation and r.slot == 0:
            assert r.kind == "mutate"  # slot 0: the island's best, mutated
        # failures and duplicates are never parents
        assert not {sample_of[p] for p in r.parent_ids} & (FAILURES | set(DUPLICATES))

    # duplicates: stored, recorded as rejected, never verified (no verifier time)
    by_sample = {sample_of[r.candidate_id]: r for r in rows}
    cands = {c.id: c for c in store.candidates_for(run_id, KEY)}
    for dup, orig in DUPLICATES.items():
        r = by_sample[dup]
        orig_id = by_sample[orig].candidate_id  # named by its store id, as reports show it
        assert r.rejected == f"duplicate of candidate #{orig_id} (same code after normalisation)"
        assert cands[r.candidate_id].verdict is None
    assert len(verified) == 12 - len(DUPLICATES)
    assert not any("comment" in c.lower() and "again" in c for c in verified)

    # generation 1: slot 0 of island 0 mutates A (its only correct one), island 1 mutates B
    assert sample_of[by_sample[4].parent_ids[0]] == 0
    assert sample_of[by_sample[6].parent_ids[0]] == 2
    # migration before generation 2: island 0's best (C, 2.0x) joins island 1 and is its
    # best, so island 1's slot 0 mutates it; island 1's best (E, 0.9x) joins island 0
    _, moves = runner.strategy.pools(_history(runner, store, run_id, spec), 2)
    assert moves == [(2, 0, 1, 4), (2, 1, 0, 6)]
    assert sample_of[by_sample[10].parent_ids[0]] == 4
    assert sample_of[by_sample[8].parent_ids[0]] == 4

    # failures come back as lessons in later prompts, parents with code, verdict, diagnosis
    prompts = {c.sample: m[-1]["content"] for c, m in provider.calls}
    assert "wrong values at [3, 7]" in prompts[4] and "Lessons from failed" in prompts[4]
    assert "repeated an earlier candidate" in prompts[6]
    assert "NaN in output" in prompts[8] and "wrong values" not in prompts[0]
    assert "TAG = 'C'" in prompts[10] and "Verdict: correct" in prompts[10]
    assert "2.00x vs eager" in prompts[10] and "Diagnosis:" in prompts[10]
    assert all("## Parent" not in prompts[s] for s in range(4))
    st = runner.states[KEY]
    assert st.attempts == 12 and st.best_speedup == 2.5


def _history(runner: Runner, store: Store, run_id: int, spec):
    from kbench.runner import _with_key

    runner._calls = [_with_key(c, runner._problem_keys()) for c in store.llm_calls_for(run_id)]
    runner._lineage = store.lineage_for(run_id)
    return [p.attempt for p in runner._restore(spec)]


def test_resume_after_a_stop_mid_generation_rebuilds_the_same_population(tmp_path, spec):
    """A run stopped by its call budget in the middle of generation 1 and resumed without
    the limit ends with exactly the population of an uninterrupted run; no call is asked for
    twice and the generation counter goes on from where it stopped."""
    script = {(KEY, s): t for s, t in SCRIPT.items()}
    store = Store(str(tmp_path / "kbench.db"))
    whole = store.create_run("whole", model="keyed", strategy="evolve")
    ref = KeyedProvider(script)
    run_evolve(store, whole, spec, evolve_cfg(), ref, [])

    cut = store.create_run("cut", model="keyed", strategy="evolve")
    first = KeyedProvider(script)
    r1 = run_evolve(store, cut, spec, evolve_cfg(max_calls=6), first, [])
    assert r1.stop_reason and "6 of 6 completions" in r1.stop_reason
    assert sorted(c.sample for c, _ in first.calls) == list(range(6))
    second = KeyedProvider(script)
    run_evolve(store, cut, spec, evolve_cfg(), second, [])
    assert sorted(c.sample for c, _ in second.calls) == list(range(6, 12))
    assert population(store, cut) == population(store, whole)
    # the resumed calls' prompts are the uninterrupted run's (same parents, same lessons)
    asked = {c.sample: m for c, m in second.calls}
    assert asked == {c.sample: m for c, m in ref.calls if c.sample >= 6}


def _agent_loop(agent: Agent, task: Task) -> list:
    history: list = []

    async def loop() -> None:
        while not agent.done(history):
            props = await agent.propose(task, history)
            if not props:
                break
            for p in props:
                history.append(p.attempt(fake_verdict(KEY, p.code) if p.code else None))

    asyncio.run(loop())
    return history


def _wide_script() -> dict:
    return {(KEY, s): candidate(f"S{s}", speed=1.0 + s / 100) for s in range(64)}


def test_call_budget_counts_calls_in_flight(spec):
    """Eight seed calls are wanted at once; with a 3-call budget only 3 ever start."""
    provider = KeyedProvider(_wide_script(), delay_s=0.05)
    agent = Agent(provider, make_strategy("evolve", islands=2, population=4, generations=2),
                  budget=Budget(max_completions=3))
    history = _agent_loop(agent, Task(spec))
    assert len(provider.calls) == len(history) == 3 and provider.peak_in_flight == 3
    assert agent.stop_reason == "made 3 of 3 completions"


@pytest.mark.parametrize("limit", ["usd", "tokens"])
def test_usd_and_token_budgets_reserve_each_call_in_flight(spec, limit):
    """A call starts only if the spend so far, the worst case of every call in flight and its
    own worst case fit: checked at the moment each call starts, before any returns."""
    seen: list[tuple[float, float]] = []
    provider = KeyedProvider(_wide_script(), delay_s=0.05, cost_usd=0.05, price=100.0,
                             on_call=lambda ctx: seen.append(_state(agent.budget, limit)))
    cap = 0.5 if limit == "usd" else 6000  # a call's worst case: ~$0.37, ~3,700 tokens
    budget = Budget(max_usd=cap) if limit == "usd" else Budget(max_tokens=cap)
    agent = Agent(provider, make_strategy("evolve", islands=2, population=4, generations=3),
                  max_tokens=1000, budget=budget)
    _agent_loop(agent, Task(spec))
    assert seen and all(spent + held <= cap for spent, held in seen)
    assert 1 <= provider.peak_in_flight < 8  # without reservations all 8 seeds would start
    assert _state(agent.budget, limit)[0] <= cap and agent.budget.in_flight.calls == 0
    assert agent.stop_reason is not None  # stopped by the budget, not by running out of work


def _state(b: Budget, limit: str) -> tuple[float, float]:
    s = b.spend
    if limit == "usd":
        return s.cost_usd, b.in_flight.usd
    return s.input_tokens + s.output_tokens, b.in_flight.tokens


def test_stop_rules_stall_and_roofline(spec):
    # untimed (CPU): every correct candidate ties, so nothing improves after generation 0
    stall = make_strategy("evolve", islands=1, population=2, generations=10, stall_generations=2)
    history = _agent_loop(Agent(KeyedProvider({(KEY, s): candidate(f"S{s}") for s in range(20)}),
                                stall), Task(spec))
    assert len(history) == 6 and stall.stop_reason(history) == "no improvement for 2 generations"

    roof = make_strategy("evolve", islands=1, population=2, generations=10, roofline_share=0.8)
    agent = Agent(KeyedProvider(_wide_script()), roof)
    history: list = []

    async def loop() -> None:
        while not agent.done(history):
            for p in await agent.propose(Task(spec), history):
                sol = 85.0 if p.sample == 3 else 40.0  # the second generation reaches 85 %
                history.append(p.attempt(fake_verdict(KEY, p.code, sol_pct=sol)))

    asyncio.run(loop())
    assert len(history) == 4 and "85% of the speed of light" in roof.stop_reason(history)


# -- a real `kbench run` (interpreter), killed with SIGKILL and resumed --------------------

def _relu(block: int, note: str = "") -> str:
    src = (EXAMPLES / "level1" / "relu.py").read_text().replace("BLOCK = 8192",
                                                                f"BLOCK = {block}")
    return src + (f"\n# {note}\n" if note else "")


def _replay_file(path: Path) -> Path:
    """12 calls (2 islands x 2 slots x 3 generations): correct kernels of several block
    sizes, one that does not compile and two reformatted duplicates."""
    broken = "import torch\nclass ModelNew(torch.nn.Module):\n    def forward(self, x)\n"
    replies = {0: _relu(1024), 1: broken, 2: _relu(2048), 3: _relu(1024, "dup"),
               4: _relu(512), 5: _relu(4096), 6: _relu(256), 7: _relu(2048, "dup again"),
               8: _relu(128), 9: _relu(8192), 10: _relu(64), 11: _relu(16384)}
    lines = [json.dumps({"problem": KEY, "sample": s, "turn": s // 4,
                         "response": f"```python\n{t}\n```"}) for s, t in replies.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cmd(replay: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "kbench.cli", "run", "--model", f"replay:{replay}",
            "--problems", KEY, "--device", "cpu", "--name", name, "--strategy", "evolve",
            "--islands", "2", "--population", "2", "--generations", "3", "--concurrency", "2"]


def test_sigkill_mid_run_and_resume_gives_the_uninterrupted_population(tmp_path):
    """Asserted: after SIGKILL while generation >= 1 is under way and ``--resume``, (a) the
    lineage table holds each (generation, island, slot) exactly once: no stored call is asked
    for again, and the resumed run goes on from the interrupted generation; (b) the final
    population -- every attempt's generation, island, slot, kind, parents, normalised code and
    verdict status -- equals that of an uninterrupted run over the same replay script."""
    replay = _replay_file(tmp_path / "script.jsonl")
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    whole_dir.mkdir()
    cut_dir.mkdir()
    whole = subprocess.Popen(_cmd(replay, "whole"), cwd=whole_dir, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    cut = subprocess.Popen(_cmd(replay, "cut"), cwd=cut_dir, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    db_path = cut_dir / "kbench.db"
    deadline, db, n = time.monotonic() + 120, None, 0
    while time.monotonic() < deadline and cut.poll() is None:
        if db_path.exists():
            db = db or Store(str(db_path))
            run = db.get_run("cut")
            n = len(db.llm_calls_for(run.id)) if run else 0
            if n >= 5:  # generation 1 is under way
                break
        time.sleep(0.05)
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait()
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out
    assert db is not None and 5 <= n < 12, f"killed after {n} calls"
    run_id = db.get_run("cut").id
    before = {(r.generation, r.island, r.slot) for r in db.lineage_for(run_id).values()}
    assert len(before) < 12

    r = subprocess.run([sys.executable, "-m", "kbench.cli", "run", "--resume", "cut",
                        "--device", "cpu"], cwd=cut_dir, text=True, capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = list(db.lineage_for(run_id).values())
    slots = [(x.generation, x.island, x.slot) for x in rows]
    assert len(slots) == 12 == len(set(slots)) and before <= set(slots)
    assert len(db.llm_calls_for(run_id)) == 12
    ref = Store(str(whole_dir / "kbench.db"))
    assert population(db, run_id) == population(ref, ref.get_run("whole").id)
    pop = population(db, run_id)
    assert sum(p[-1] == "rejected" for p in pop) == 2
    assert sum(p[-1] == "correct" for p in pop) == 9
    assert all(c.verdict is not None for c in db.candidates_for(run_id, KEY)
               if not db.lineage_for(run_id)[_call_of(db, run_id, c.id)].rejected)


def _call_of(db: Store, run_id: int, cand_id: int) -> int:
    return next(c.id for c in db.llm_calls_for(run_id) if c.candidate_id == cand_id)
