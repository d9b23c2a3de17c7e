"""``kbench run``: problems -> agent proposals -> sandboxed verdicts -> store -> fast_p.

One coroutine per problem asks the agent for the strategy's next requests; each reply is
stored (reply and extracted candidate in one transaction) before it is verified, and each
verdict is committed as soon as it exists. Verification runs on the configured executor
(:mod:`kbench.executors`; ``local``: one worker per GPU, or one on a CPU-only machine), so it
overlaps with the LLM calls of other problems. A run killed at any point resumes with
``--resume NAME``: stored replies are never asked for again and stored candidates without a
verdict are verified.

A strategy may tag its requests with a lineage (evolve: island, generation, slot, prompt
kind) and refuse a reply before verification (:meth:`Strategy.screen`, e.g. a duplicate):
tags, the parents' candidate ids and the refusal are stored with the attempt in one
transaction (the store's lineage table) and given back to the strategy on resume, so its
population is rebuilt as it was. A refused candidate is stored and never verified.

Several models (``cfg.model`` a list of two or more): the agent's bandit picks the provider of
each request (:mod:`agents.bandit`); each call is stored under the model that answered, and
once its sample is judged the runner credits that model with what it improved on its problem
(first correct, rise of the best speedup). On resume the stored calls credit the bandit again
in order, so it carries on from the same statistics.

Budgets besides the agent's (calls, tokens, USD, each with calls in flight reserved): wall
time, and GPU minutes (``max_gpu_minutes``: the summed wall time of every verification on a
CUDA device, tuning included); once one is reached no new candidate is asked for, and the
verifications in flight finish. With ``cfg.tune`` a problem's best correct candidate is
tuned (:func:`kbench.tuning.tune`, on the executor) when the problem finishes, if it declares
knobs; the tuned configuration per shape is stored by the tuner.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agents import Agent, Attempt, Budget, Completion, Task, make_strategy
from agents.bandit import improvement
from agents.providers import Provider
from kbench.config import RunConfig
from kbench.errors import ConfigError, KbenchError, ProblemError
from kbench.executors import Executor, make_executor
from kbench.problems import ProblemSpec
from kbench.scoring import best_verdict
from kbench.store import LLMCallRecord, Store
from sandbox.verdict import Status, Verdict

log = logging.getLogger("kbench.runner")

__all__ = ["ProblemState", "Runner", "build_executor", "example_candidate", "device_facts",
           "check_budget", "check_tune"]


def example_candidate(backend: str) -> str:
    """The shipped example candidate shown in prompts (relu, in the chosen backend)."""
    name = "relu.py" if backend == "triton" else "relu_cuda.py"
    return importlib.resources.files("kbench").joinpath(f"examples/level1/{name}").read_text()


def device_facts(store: Store, device: str) -> dict[str, Any]:
    """GPU facts for prompts: name, SMs, measured bandwidth and matmul peak (measured once
    per environment fingerprint and cached in the store)."""
    from sandbox.fingerprint import fingerprint, fingerprint_hash, measure_device_facts

    fp = fingerprint(device)
    if fp["device"] != "cuda":
        return {"name": "none (CPU only: Triton interpreter, no timing)"}
    fph = fingerprint_hash(fp)
    rec = store.get_device_facts(fph)
    facts = rec.facts if rec else None
    if facts is None:
        facts = measure_device_facts()
        store.put_device_facts(fph, fp, facts)
    return {"name": fp["gpu"], "gpu": fp["gpu"], "sms": fp["sms"], "bandwidth_gbs": facts.get("bandwidth_gbs"),
            "matmul_tflops": facts.get("bf16_tflops"), "l2_mb": fp.get("l2_mb"), **facts}


@dataclass
class ProblemState:
    """What the live view shows for one problem."""

    key: str
    attempts: int = 0
    verifying: int = 0
    last: str = "waiting"  # the latest event: asking, a verdict's status, call failed, ...
    best: str | None = None  # status of the best verdict so far, ranked as the store ranks
    best_speedup: float | None = None
    correct: bool = False
    cost_usd: float = 0.0
    done: bool = False
    tuning: bool = False
    tuned: str | None = None  # what tuning did (e.g. "tuned 3 shapes in 20 trials") or why not
    verdicts: list[Verdict] = field(default_factory=list)  # final ones, in arrival order
    # the bandit's view of the problem: a correct candidate exists, and the best speedup
    level: tuple[bool, float | None] = (False, None)

    def add_verdict(self, v: Verdict) -> None:
        """A final verdict: the latest event, and the best so far by the rule the store's
        results and the scores use (:func:`kbench.scoring.best_verdict`)."""
        self.last = v.status.value
        self.verdicts.append(v)
        best = best_verdict(self.verdicts)
        self.best, self.correct = best.status.value, best.passed
        self.best_speedup = best.speedup_eager if best.passed else None

    @property
    def status(self) -> str:
        """The status shown: the best verdict so far, as the summary and ``runs show`` rank
        it (correct first, else the latest verdict); before any verdict, the latest event.
        Work in progress follows in parentheses."""
        shown = self.best or self.last
        now = ["asking"] if self.last == "asking" and shown != "asking" else []
        if self.verifying:
            now.append(f"+{self.verifying} verifying")
        if self.tuning:
            now.append("tuning")
        return shown + (f" ({', '.join(now)})" if now else "")


@dataclass
class _Pending:
    """A stored attempt: the history record plus the candidate row awaiting its verdict."""

    attempt: Attempt
    candidate_id: int | None
    provider: Provider | None = None  # the provider that wrote it, where known


def build_slots() -> int:
    """Concurrent CUDA builds ahead of the GPU stage: a quarter of the cores this process may
    run on (CPU affinity and container CPU sets respected), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 2) // 4)


