"""The ``kbench`` command line. Every user-facing fault is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kbench.errors import ConfigError, KbenchError, ProblemError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="kbench: LLM-written GPU kernels, verified honestly.",
)
problems_app = typer.Typer(no_args_is_help=True, help="List, show and scaffold problems.")
app.add_typer(problems_app, name="problems")
runs_app = typer.Typer(no_args_is_help=True, help="Stored runs: list and show.")
app.add_typer(runs_app, name="runs")

out = Console()
err = Console(stderr=True)


def main() -> None:
    """Console entry point: turns kbench's errors into one clear line and a non-zero exit."""
    try:
        if "--json" in sys.argv[1:]:
            sys.exit(_app_json())
        app()
    except KbenchError as e:  # one line, even where a reason quotes a multi-line message
        line = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except UnicodeDecodeError as e:  # a read this module did not route through _read_text
        err.print(f"[bold red]error:[/] a file is not UTF-8 text ({escape(str(e))})",
                  highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def _app_json() -> int:
    """:data:`app` under ``--json``: a command-line error that typer finds before any
    command runs (an unknown flag, a missing or malformed value) is ``{"error": ...}`` on
    stdout too, with one line on stderr, exit 2, as every other error under ``--json``."""
    # click's base exception (typer vendors click in newer versions: found, not imported)
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        rc = app(standalone_mode=False)
    except click_error as e:  # type: ignore[misc]
        msg = " ".join(e.format_message().split())
        ctx = getattr(e, "ctx", None)
        print(json.dumps({"error": msg}))
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err.print(f"[bold red]error:[/] {escape(msg)}{escape(hint)}", highlight=False,
                  soft_wrap=True)
        return int(getattr(e, "exit_code", 2) or 2)
    except typer.Abort:  # EOF at a prompt
        print(json.dumps({"error": "aborted"}))
        err.print("aborted")
        return 1
    return rc if isinstance(rc, int) else 0


def entry() -> None:
    """The ``kbench`` console script: :func:`main`, then an exit that skips the interpreter's
    teardown of torch's modules (0.6-0.7 s after every command that imported it): once no
    other thread runs, ``atexit`` handlers run and the streams are flushed, as at a normal
    exit, and the process ends."""
    try:
        main()
        code: int = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # sys.exit("message"): printed, exit 1, as the interpreter does
            print(e.code, file=sys.stderr)
            code = 1
    import threading

    # A normal exit where it costs little (no torch) or where other threads still run: the
    # interpreter's own shutdown stops thread pools left open before joining their workers.
    if "torch" not in sys.modules or any(
            t is not threading.main_thread() and not t.daemon and t.is_alive()
            for t in threading.enumerate()):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


@app.callback()
def _options(
    sandbox: Annotated[str | None, typer.Option(
        "--sandbox", metavar="NAME",
        help="Sandbox backend for every verification: forkserver, subprocess or docker "
             "(else $KBENCH_SANDBOX_BACKEND, else the first available of forkserver, "
             "subprocess). One asked for by name fails at once, in one line, when it cannot "
             "run here (docker: no engine answering, or its image missing).")] = None,
) -> None:
    """kbench: LLM-written GPU kernels, verified honestly."""
    if sandbox:
        import os

        from sandbox.backends import get_backend
        from sandbox.backends._base import ENV_VAR

        get_backend(sandbox.strip())  # ConfigError: one line, exit 2
        os.environ[ENV_VAR] = sandbox.strip()  # children of executors see it too


@contextmanager
def _json_errors(as_json: bool) -> Iterator[None]:
    """Under ``--json`` a fatal error is JSON too: ``{"error": ...}`` on stdout (and the usual
    one line on stderr, exit 2), so a script reading stdout always gets JSON."""
    try:
        yield
    except KbenchError as e:
        if as_json:
            print(json.dumps({"error": str(e)}))
        raise


def _read_text(path: Path, what: str) -> str:
    """A user's file as UTF-8 text; anything else is one clear :class:`ConfigError`."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                          f"offset {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be read ({e.strerror or e})") from None


def _prestart(device: str | None) -> None:
    """Start the sandbox's warm server before this process imports torch and makes the
    problem's inputs, so that the two start-ups overlap. The device is guessed without
    importing torch; a wrong guess costs an idle server, stopped at exit."""
    from sandbox.backends import prepare

    if device is None:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
        device = "cuda" if not hidden and os.path.exists("/dev/nvidiactl") else "cpu"
    elif device != "cpu" and not device.startswith("cuda"):
        return  # not a device: _device says so
    prepare(device)


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda, not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is visible to torch; "
                          "use --device cpu (Triton candidates run in the interpreter)")
    return device


def _fmt(x: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _parse_knobs(items: list[str]) -> dict[str, str]:
    """``--knob NAME=VALUE`` items as ``{NAME: VALUE text}``; typed against the candidate's
    declared knobs by :func:`kbench.tuning._space.parse_knobs`."""
    knobs: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--knob {item!r}: expected NAME=VALUE, e.g. --knob BLOCK=256")
        k, v = (x.strip() for x in item.split("=", 1))
        if k in knobs:
            raise ConfigError(f"--knob {k} is given twice ({k}={knobs[k]}, {k}={v}); give it once")
        knobs[k] = v
    return knobs


@app.command("eval")
def eval_cmd(
    problem: Annotated[str, typer.Option("--problem", "-p", help="Problem id (level1/relu) or file path.")],
    candidate: Annotated[Path, typer.Option("--candidate", "-c", help="Candidate file (ModelNew).")],
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if visible).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON verdict object.")] = False,
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path (default kbench.db / $KBENCH_STORE).")] = None,
    timing: Annotated[bool, typer.Option(help="Time the candidate and baselines on a GPU.")] = True,
    knob: Annotated[list[str] | None, typer.Option(help="Set a TUNE knob, NAME=VALUE (repeatable).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show which checks ran, what each saw and which rule fired where.")] = False,
    allow_library: Annotated[list[str] | None, typer.Option("--allow-library", help="Let the candidate run this library's kernels (module or kernel-name prefix; repeatable).")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="Show the per-kernel device-time breakdown of a correct candidate (GPU) and run Nsight Compute on its main shape where ncu is installed.")] = False,
) -> None:
    """Verify one candidate against one problem. Exit 0 if and only if it is correct."""
    stored: list[int] = []  # the candidate's id once it is stored
    try:
        with _json_errors(as_json):
            _eval(problem, candidate, device, as_json, store, timing, knob, explain,
                  tuple(allow_library or ()), profile, stored)
    except KeyboardInterrupt:  # (typer would turn it into a silent exit 130)
        from sandbox._process import kill_all

        kill_all()  # no sandbox child outlives the command
        line = ("interrupted: nothing was stored for this candidate" if not stored else
                f"interrupted: candidate #{stored[0]} and its verdict were stored")
        if as_json:
            print(json.dumps({"error": line}))
        err.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _eval(problem: str, candidate: Path, device: str | None, as_json: bool, store: str | None,
          timing: bool, knob: list[str] | None, explain: bool = False,
          allow_libraries: tuple[str, ...] = (), profile: bool = False,
          stored: list[int] | None = None) -> None:
    if candidate.is_dir():
        raise ConfigError(f"--candidate {candidate}: is a directory; pass the candidate's "
                          "Python file (it defines class ModelNew)")
    if not candidate.is_file():
        raise ConfigError(f"--candidate {candidate}: no such file")
    given = _parse_knobs(knob or [])
    source = _read_text(candidate, "--candidate")
    knobs: dict[str, Any] = {}
    verified = source
    if given:  # checked against the candidate's TUNE / autotune configs before anything runs
        from kbench.tuning._space import apply, parse_knobs

        knobs = parse_knobs(source, given)
        # module globals are set in the child; an autotune choice ("kernel.NAME") rewrites
        # that kernel's configs to the one chosen, and that source is verified and stored
        verified, _ = apply(source, knobs)
    _prestart(device)
    from kbench.problems import load_report
    from kbench.store import Store
    from sandbox import Limits, verify
    from sandbox.fingerprint import fingerprint_hash

    specs, failures = load_report(problem)
    if len(specs) + len(failures) != 1:
        raise ConfigError(f"--problem {problem!r} matches {len(specs) + len(failures)} problems; "
                          "name exactly one")
    if failures:
        raise ProblemError(f"--problem {failures[0].path}: {failures[0].error}")
    spec = specs[0]
    dev = _device(device)
    from kbench.runflow import store_url

    # --store, $KBENCH_STORE, kbench.toml's store, kbench.db; for writing: a store that
    # cannot be written or is damaged is refused before the candidate runs
    db = Store(store_url(store), read_only=False)
    plain = {k: v for k, v in knobs.items() if "." not in k}
    verdict = verify(spec, verified, device=dev, cache=db, timing=timing, knobs=plain,
                     allow_libraries=allow_libraries, limits=Limits(profile_ncu=profile))
    with _sigint_deferred():  # the candidate and its verdict are stored together, or neither
        pid = db.upsert_problem(spec.key, spec.suite, spec.source_hash, spec.source)
        cid = db.add_candidate(pid, verified, verdict.backend, origin="eval",
                               knobs=knobs or None)
        db.add_verdict(cid, verdict, fingerprint_hash(verdict.fingerprint))
        if stored is not None:
            stored.append(cid)
    if as_json:
        d = verdict.to_dict()
        if not explain:
            d.pop("explain", None)
        print(json.dumps(d, indent=2, default=str))
    else:
        _print_verdict(verdict)
        if profile:
            _print_profile(verdict)
        if explain:
            _print_explain(verdict)
    raise typer.Exit(0 if verdict.passed else 1)


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C inside the block is raised when the block ends (main thread only: elsewhere,
    signal handlers cannot be set and the block runs as it is)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def _print_profile(v: Any) -> None:
    """``kbench eval --profile``: where the main shape's device time went, and ncu's line."""
    p = getattr(v, "profile", None)
    if not p:
        why = ("timed correct candidates on a GPU only" if v.passed else
               "correct candidates only")
        out.print(f"profile: none ({why})", style="dim")
        return
    out.print(f"\n[bold]Profile[/] of shape {escape(str(p.get('shape')))}: "
              f"{p.get('device_us', 0):.1f} us of device time in {p.get('launches', 0)} "
              "launches (one call, after timing)"
              + (f", on {p['streams']} streams" if (p.get("streams") or 0) > 1 else ""))
    if p.get("error"):
        out.print(f"breakdown unavailable: {p['error']}", highlight=False, markup=False)
    t = Table(show_edge=False)
    for col in ("kernel", "own", "calls", "us", "share"):
        t.add_column(col, justify="left" if col == "kernel" else "right")
    for k in p.get("kernels", []):
        t.add_row(escape(str(k.get("name")))[:60], "yes" if k.get("own") else "no",
                  str(k.get("calls")), f"{k.get('us', 0):.1f}", f"{k.get('share', 0):.0%}")
    if p.get("other_us"):
        t.add_row("(others)", "", "", f"{p['other_us']:.1f}", "")
    out.print(t)
    ncu = p.get("ncu")
    if ncu:
        where = f" ({ncu['kernel']})" if ncu.get("kernel") else ""
        out.print(f"ncu{where}: {ncu.get('diagnosis')}", highlight=False, markup=False)
    else:
        out.print("ncu: not run", style="dim")


def _launch_note(ms: float | None) -> str:
    """``, launch 0.12 ms covered`` where the timing covered the host's launch cost."""
    return f", launch {ms:.3g} ms covered" if ms else ""


def _print_explain(v: Any) -> None:
    """How the verdict was reached: every check that ran and what it saw, in order."""
    e = v.explain or {}
    out.print("\n[bold]How this verdict was reached[/]")
    pol = e.get("policy", {})
    if not pol.get("checked", True):
        out.print("1. static policy: skipped")
    elif pol.get("violations"):
        out.print(f"1. static policy ({pol.get('backend')}): {len(pol['violations'])} rule(s) fired")
        for line in pol["violations"]:
            out.print(f"   {line}", highlight=False, markup=False)
    else:
        out.print(f"1. static policy ({pol.get('backend')}): passed (no rule fired)")
    cases = e.get("cases", [])
    if cases:
        out.print(f"2. correctness in a sandboxed child, Model and ModelNew in {e.get('mode')} "
                  "mode, fresh inputs per trial in the same buffers:")
        for c in cases:
            kinds: dict[str, int] = {}
            for t in c["trials"]:
                k = t["kind"] + (" (non-negative)" if t.get("positive") else "") + \
                    (" SKIPPED: reference not finite" if t.get("skipped") else "")
                kinds[k] = kinds.get(k, 0) + 1
            what = ", ".join(f"{n}x {k}" for k, n in kinds.items())
            extra = " (derived, never shown)" if c.get("derived") else ""
            extra += " (timed)" if c.get("timed") else ""
            out.print(f"   {c['name']}{extra}: {what}", highlight=False, markup=False)
            if c.get("redrawn"):
                held = [n for n in c["redrawn"] if n not in c.get("not_handed_over", [])]
                out.print(f"     redrawn constant tensors handed to ModelNew: {held or 'none'}; "
                          f"not found in ModelNew: {c.get('not_handed_over') or 'none'}",
                          highlight=False, markup=False)
        tol = e.get("tolerance", {})
        out.print(f"3. comparison: {tol.get('check')} (atol={tol.get('atol')}, "
                  f"rtol={tol.get('rtol')}); outputs audited for type, aliasing and mutated "
                  "inputs; freed memory poisoned with NaN", highlight=False, markup=False)
        ran = e.get("ran", {})
        out.print("4. every checked call traced (ATen ops beyond allocation, views and copies "
                  f"are refused): seen {ran.get('ops') or 'none'}", highlight=False,
                  markup=False)
        out.print(f"5. kernel provenance: Triton launches {ran.get('launches') or 'none'}; "
                  f"device kernels on the profiled calls {ran.get('kernels') or 'not profiled (no GPU)'}",
                  highlight=False, markup=False)
    tim = e.get("timing")
    if tim:
        r = tim.get("rule", {})
        out.print(f"6. timing, the same rule for every side: at least {r.get('min_reps')} samples"
                  + (f", {r.get('min_wall_ms')} ms of sampling" if r.get("min_wall_ms") else "")
                  + (f", {r.get('min_measured_ms')} ms measured" if r.get("min_measured_ms") else "")
                  + f", then to {r.get('target_rse')} "
                  f"relative error or {r.get('budget_s')} s; calls under "
                  f"{r.get('small_call_ms')} ms timed in batches; noisy above "
                  f"{r.get('noisy_spread')} IQR/median"
                  + ("; the host's launch cost covered by a device spin, as do_bench's "
                     "queueing does" if r.get("cover_launch") else ""),
                  highlight=False, markup=False)
        for shape, sides in tim.get("shapes", {}).items():
            parts = [f"{side} {t['median_ms']:.4g} ms (spread {t['spread']:.1%}, "
                     f"{t['samples']} x {t['calls_per_sample']} calls"
                     f"{_launch_note(t.get('launch_ms'))}"
                     f"{', NOISY' if t.get('noisy') else ''})" for side, t in sides.items()]
            out.print(f"   {shape}: " + "; ".join(parts), highlight=False, markup=False)
    if e.get("first_failure"):
        out.print(f"[bold]first failing check:[/] {e['first_failure']}", highlight=False)
    elif v.passed:
        out.print("[bold]every check passed[/]")


def _print_verdict(v: Any) -> None:
    color = "green" if v.passed else "red"
    out.print(f"[bold]{v.problem}[/] ({v.backend}, {v.device}): [bold {color}]{v.status.value}[/]")
    out.print(v.reason, highlight=False, markup=False)
    if v.shapes:
        timed = v.timing_available
        t = Table(show_edge=False)
        cols = ["shape", "sizes", "trials", "ok", "max abs err", "rel L2 err"]
        if timed:
            cols += ["ms", "eager ms", "compile ms", "× eager", "× compile", "SOL%"]
        for col in cols:
            t.add_column(col, justify="left" if col in ("shape", "sizes") else "right")
        for s in v.shapes:
            sizes = ",".join(f"{k}={val}" for k, val in s.params.items() if isinstance(val, int))
            row = [s.name + (" *" if s.derived else ""), sizes[:48], str(s.trials),
                   "yes" if s.passed else "no", _fmt(s.max_abs_err, ".2e"),
                   _fmt(s.rel_l2_err, ".2e")]
            if timed:
                row += [_fmt(s.timing.median_ms if s.timing else None, ".4f"),
                        _fmt(s.eager.median_ms if s.eager else None, ".4f"),
                        _fmt(s.compiled.median_ms if s.compiled else None, ".4f"),
                        _fmt(s.speedup_eager, ".2f"), _fmt(s.speedup_compile, ".2f"),
                        _fmt(s.sol_pct, ".0f")]
            t.add_row(*row)
        out.print(t)
        out.print("* derived shape: never shown to the candidate; +params: the reference's "
                  "constant parameters redrawn", style="dim")
    for note in getattr(v, "notes", ()):
        out.print(f"note: {note}", style="dim", highlight=False, markup=False)
    if not v.timing_available:
        why = "no GPU" if v.device == "cpu" else "not measured"
        out.print(f"timing: unavailable ({why})", style="dim")
    else:
        out.print(f"speedup vs eager {_fmt(v.speedup_eager, '.2f', 'x')}, vs compile "
                  f"{_fmt(v.speedup_compile, '.2f', 'x')}, SOL {_fmt(v.sol_pct, '.0f', '%')}")


@app.command("run")
def run_cmd(
    model: Annotated[list[str] | None, typer.Option(help="openai/<m>, anthropic/<m>, replay:<PATH>, or a name served at --base-url. Repeatable: with several, a bandit picks the model of each call by improvement per dollar.")] = None,
    problems: Annotated[str | None, typer.Option(help="Suite, id, glob, path, 'all'; comma-separated.")] = None,
    base_url: Annotated[str | None, typer.Option(help="An OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp).")] = None,
    strategy: Annotated[str | None, typer.Option(help="A registered strategy (built in: oneshot, refine, evolve).")] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per problem (oneshot) or lineages (refine).")] = None,
    turns: Annotated[int | None, typer.Option(help="Turns per lineage (refine).")] = None,
    islands: Annotated[int | None, typer.Option(help="Islands per problem (evolve, default 2).")] = None,
    generations: Annotated[int | None, typer.Option(help="Generations per problem (evolve, default 5).")] = None,
    population: Annotated[int | None, typer.Option(help="Calls per island per generation (evolve, default 4).")] = None,
    stall_generations: Annotated[int | None, typer.Option(help="Evolve: stop after this many generations without improvement.")] = None,
    roofline_share: Annotated[float | None, typer.Option(help="Evolve: stop once a candidate reaches this share of the speed of light (0-1].")] = None,
    backend: Annotated[str | None, typer.Option(help="triton (default) or cuda.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if visible).")] = None,
    max_calls: Annotated[int | None, typer.Option(help="Budget: LLM completions.")] = None,
    max_tokens_total: Annotated[int | None, typer.Option(help="Budget: tokens in + out.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Budget: USD.")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Budget: wall seconds.")] = None,
    max_gpu_minutes: Annotated[float | None, typer.Option(help="Budget: GPU minutes spent verifying (and tuning); verifications in flight finish.")] = None,
    tune: Annotated[bool | None, typer.Option("--tune/--no-tune", help="After each problem, tune its best correct candidate's knobs with Optuna (needs a CUDA GPU).")] = None,
    tune_trials: Annotated[int | None, typer.Option(help="Configurations --tune evaluates per problem (default 20).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="LLM calls in flight.")] = None,
    executor: Annotated[str | None, typer.Option(help="Where candidates are verified: local (default: this machine's GPUs, else CPU) or ray (each verification a Ray task holding one GPU).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="With --executor ray: the cluster, HOST:PORT, ray://HOST:PORT or auto (default: start a local Ray instance).")] = None,
    jobs_per_device: Annotated[int | None, typer.Option(help="Verifications sharing one device at once (default 2): their checks overlap, their timing never does.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max tokens per reply.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: model + time).")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the named run.")] = None,
    config: Annotated[Path | None, typer.Option(help="kbench.toml (default: ./kbench.toml if present).")] = None,
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path.")] = None,
    timing: Annotated[bool | None, typer.Option(help="Time candidates on a GPU.")] = None,
    allow_library: Annotated[list[str] | None, typer.Option("--allow-library", help="Let candidates run this library's kernels (module or kernel-name prefix; repeatable; the verdicts say so).")] = None,
) -> None:
    """Hand problems to a model; verify, store and score every candidate."""
    from kbench.runflow import execute

    execute(
        overrides=dict(model=model or None, problems=problems, base_url=base_url, strategy=strategy,
                       samples=samples, turns=turns, backend=backend, device=device,
                       islands=islands, generations=generations, population=population,
                       stall_generations=stall_generations, roofline_share=roofline_share,
                       max_calls=max_calls, max_tokens_total=max_tokens_total,
                       max_cost_usd=max_cost, time_limit_s=time_limit, concurrency=concurrency,
                       max_gpu_minutes=max_gpu_minutes, tune=tune, tune_trials=tune_trials,
                       max_tokens=max_tokens, temperature=temperature, store=store,
                       timing=timing, allow_libraries=allow_library or None,
                       executor=executor, jobs_per_device=jobs_per_device,
                       ray_address=ray_address),
        config_path=config, name=name, resume=resume, device_of=_device, console=out,
    )


@runs_app.command("list")
def runs_list(
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every stored run with its status and score. Never creates a store."""
    from kbench.runflow import list_runs

    with _json_errors(as_json):
        list_runs(store, as_json, out)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run name.")],
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    lineage: Annotated[bool, typer.Option(
        "--lineage", help="Also list every attempt: candidate ← parents, kind, generation, "
                          "island, outcome (search strategies such as evolve).")] = False,
) -> None:
    """One run: per-problem best verdicts (provisional, or the final selection's winner and
    its margin), the population of an evolve run, and the fast_p summary. Never creates a
    store."""
    from kbench.runflow import show_run

    with _json_errors(as_json):
        show_run(run, store, as_json, out, lineage=lineage)


@problems_app.command("list")
def problems_list(
    selector: Annotated[str, typer.Argument(help="Suite, id, glob, path or 'all'.")] = "all",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List problems with their dtype, shapes and tags.

    A file that fails to load is listed with its error and the others still load; the exit
    status is then 1 (0 when every file loaded, 2 when the selector itself is wrong).
    ``--json`` prints ``{"problems": [...], "errors": [{"id", "path", "error"}]}``.
    """
    from kbench.problems import load_report

    with _json_errors(as_json):
        specs, failures = load_report(selector)
    cpu_errors = _cpu_shape_errors(specs)
    if as_json:
        print(json.dumps({"problems": [{
            "id": s.key, "suite": s.suite, "path": str(s.path), "dtype": s.meta.dtype,
            "shapes": s.shapes, "cpu_shapes": s.cpu_shapes,
            "cpu_shape_error": s.cpu_shape_error, "tolerance": s.tolerance,
            "tags": s.meta.tags,
        } for s in specs], "errors": [f.to_dict() for f in failures]}, indent=2, default=str))
        raise typer.Exit(1 if failures else 0)
    t = Table(show_edge=False)
    # ids are copied into other commands: never cut, fold or wrap them (see _print_unclipped)
    id_width = max((len(s.key) for s in specs), default=2)
    t.add_column("id", no_wrap=True, min_width=id_width)
    for col in ("dtype", "main shape", "shapes", "tags"):
        t.add_column(col, overflow="fold")
    for s in specs:
        main = ", ".join(f"{k}={v}" for k, v in s.constants.items() if isinstance(v, int))
        t.add_row(s.key, s.meta.dtype or "float32", main, str(len(s.shapes)),
                  ",".join(s.meta.tags))
    if specs:
        _print_unclipped(t, id_width)
    out.print(f"{len(specs)} problems" + (f"; {len(failures)} could not be loaded:"
                                          if failures else ""), style="dim", highlight=False)
    for f in failures:
        out.print(f"[bold red]error[/] {escape(f.id)} ({escape(str(f.path))}): {escape(f.error)}",
                  highlight=False, soft_wrap=True)
    for key, reason in cpu_errors:
        out.print(f"[yellow]no CPU shape[/] {escape(key)}: {escape(reason)}",
                  highlight=False, soft_wrap=True)
    raise typer.Exit(1 if failures else 0)


def _cpu_shape_errors(specs: list[Any]) -> list[tuple[str, str]]:
    """(id, why) for each problem for which no CPU shape could be derived. Deriving runs the
    reference; it is cached per file content, so only a first listing waits."""
    with err.status("deriving CPU shapes (first time for these files only)"):
        return [(s.key, s.cpu_shape_error) for s in specs if s.cpu_shape_error]


def _print_unclipped(table: Table, keep: int) -> None:
    """Print ``table`` without cutting its first column (``keep`` wide), however narrow the
    console.

    rich fits a table to the console width (80 columns or ``$COLUMNS`` when piped) and
    ellipsizes what does not fit. Piped to a file, rows are printed at their natural width,
    one line each; on a terminal, the other columns fold, down to about 8 columns each.
    """
    from rich.measure import Measurement

    if out.is_terminal:
        need = keep + 2 + 11 * (len(table.columns) - 1)  # cell padding 2, separator 1
    else:
        need = Measurement.get(out, out.options.update_width(100_000), table).maximum
    if need <= out.width:
        out.print(table)
        return
    wide = Console(file=out.file, width=need, force_terminal=out.is_terminal,
                   color_system=out.color_system, no_color=out.no_color)  # type: ignore[arg-type]
    wide.print(table)


@problems_app.command("show")
def problems_show(
    problem: Annotated[str, typer.Argument(help="Problem id (level1/relu) or file path.")],
    source: Annotated[bool, typer.Option(help="Print the source.")] = True,
) -> None:
    """Print a problem's source, shapes, tolerances and roofline."""
    from rich.syntax import Syntax

    from kbench.problems import CPU_BYTES_BUDGET, CPU_FLOPS_BUDGET, load

    specs = load(problem)
    if len(specs) != 1:
        raise ConfigError(f"{problem!r} matches {len(specs)} problems; name exactly one")
    s = specs[0]
    # Everything is computed before anything is printed, so a fault is one line: rooflines
    # (a KBENCH lambda that fails or gives a negative number), and the reference on each CPU
    # shape, as `kbench eval` runs it (a declared shape it fails on is refused there too).
    rows = [(name, where, shape, *s.roofline(shape, name)) for name, where, shape in _all_shapes(s)]
    for name, where, shape, flops, nbytes in rows:
        if where != "cpu" or name.startswith("derived_"):
            continue
        declared = name in s.meta.cpu_shapes
        small = (flops or 0) <= CPU_FLOPS_BUDGET and (nbytes or 0) <= CPU_BYTES_BUDGET
        # a derived shape without an error already ran; one too large is left to `eval`
        if declared or (s.cpu_shape_error and small):
            why = s.reference_error(shape)
            if why:
                raise ProblemError(f"{s.key}: the reference fails on its own shape {name!r}: "
                                   f"{why}")
    out.print(f"[bold]{s.key}[/]  ({s.path})", highlight=False)
    if source:
        out.print(Syntax(s.source, "python", line_numbers=False))
    atol, rtol = s.tolerance
    out.print(f"dtype {s.meta.dtype or 'float32'}; atol {atol:g}, rtol {rtol:g} "
              "(and relative L2 error <= rtol)" + (
                  "; custom check function" if s.meta.check else ""))
    t = Table(show_edge=False, title="shapes")
    keep = max(len(row[0]) for row in rows)
    t.add_column("shape", no_wrap=True, min_width=keep)
    t.add_column("on")
    for col in ("GFLOP", "min MB", "FLOP/B"):
        t.add_column(col, justify="right")
    t.add_column("sizes", overflow="fold")
    for name, where, shape, flops, nbytes in rows:
        ai = f"{flops / nbytes:.3g}" if flops is not None and nbytes else "–"
        t.add_row(name, where, _fmt(flops / 1e9 if flops is not None else None, ".3g"),
                  _fmt(nbytes / 1e6 if nbytes is not None else None, ".3g"), ai, _sizes(shape))
    _print_unclipped(t, keep)
    out.print("derived_*: shapes the candidate is never shown, checked wherever the reference "
              "runs on them", style="dim", highlight=False)
    if s.cpu_shape_error:
        out.print(f"[yellow]no CPU shape within budget:[/] {escape(s.cpu_shape_error)}",
                  highlight=False, soft_wrap=True)
    out.print(_checks_line(s), highlight=False, soft_wrap=True)


def _checks_line(spec: Any) -> str:
    """What kbench checks beyond the problem's own inputs, and any opt-out with its reason."""
    p = spec.meta.perturb
    inputs = {"auto": "perturbed inputs of both signs (kept non-negative where the reference "
                      "needs it)", "signed": "perturbed inputs of both signs",
              "positive": "perturbed non-negative inputs", "none": "no perturbed inputs"}[p.inputs]
    params = ("constant parameters and buffers redrawn" if p.params
              else "parameters never redrawn")
    line = f"checks: {inputs}; {params}; Model and ModelNew in {spec.meta.mode} mode"
    if p.reason:
        line += f" (problem's reason: {p.reason})"
    if spec.meta.allow_libraries:
        line += f"; kernels allowed from {', '.join(spec.meta.allow_libraries)}"
    return line


def _all_shapes(spec: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, where, shape): the declared GPU shapes, the CPU shapes (declared or derived),
    and the unseen shapes derived from the first of each."""
    from kbench.problems import derive_shapes

    rows = []
    for where, group in (("gpu", spec.shapes), ("cpu", spec.cpu_shapes)):
        rows += [(name, where, shape) for name, shape in group.items()]
        base = next(iter(group.values()))
        rows += [(name, where, shape) for name, shape in derive_shapes(spec, base).items()]
    return rows


def _sizes(shape: dict[str, Any]) -> str:
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in shape.items()
                     if isinstance(v, (int, tuple, list)) and not isinstance(v, bool))


@problems_app.command("new")
def problems_new(
    name: Annotated[str, typer.Argument(help="snake_case problem name.")],
    suite: Annotated[str, typer.Option(help="Suite folder: level1, level2, ..., kvcache.")],
    root: Annotated[Path, typer.Option(help="Where suite folders live.")] = Path("problems"),
) -> None:
    """Write a problem scaffold that passes the suite quality tests; then make it yours."""
    from kbench.scaffold import write_scaffold

    path = write_scaffold(name, suite, root)
    out.print(f"wrote {path}; edit it, then `kbench problems show {path}`", highlight=False)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    self_test: Annotated[bool, typer.Option(
        "--self-test", help="Test the timing harness itself (fake device and CPU verifier); "
        "exit 1 if a check fails.")] = False,
    gpu_test: Annotated[bool, typer.Option(
        "--gpu", help="The self-test on this machine's GPU too (needs a CUDA GPU).")] = False,
    stop_servers: Annotated[bool, typer.Option(
        "--stop-servers", help="Stop this user's kept fork servers (each kbench command "
        "leaves one for the next, for KBENCH_KEEP_SERVER seconds).")] = False,
) -> None:
    """What this machine can do: GPU, versions, interpreter, sandbox isolation by layer."""
    import shutil
    import subprocess

    if stop_servers:
        from sandbox.backends._forkserver import stop_kept_servers

        pids = stop_kept_servers()
        out.print(f"stopped {len(pids)} kept fork server(s)"
                  + (f": pid {', '.join(map(str, pids))}" if pids else ""), highlight=False)
        return

    import torch

    from sandbox.fingerprint import fingerprint

    if self_test or gpu_test:
        _self_test(gpu_test, as_json)
        return
    rows: list[tuple[str, str]] = []
    gpu = torch.cuda.is_available()
    fp = fingerprint("cuda" if gpu else "cpu")
    rows.append(("python", fp["python"]))
    rows.append(("torch", fp["torch"]))
    rows.append(("triton", str(fp["triton"])))
    if gpu:
        rows.append(("GPU", f"{fp['gpu']} (sm {fp['capability']}, {fp['sms']} SMs, "
                            f"{fp['memory_gb']} GiB, L2 {fp['l2_mb']} MiB)"))
        rows.append(("CUDA / driver", f"{fp['cuda']} / {fp['driver']}"))
        rows.append(("timing", "available (CUDA events, L2 flush)"))
    else:
        rows.append(("GPU", "none visible: Triton candidates are checked in the interpreter"))
        rows.append(("timing", "unavailable without a GPU (never invented)"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        rows.append(("nvcc", ver.strip().splitlines()[-1] if ver.strip() else nvcc))
    else:
        rows.append(("nvcc", "not found: CUDA (load_inline) candidates cannot be built"))
    rows.append(("sandbox: process", "own process group, killed on timeout; env allowlist; "
                                     "per-job Triton cache and torch extensions dir"))
    rows.append(("sandbox: interpreter", _interpreter_check()))
    rows.append(("sandbox: fork server", _kept_servers()))
    layers = _isolation_layers(gpu)
    if as_json:
        print(json.dumps({"machine": dict(rows), "isolation": layers}, indent=2, default=str))
        return
    t = Table(show_header=False, show_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    t = Table(title="sandbox isolation, layer by layer", show_edge=False)
    for col in ("layer", "status", "detail"):
        t.add_column(col, style="bold" if col == "layer" else None)
    for r in layers:
        t.add_row(r["layer"], r["status"], escape(r["detail"]))
    out.print(t)


def _kept_servers() -> str:
    """How fork servers are kept between commands, and how many are kept now."""
    from sandbox.backends._forkserver import keep_seconds, kept_base

    keep = keep_seconds()
    if keep is None:
        return "each command starts its own (KBENCH_KEEP_SERVER=0)"
    base = kept_base()
    if base is None:
        return "not kept: no private directory for it (see the log)"
    n = sum(1 for d in base.glob("fs-*") if (d / "sock").exists())
    return (f"kept {keep:g} s after the last job, in {base} ({n} there now; "
            "kbench doctor --stop-servers stops them)")


def _self_test(gpu: bool, as_json: bool) -> None:
    """``kbench doctor --self-test`` / ``--gpu``: the harness's self-test as a table."""
    import torch

    from sandbox import selftest

    if gpu and not torch.cuda.is_available():
        out.print("kbench doctor --gpu: no CUDA GPU is visible here (the CPU part runs with "
                  "--self-test)", highlight=False)
        raise typer.Exit(2)
    rows = selftest.run(gpu=gpu)
    failed = [r for r in rows if not r.passed]
    if as_json:
        print(json.dumps({"self_test": [r.__dict__ for r in rows], "passed": not failed},
                         indent=2))
    else:
        t = Table(title="timing harness self-test", show_edge=False)
        for col in ("check", "where", "expected", "got", "result"):
            t.add_column(col, style="bold" if col == "check" else None)
        for r in rows:
            t.add_row(escape(r.name), r.where, escape(r.expected), escape(r.got),
                      "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
        out.print(t)
        out.print(f"{len(rows) - len(failed)}/{len(rows)} checks passed", highlight=False)
    if failed:
        raise typer.Exit(1)


_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_CREDENTIALS")


def _isolation_layers(gpu: bool) -> list[dict[str, str]]:
    """One row per isolation layer of the sandbox: ``{"layer", "status", "detail"}``, status
    ``enforced``, ``not enforced``, ``unavailable`` or ``FAILED``. Says what kbench does, not
    what the machine could do: a layer present but unused is reported ``not enforced``."""
    import os
    import shutil
    import tempfile

    from sandbox._process import child_env, network_isolation
    from sandbox.backends import default_backend

    rows: list[dict[str, str]] = []

    def row(layer: str, status: str, detail: str) -> None:
        rows.append({"layer": layer, "status": status, "detail": detail})

    prefix, how = network_isolation()
    row("network namespace", "enforced" if prefix else "unavailable",
        f"children start in a {how} (`{' '.join(prefix[1:])}`): no network" if prefix else how)

    with tempfile.TemporaryDirectory() as tmp:
        env = child_env(Path(tmp), "cuda" if gpu else "cpu")
    secret = sorted(k for k in env if k.upper().endswith(_SECRET_SUFFIXES))
    dropped = sum(1 for k in os.environ if k not in env)
    if secret:
        row("environment allowlist", "FAILED", f"would pass secret-looking {', '.join(secret)}")
    else:
        row("environment allowlist", "enforced",
            f"{len(env)} variables passed, {dropped} of this shell's dropped; "
            "no *_KEY / *_TOKEN / *_SECRET variable passes")

    try:
        lsm = Path("/sys/kernel/security/lsm").read_text().strip()
    except OSError:
        lsm = ""
    seen = [n for n, ok in (("Landlock", "landlock" in lsm.split(",")),
                            ("bubblewrap", shutil.which("bwrap") is not None)) if ok]
    row("write confinement", "not enforced",
        (f"{' and '.join(seen)} present here, but" if seen
         else "neither Landlock nor bubblewrap found here, and") + " kbench does not use them "
        "yet: a child may write wherever its user may (HOME and TMPDIR: the job directory)")

    from sandbox import memcap
    from sandbox.job import Limits

    limits = Limits()
    host = memcap.host_bytes(limits.host_memory_bytes)
    row("rlimits", "enforced",
        "core size 0, file size 16 GiB" + ("" if gpu else ", CPU seconds (import + check "
                                           f"+ 60 s) and address space {host / 2**30:.1f} "
                                           "GiB on CPU runs"))
    row("process-group kill", "enforced",
        "each child in its own process group, killed whole on timeout or interrupt; "
        "descendants that left it (setsid) killed too: the fork server is their subreaper, "
        "and processes with the job's environment are swept after the subprocess backend")
    row("output cap", "enforced",
        "stdout/stderr through a pipe drained by the parent: more than 64 MiB is a flood, "
        "killed, and only the output's tail is kept")
    row("GPU-memory cap", *memcap.describe(gpu, limits.gpu_memory_fraction,
                                           memcap.nvml_available(), limits.host_memory_bytes))
    try:
        row("sandbox backend", "enforced", f"{default_backend().name} (in use)")
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        row("sandbox backend", "FAILED", f"{type(e).__name__}: {e}")
    row("Docker", *_docker_check())
    return rows


def _docker_check() -> tuple[str, str]:
    """The Docker backend's layer: whether an engine answers (3 s) and its image is present."""
    import os

    from sandbox.backends._base import ENV_VAR
    from sandbox.backends._docker import engine_status

    in_use = os.environ.get(ENV_VAR, "").strip() == "docker"
    up, detail, present = engine_status()
    if not up:
        return "FAILED" if in_use else "unavailable", detail
    if not present:
        return "FAILED" if in_use else "unavailable", (
            f"{detail}: not present (python -m sandbox.backends._docker_image builds it, "
            "or name one in KBENCH_DOCKER_IMAGE)")
    return "enforced" if in_use else "not enforced", (
        f"{detail}: present; " + ("in use: no network, read-only root, one GPU, limits"
                                  if in_use else "not in use (kbench --sandbox docker)"))


def _interpreter_check() -> str:
    """Verify the shipped relu example on CPU through the real sandbox."""
    import importlib.resources

    from kbench.problems import load
    from sandbox import verify

    try:
        spec = load("level1/relu")[0]
        cand = importlib.resources.files("kbench").joinpath("examples/level1/relu.py")
        v = verify(spec, cand.read_text(), device="cpu", timing=False)
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        return f"check failed: {type(e).__name__}: {e}"
    return "works (relu example verified)" if v.passed else f"FAILED: {v.status.value}: {v.reason}"


# -- kbench tune (issue 10) ------------------------------------------------------------
@app.command("tune")
def tune_cmd(
    target: Annotated[str, typer.Argument(help="A candidate file (with --problem), or a stored run's name: tune the best correct candidate of each of its problems.")],
    problem: Annotated[str | None, typer.Option("--problem", "-p", help="The candidate file's problem (id or path).")] = None,
    trials: Annotated[int, typer.Option(help="Configurations to evaluate per candidate (a study resumes where it stopped).")] = 30,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe, random, grid or cmaes.")] = "tpe",
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path; the study lives there too.")] = None,
    device: Annotated[str | None, typer.Option(help="cuda or cuda:N (tuning needs timing, so a GPU).")] = None,
    study: Annotated[str | None, typer.Option(help="Optuna study name (default per problem, candidate and device).")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="Tune only this shape (repeatable; default every shape).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
) -> None:
    """Tune a candidate's knobs (its TUNE dict or @triton.autotune configs) with Optuna, per
    shape; store the best re-verified configuration. Exit 0 if every target got one."""
    from kbench.runflow import store_url
    from kbench.tuning import GPU_NEEDED, targets, tune

    store = store_url(store)  # --store, $KBENCH_STORE, kbench.toml's store, kbench.db
    todo, skipped = targets(target, problem, store)
    dev = _device(device)
    if not dev.startswith("cuda"):
        raise ConfigError(GPU_NEEDED)
    for line in skipped:
        out.print(f"skipped {line}", style="dim", highlight=False, markup=False)
    ok = bool(todo)
    for t in todo:
        r = tune(t.spec, t.source, device=dev, storage_url=store,
                 study_name=study, n_trials=trials, sampler=sampler, shapes=shape or None,
                 seed=seed)
        table = Table(title=f"{t.spec.key} ({escape(t.label)}): study {escape(r.study_name)}")
        for col in ("shape", "best knobs", "median ms", "trial"):
            table.add_column(col)
        for b in r.best.values():
            table.add_row(b.shape, escape(json.dumps(b.knobs)), f"{b.median_ms:.4f}", str(b.trial))
        out.print(table)
        dflt = f", default config {r.default_ms:.4f} ms" if r.default_ms is not None else ""
        out.print(f"{r.trials} trials in the study ({r.evaluated} evaluated now): {r.complete} "
                  f"complete, {r.pruned} pruned, {r.failed} failed{dflt}", highlight=False)
        for note in r.notes:
            out.print(f"note: {note}", style="dim", highlight=False, markup=False)
        ok = ok and len(r.best) > 0
    raise typer.Exit(0 if ok else 1)


# -- kbench report (issue 11) ----------------------------------------------------------
@app.command("report")
def report_cmd(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names (default: every run in the store).")] = None,
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    problems: Annotated[str | None, typer.Option(help="Only these problems: keys or patterns, comma-separated (level1/*).")] = None,
    suite: Annotated[str | None, typer.Option(help="Only these suites, comma-separated.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a static, offline HTML site to this folder.")] = None,
) -> None:
    """Leaderboard of stored runs: fast_p against eager and torch.compile, geomean speedup,
    SOL%, cost, tokens, GPU-minutes and rejected candidates, per run and suite; one table
    per device fingerprint. Never creates a store."""
    from kbench.report import build_report, prepare_html_dir, print_report, write_html
    from kbench.runflow import store_url

    with _json_errors(as_json):
        rep = build_report(store_url(store), runs or (), problems=problems, suites=suite)
        if html is not None:  # a folder that cannot be written fails before any output
            prepare_html_dir(html)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        print_report(rep, out)
    if html is not None:
        index = write_html(rep, html)
        (err if as_json else out).print(f"HTML report: {index}", highlight=False, markup=False,
                                        soft_wrap=True)


# -- kbench export (issue 11) ----------------------------------------------------------
@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="A stored run's name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the package project into.")],
    name: Annotated[str, typer.Option("--name", help="The Python package's name (an identifier).")],
    store: Annotated[str | None, typer.Option(help="Store URL or SQLite path.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is an empty folder or an earlier kbench export (it holds .kbench-export and no other files of yours); never the current directory, a folder above it or home.")] = False,
) -> None:
    """Export a run's winning kernels (correct on every shape) as a pip-installable package
    of torch custom ops, with its tests, a benchmark script and a README."""
    from kbench.export import export_run

    r = export_run(run, out_dir, name, store, force=force)
    for line in r.skipped:
        out.print(f"skipped {line}", style="dim", highlight=False, markup=False)
    for line in r.warnings:
        out.print(f"warning: exported, but {line}", style="yellow", highlight=False,
                  markup=False, soft_wrap=True)
    out.print(f"exported {len(r.exported)} op(s) ({', '.join(r.exported)}) as package "
              f"{r.package} in {r.path}; install with: pip install {r.path}",
              highlight=False, markup=False)


def _flow_help(*apps: typer.Typer) -> None:
    """Each command's help from its docstring with single line breaks joined and ``code``
    marks dropped: typer's rich help keeps a docstring's line breaks (``kbench --help``
    broke its command descriptions mid-sentence) and prints reST literally."""
    import inspect
    import re

    for a in apps:
        for info in a.registered_commands:
            doc = inspect.getdoc(info.callback) if info.help is None and info.callback else None
            if doc:
                paras = (" ".join(p.split()) for p in doc.split("\n\n"))
                info.help = re.sub(r"``([^`]*)``", r"\1", "\n\n".join(paras))


_flow_help(app, problems_app, runs_app)


if __name__ == "__main__":
    entry()