@dataclass
class Runner:
    store: Store
    provider: Provider | list[Provider]  # one per model; with several a bandit picks per call
    problems: list[ProblemSpec]
    cfg: RunConfig
    device: str
    run_id: int
    on_change: Callable[[], None] = lambda: None
    states: dict[str, ProblemState] = field(default_factory=dict)
    stop_reason: str | None = None
    executor: Executor | None = None  # default: build_executor(cfg, device)

    def __post_init__(self) -> None:
        self.providers = (list(self.provider) if isinstance(self.provider, (list, tuple))
                          else [self.provider])
        self.strategy = make_strategy(self.cfg.strategy, **self.cfg.strategy_options())
        self.budget = Budget(max_usd=self.cfg.max_cost_usd, max_tokens=self.cfg.max_tokens_total,
                             max_completions=self.cfg.max_calls)
        self.agent = Agent(self.providers, self.strategy, max_tokens=self.cfg.max_tokens,
                           temperature=self.cfg.temperature, budget=self.budget,
                           seed=self.cfg.seed)
        self.gpu_s = 0.0  # wall seconds of verifications (and tuning) on a CUDA device
        self.states = {p.key: ProblemState(p.key) for p in self.problems}
        self.t0 = time.monotonic()
        if self.executor is None:
            self.executor = build_executor(self.cfg, self.device)
        self.facts = device_facts(self.store, self.executor.devices[0])
        self.example = example_candidate(self.cfg.backend)
        # Work done ahead of the GPU stage: each problem's baselines, measured while its first
        # candidates are being written, and CUDA candidates' builds, made on CPU cores while
        # the GPU verifies others (sandbox.prebuild).
        self._baselines: dict[str, asyncio.Future[Any]] = {}
        self._builds = asyncio.Semaphore(build_slots())

    # -- resuming -----------------------------------------------------------------------
    def _restore(self, spec: ProblemSpec) -> list[_Pending]:
        """Rebuild a problem's history from the store, oldest first."""
        cands = {c.id: c for c in self.store.candidates_for(self.run_id, spec.key)}
        calls = [c for c in self._calls if c.problem_key == spec.key]
        out = []
        for c in calls:
            meta = (c.usage or {}).get("kbench", {})
            comp = Completion(
                text=c.response, input_tokens=c.input_tokens or 0,
                output_tokens=c.output_tokens or 0, finish_reason=meta.get("finish_reason", "stop"),
                latency_s=c.latency_s or 0.0, raw_model=c.model, cost_usd=c.cost_usd,
                error=c.error, error_kind=meta.get("error_kind"),
            )
            cand = cands.get(c.candidate_id) if c.candidate_id else None
            verdict = cand.verdict.verdict() if cand and cand.verdict else None
            lin = self._lineage.get(c.id)
            att = Attempt(int(meta.get("sample", 0)), int(meta.get("turn", 0)), comp,
                          cand.source if cand else None, verdict, tuple(meta.get("parents", ())),
                          lin.tags() if lin is not None else {},
                          c.candidate_id if cand else None)
            out.append(_Pending(att, c.candidate_id if cand else None, self._provider_of(c)))
            self.budget.charge([comp])
            if verdict is not None:
                self._add_gpu_time(verdict)
        return out

    def _provider_of(self, call: Any) -> Provider | None:
        """The provider of this run that made a stored call (matched by name and model)."""
        for p in self.providers:
            if (p.name, p.model) == (call.provider, call.model):
                return p
        return None

    def _credit(self, st: ProblemState, pending: _Pending, att: Attempt) -> None:
        """A judged sample: the bandit learns what it improved on its problem, at what cost."""
        v = att.verdict
        passed = v is not None and v.passed and not att.rejected
        correct, best = st.level
        gain, best, correct = improvement(best, correct, passed,
                                          v.speedup_eager if v is not None else None)
        st.level = (correct, best)
        self.agent.credit(pending.provider, gain, att.completion)

    def _add_gpu_time(self, v: Verdict) -> None:
        if v.device.startswith("cuda") and v.wall_s:
            self.gpu_s += v.wall_s

    def _out_of_gpu(self) -> str | None:
        lim = self.cfg.max_gpu_minutes
        if lim is not None and self.gpu_s / 60 >= lim:
            return f"used {self.gpu_s / 60:.2f} of {lim:g} GPU-minutes"
        return None

    # -- one problem --------------------------------------------------------------------
    def _ahead_of_time(self, spec: ProblemSpec) -> None:
        """Start measuring ``spec``'s baselines on the executor; its verifications wait for
        them rather than measure them again."""
        if not (self.cfg.timing and self.device.startswith("cuda")) or self.executor.remote:
            return  # a remote executor's tasks measure them, cached per worker node
        from sandbox import measure_baselines

        def job(device: str) -> Any:
            return measure_baselines(spec, self.store, device=device)

        self._baselines[spec.key] = asyncio.wrap_future(self.executor.submit(job))

    async def _prebuild(self, code: str) -> None:
        """Build a CUDA candidate's extensions on CPU cores before it takes a GPU slot. Any
        source that builds (``load_inline``) is one, whatever ``--backend`` the prompt asked
        for: built inside its verification instead, it held a job slot and the device's
        shared hold for the whole nvcc build, so no other job could be timed meanwhile (the
        suspected cause of the 2026-12-07 load test's 24 verdicts in 370 s)."""
        if not self.device.startswith("cuda") or self.executor.remote:
            return  # nothing to build for; a remote executor builds in tasks of its own
        from sandbox.policy import detect_backend
        from sandbox.prebuild import prebuild

        if await asyncio.to_thread(detect_backend, code) != "cuda":
            return  # a Triton candidate compiles at its first launch; no build slot taken

        async with self._builds:
            try:
                got = await asyncio.to_thread(prebuild, code, self.device)
                log.debug("prebuild: %s %s (%.1f s)", got.state, got.why, got.wall_s)
            except Exception as e:  # noqa: BLE001 - the verification builds it then
                log.warning("prebuild failed (the verification will build): %s", e)

    async def _verify(self, spec: ProblemSpec, code: str) -> Verdict:
        from sandbox import verify

        await self._prebuild(code)
        ahead = self._baselines.get(spec.key)
        if ahead is not None:
            try:
                await asyncio.shield(ahead)
            except Exception as e:  # noqa: BLE001 - the verification measures them then
                log.warning("%s: baselines ahead of time failed: %s", spec.key, e)
        if self.executor.remote:
            return await self._verify_remote(spec, code)

        def job(device: str) -> Verdict:
            try:
                return verify(spec, code, device=device, cache=self.store,
                              timing=self.cfg.timing,
                              allow_libraries=tuple(self.cfg.allow_libraries))
            except ProblemError as e:  # the problem's fault, not the device's: a verdict
                return self._failed(spec, e)

        return await asyncio.wrap_future(self.executor.submit(job))

    async def _verify_remote(self, spec: ProblemSpec, code: str) -> Verdict:
        """Hand the executor a Job: all a worker elsewhere needs (the problem by path and
        content hash, the candidate, the settings; no store, no secrets). The verdict is
        stored under the problem's key as this run loaded it (the worker knows its file)."""
        from sandbox.backends._base import ENV_VAR
        from sandbox.job import Candidate, Job

        job = Job(str(spec.path), spec.source_hash, Candidate(code, self.cfg.backend),
                  device=self.device, timing=self.cfg.timing,
                  allow_libraries=tuple(self.cfg.allow_libraries),
                  isolation=os.environ.get(ENV_VAR, "").strip())
        try:
            v = await asyncio.wrap_future(self.executor.submit_job(job))
        except ProblemError as e:  # the problem's fault, not the worker's: a verdict
            return self._failed(spec, e)
        return replace(v, problem=spec.key)

    def _failed(self, spec: ProblemSpec, e: Exception) -> Verdict:
        return Verdict(problem=spec.key, status=Status.RUNTIME_ERROR, device=self.device,
                       backend=self.cfg.backend, reason=f"verifier failed: {e}")

    async def _settle(self, spec: ProblemSpec, pending: _Pending, st: ProblemState) -> Attempt:
        """Verify a stored candidate that has no verdict yet, and store the verdict."""
        att = pending.attempt
        if att.code is None or att.verdict is not None or pending.candidate_id is None \
                or att.rejected:
            return att
        st.verifying += 1
        self.on_change()
        try:
            verdict = await self._verify(spec, att.code)
        except Exception as e:  # noqa: BLE001 - a harness fault must not end the run
            verdict = self._failed(spec, e)
        finally:
            st.verifying -= 1
        self._add_gpu_time(verdict)
        from sandbox.fingerprint import fingerprint_hash

        self.store.add_verdict(pending.candidate_id, verdict, fingerprint_hash(verdict.fingerprint))
        att = replace(att, verdict=verdict)
        self._note(st, att)
        return att

    def _note(self, st: ProblemState, att: Attempt) -> None:
        st.attempts += 1  # called once per attempt, when it is final
        v = att.verdict
        if att.rejected:
            st.last = "duplicate" if att.rejected.startswith("duplicate") else "refused"
        elif v is None:
            st.last = "no code" if att.completion.ok else "call failed"
        else:
            st.add_verdict(v)
        self.on_change()

    def _out_of_time(self) -> str | None:
        lim = self.cfg.time_limit_s
        if lim is not None and time.monotonic() - self.t0 >= lim:
            return f"reached the wall-time limit of {lim:g} s"
        return None

    async def _problem(self, spec: ProblemSpec) -> None:
        st = self.states[spec.key]
        pid = self.store.upsert_problem(spec.key, spec.suite, spec.source_hash, spec.source)
        pending = self._restore(spec)
        self._ahead_of_time(spec)
        for p in pending:
            if p.attempt.verdict is not None or p.attempt.code is None or p.attempt.rejected:
                self._note(st, p.attempt)
        history = list(await asyncio.gather(*[self._settle(spec, p, st) for p in pending]))
        for p, att in zip(pending, history):
            self._credit(st, p, att)
        task = Task(problem=spec, backend=self.cfg.backend, device=self.facts,
                    example=self.example, roofline_ms=self._roofline(spec))
        while not self.agent.done(history):
            why = self._out_of_time() or self._out_of_gpu()
            if why:
                self.stop_reason = self.stop_reason or why
                break
            st.last = "asking"
            self.on_change()
            props = await self.agent.propose(task, history)
            if not props:
                break
            stored: list[_Pending] = []
            for p in props:
                c = p.completion
                tags = dict(p.request.lineage)
                if p.code is not None:
                    refused = self.strategy.screen(p.code,
                                                   [*history, *(x.attempt for x in stored)])
                    if refused:
                        tags["rejected"] = refused
                meta = {"sample": p.sample, "turn": p.request.turn,
                        "parents": list(p.request.parents), "finish_reason": c.finish_reason,
                        "error_kind": c.error_kind}
                # pending[i] is history[i]: a parent id indexes both
                parents = p.request.parents
                parent_cand = pending[parents[-1]].candidate_id if parents else None
                prov = p.provider or self.providers[0]
                _, cand_id = self.store.add_attempt(
                    self.run_id, pid, prov.name, prov.model,
                    list(p.request.messages), c.text, source=p.code, backend=self.cfg.backend,
                    attempt=p.request.turn, parent_id=parent_cand,
                    usage={"kbench": meta}, input_tokens=c.input_tokens,
                    output_tokens=c.output_tokens, cost_usd=c.cost_usd, latency_s=c.latency_s,
                    error=c.error, lineage=tags or None,
                    parent_ids=[pending[i].candidate_id for i in parents
                                if pending[i].candidate_id is not None])
                st.cost_usd += c.cost_usd or 0.0
                stored.append(_Pending(replace(p.attempt(None), lineage=tags, candidate_id=cand_id),
                                      cand_id, prov))
            for s in stored:
                if s.attempt.code is None or s.attempt.rejected:
                    self._note(st, s.attempt)
            settled = await asyncio.gather(*[self._settle(spec, s, st) for s in stored])
            for s, att in zip(stored, settled):
                self._credit(st, s, att)
                pending.append(_Pending(att, s.candidate_id, s.provider))
                history.append(att)
        await self._tune(spec, history, st)
        st.done = True
        st.last = st.last if st.last != "asking" else "stopped"
        self.on_change()

    # -- tuning -------------------------------------------------------------------------
    async def _tune(self, spec: ProblemSpec, history: list[Attempt], st: ProblemState) -> None:
        """Tune the problem's best correct candidate, if it declares knobs (``cfg.tune``)."""
        if not self.cfg.tune:
            return
        from kbench.tuning import space, tune

        judged = [a for a in history if a.verdict is not None and a.code and not a.rejected]
        best = best_verdict([a.verdict for a in judged])  # type: ignore[misc]
        if best is None or not best.passed:
            st.tuned = "not tuned: no correct candidate"
            return
        code = next(a.code for a in judged if a.verdict is best)
        try:
            knobs = space(code)
        except ConfigError as e:
            st.tuned = f"not tuned: {e}"
            return
        if not knobs:
            st.tuned = "not tuned: the best candidate declares no knobs"
            return
        why = self._out_of_gpu() or self._out_of_time()
        if why:
            st.tuned = f"not tuned: {why}"
            return
        url = self.store.engine.url.render_as_string(hide_password=False)

        def job(device: str) -> Any:
            return tune(spec, code, device=device, storage_url=url,  # type: ignore[arg-type]
                        n_trials=self.cfg.tune_trials, seed=self.cfg.seed)

        st.tuning = True
        self.on_change()
        t0 = time.monotonic()
        try:
            r = await asyncio.wrap_future(self.executor.submit(job))
            st.tuned = (f"tuned {len(r.best)} shape(s): {r.complete} complete, {r.pruned} "
                        f"pruned, {r.failed} failed of {r.trials} trials")
        except KbenchError as e:  # a bad knob space, a study for another space: say why
            st.tuned = f"not tuned: {e}"
        except Exception as e:  # noqa: BLE001 - the run's verdicts stand without tuning
            log.warning("%s: tuning failed: %s", spec.key, e)
            st.tuned = f"not tuned: tuning failed: {e}"
        finally:
            st.tuning = False
            if self.device.startswith("cuda"):
                self.gpu_s += time.monotonic() - t0
        log.info("%s: %s", spec.key, st.tuned)
        self.on_change()

    def _roofline(self, spec: ProblemSpec) -> dict[str, float | None]:
        from sandbox.verifier import roofline_ms

        if "bandwidth_gbs" not in self.facts:
            return {}
        out = {}
        for name, shape in spec.shapes.items():
            flops, nbytes = spec.roofline(shape)
            out[name] = roofline_ms(flops, nbytes, spec.meta.dtype, self.facts)
        return out

    async def run(self) -> None:
        self._calls = [_with_key(c, self._problem_keys()) for c in self.store.llm_calls_for(self.run_id)]
        self._lineage = self.store.lineage_for(self.run_id)
        for p in self.providers:
            p.set_concurrency(self.cfg.concurrency)
        try:
            await asyncio.gather(*[self._problem(p) for p in self.problems])
        finally:
            for p in self.providers:
                await p.aclose()
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.stop_reason = self.stop_reason or self.agent.stop_reason

    def _problem_keys(self) -> dict[int, str]:
        return {pid: key for key, pid in self._pids().items()}

    def _pids(self) -> dict[str, int]:
        return {p.key: self.store.upsert_problem(p.key, p.suite, p.source_hash, p.source)
                for p in self.problems}

    @property
    def spend(self) -> Any:
        return self.budget.spend


@dataclass(frozen=True)
class _KeyedCall:
    rec: LLMCallRecord
    problem_key: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rec, name)


def _with_key(rec: LLMCallRecord, keys: dict[int, str]) -> _KeyedCall:
    return _KeyedCall(rec, keys.get(rec.problem_id) if rec.problem_id is not None else None)


def build_executor(cfg: RunConfig, device: str) -> Executor:
    """The executor ``cfg`` names, for runs on ``device`` (``cpu``, ``cuda`` or ``cuda:N``).

    Raises:
        ExecutorError: it cannot start (e.g. a Ray cluster that cannot be reached).
    """
    # cpu, one named GPU, or None: every visible GPU (the executor finds them)
    devices = ["cpu"] if not device.startswith("cuda") else [device] if ":" in device else None
    if cfg.executor == "ray":
        return make_executor("ray", devices=devices, address=cfg.ray_address,
                             jobs_per_device=cfg.jobs_per_device)
    return make_executor(cfg.executor, devices=devices, jobs_per_device=cfg.jobs_per_device)


def check_budget(cfg: RunConfig) -> None:
    """A budget of 0 can do nothing: say so instead of starting a run that does nothing."""
    for name in ("max_calls", "max_tokens_total", "max_cost_usd", "time_limit_s",
                 "max_gpu_minutes"):
        if getattr(cfg, name) == 0:
            raise ConfigError(f"{name.replace('_', '-')} is 0, so the run could do nothing; "
                              "raise it or leave it unset for no limit")


TUNE_NEEDS_GPU = ("--tune needs a CUDA GPU: tuning minimises measured kernel time, and there "
                  "is no timing on CPU; drop --tune, or run with --device cuda")


def check_tune(cfg: RunConfig, device: str) -> None:
    """``--tune`` can only work with CUDA timing: refuse it before anything runs."""
    if not cfg.tune:
        return
    if cfg.executor == "ray":
        raise ConfigError("--tune runs beside the store, on the local executor; drop --tune "
                          "or use --executor local")
    if not device.startswith("cuda"):
        raise ConfigError(TUNE_NEEDS_GPU)
    if not cfg.timing:
        raise ConfigError("--tune needs timing (it minimises measured kernel time); drop "
                          "--no-timing or --tune")
