"""``evolve``: islands of candidates per problem, improved generation by generation.

Per problem, ``islands`` populations of ``population`` calls per generation:

* generation 0 (and any island without a correct candidate yet): *seed* prompts;
* later generations: slot 0 of each island mutates the island's best; every other slot
  mutates a parent sampled by fitness, or, with ``crossover_rate``, combines two; with
  ``archive_rate`` the parent comes from the elite archive instead (one elite per
  behaviour cell, :func:`diversity_cell`), so slower lines of another kind survive;
* every ``migrate_every`` generations the best of island ``i`` joins island ``i + 1``
  (a ring) as a possible parent;
* failed candidates are never parents: they become short lessons in later prompts;
* a reply whose code repeats an earlier candidate after normalisation
  (:func:`normalise_source`: comments, docstrings, blank lines and formatting dropped), or
  repeats it with only its own names changed (a near-duplicate, :func:`near_key`), is
  refused by :meth:`Evolve.screen` before verification: stored, never verified.

Fitness is :attr:`Attempt.fitness` (the speedup over eager among correct candidates, 0 for
incorrect ones), sampled with a floor of ``fitness_floor`` times the island's best so a new
line gets a chance. Without timing (CPU: the Triton interpreter) every correct candidate has
the same fitness; ties go to the shorter normalised source, then the earlier candidate.

The strategy keeps no state: the plan of generation ``g`` is a pure function of the
attempts of generations before ``g`` and of a seed derived from ``seed``, the problem and
``g``. Each attempt carries its ``lineage`` (island, generation, slot, kind), so a run rebuilt
from the store asks for exactly the calls of the interrupted generation that are missing,
with the same prompts. Each call's ``sample`` is its slot's number in the whole run and its
``turn`` its generation, so a replay file can script every call.

Example:
    >>> from agents.strategies import make_strategy
    >>> s = make_strategy("evolve", islands=2, population=2, generations=3)
    >>> s.max_attempts, s.done([])
    (12, False)
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from agents.prompt import evolve_messages, lesson
from agents.records import Attempt, History, Request, Task
from agents.strategies._base import Strategy, _positive, register_strategy
from sandbox.policy import parse

__all__ = ["Evolve", "Plan", "normalise_source", "code_key", "near_key", "diversity_cell"]

KINDS = ("seed", "mutate", "crossover")
_SPEED_BANDS = ((0.5, "<0.5x"), (1.0, "0.5-1x"), (2.0, "1-2x"), (float("inf"), ">=2x"))


def normalise_source(code: str, rename: bool = False) -> str:
    """``code`` without comments, docstrings, blank lines and formatting differences (via
    ``ast.unparse``); text that does not parse has its whitespace collapsed instead. With
    ``rename``, the names the file binds are also renamed in order of first appearance
    (:func:`_rename_locals`), so that code differing only in its own names compares equal."""
    try:
        tree = parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return " ".join(code.split())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    if rename:
        _rename_locals(tree)
    return ast.unparse(tree)


# Names the harness, Python or Triton look up by name: never renamed.
_KEEP_NAMES = frozenset({"ModelNew", "Model", "forward", "get_inputs", "get_init_inputs", "self",
                         "cls", "KBENCH", "TUNE"}) | frozenset(dir(builtins))


def _rename_locals(tree: ast.Module) -> None:
    """Rename, everywhere in ``tree``, each identifier the file binds (assignments, function
    and class names, parameters, import aliases, ``except ... as``) to ``_kb_N`` in order of
    first appearance: a consistent renaming, so two files compare equal only if one is the
    other with its own names changed. Names whose spelling matters are kept: any identifier
    also used as an attribute, a keyword argument or inside a string (``triton.Config``
    keys, ``TUNE`` knobs, ``getattr``), builtins, dunders and the harness's names."""
    bound: list[str] = []
    used_by_spelling: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.append(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.append(node.name)
        elif isinstance(node, ast.arg):
            bound.append(node.arg)
        elif isinstance(node, ast.alias):
            bound.append(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.append(node.name)
        elif isinstance(node, ast.Attribute):
            used_by_spelling.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            used_by_spelling.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used_by_spelling.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
    # alias targets of `import a.b` bind `a`, and `from m import x` binds x: their spelling is
    # the module's, so imported names keep theirs unless aliased with `as`
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names if a.asname is None}
    keep = used_by_spelling | imported | _KEEP_NAMES
    mapping: dict[str, str] = {}
    for name in bound:
        if name not in mapping and name not in keep and not name.startswith("__"):
            mapping[name] = f"_kb_{len(mapping)}"
    if not mapping:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = mapping.get(node.id, node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node.name = mapping.get(node.name, node.name)
        elif isinstance(node, ast.arg):
            node.arg = mapping.get(node.arg, node.arg)
        elif isinstance(node, ast.alias) and node.asname:
            node.asname = mapping.get(node.asname, node.asname)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            node.name = mapping.get(node.name, node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            node.names = [mapping.get(n, n) for n in node.names]


def code_key(code: str) -> str:
    """The hash that decides exact duplicates: sha256 of :func:`normalise_source`."""
    return hashlib.sha256(normalise_source(code).encode()).hexdigest()


def near_key(code: str) -> str:
    """The hash that decides near-duplicates: sha256 of ``normalise_source(code,
    rename=True)`` (the same code up to its own names)."""
    return hashlib.sha256(normalise_source(code, rename=True).encode()).hexdigest()


def diversity_cell(attempt: Attempt) -> tuple[str, str]:
    """An attempt's behaviour cell for the elite archive: (backend, speed band)."""
    code = attempt.code or ""
    backend = "cuda" if "load_inline" in code else "triton"
    s = attempt.verdict.speedup_eager if attempt.verdict is not None else None
    if s is None:
        return backend, "untimed"
    return backend, next(label for top, label in _SPEED_BANDS if s < top)


@dataclass(frozen=True)
class Plan:
    """One planned call of a generation."""

    island: int
    slot: int
    kind: str
    parents: tuple[int, ...] = ()  # history ids


@register_strategy
class Evolve(Strategy):
    """Islands of candidates with migration, fitness- and diversity-sampled parents.

    Args:
        islands: Populations evolved side by side.
        generations: Generations per problem (generation 0 is the seeds).
        population: Calls per island per generation.
        migrate_every: Every this many generations the best of each island moves to the next.
        crossover_rate: Share of the non-elite slots that combine two parents.
        archive_rate: Share of the sampled parents taken from the elite archive.
        fitness_floor: Each parent's weight is at least this share of the best's.
        stall_generations: Stop when the best fitness has not improved for this many
            completed generations (None: never).
        roofline_share: Stop once a correct candidate reaches this share of the speed of
            light (e.g. 0.8: 80 % SOL; None: never).
        seed: Mixed into every generation's random choices.
        lessons: At most this many lessons from failures per prompt.
    """

    name = "evolve"

    def __init__(self, islands: int = 2, generations: int = 5, population: int = 4,
                 migrate_every: int = 2, crossover_rate: float = 0.3,
                 archive_rate: float = 0.2, fitness_floor: float = 0.1,
                 stall_generations: int | None = None, roofline_share: float | None = None,
                 seed: int = 0, lessons: int = 3):
        self.islands = _positive("islands", islands)
        self.generations = _positive("generations", generations)
        self.population = _positive("population", population)
        self.migrate_every = _positive("migrate_every", migrate_every)
        for what, v in (("crossover_rate", crossover_rate), ("archive_rate", archive_rate),
                        ("fitness_floor", fitness_floor)):
            if not 0 <= v <= 1:
                raise ValueError(f"{what} must be between 0 and 1, got {v!r}")
        self.crossover_rate, self.archive_rate = crossover_rate, archive_rate
        self.fitness_floor = fitness_floor
        self.stall_generations = (None if stall_generations is None
                                  else _positive("stall_generations", stall_generations))
        if roofline_share is not None and not 0 < roofline_share <= 1:
            raise ValueError(f"roofline_share must be in (0, 1], got {roofline_share!r}")
        self.roofline_share = roofline_share
        self.seed = seed
        self.lessons = lessons
        self._keys: dict[str, tuple[str, str]] = {}  # code -> (code_key, near_key), a cache

    @property
    def max_attempts(self) -> int:
        return self.islands * self.population * self.generations

    # -- the runner's interface -------------------------------------------------------------
    def next_requests(self, task: Task, history: History) -> list[Request]:
        g = self.generation(history)
        if self.done(history):
            return []
        filled = {(a.lineage.get("island"), a.lineage.get("slot"))
                  for a in history if self._gen(a) == g}
        out = []
        for p in self.plan(task, history, g):
            if (p.island, p.slot) in filled:
                continue  # asked before an interruption: never asked again
            msgs = evolve_messages(task, p.kind, [history[i] for i in p.parents],
                                   self._lessons(history, g, p.island))
            out.append(Request(
                tuple(msgs), n=1, sample=self.sample_number(g, p.island, p.slot), turn=g,
                parents=p.parents,
                lineage={"island": p.island, "generation": g, "slot": p.slot, "kind": p.kind},
            ))
        return out

    def done(self, history: History) -> bool:
        return self.stop_reason(history) is not None

    def stop_reason(self, history: History) -> str | None:
        """Why this problem needs no more calls, or None."""
        g = self.generation(history)
        if g >= self.generations:
            return f"all {self.generations} generations done"
        if self.roofline_share is not None:
            for a in history:
                sol = a.verdict.sol_pct if a.passed and a.verdict is not None else None
                if sol is not None and sol >= 100 * self.roofline_share:
                    return f"a candidate reached {sol:.0f}% of the speed of light"
        n = self.stall_generations
        if n is not None and g > n:
            best = [self._best_fitness(history, m) for m in range(g)]  # best up to m
            if best[g - 1] <= best[g - 1 - n]:
                return f"no improvement for {n} generations"
        return None

    def screen(self, code: str, history: History) -> str | None:
        key = self._key(code)
        for i, a in enumerate(history):
            if a.code is None:
                continue
            other = self._key(a.code)
            if other[0] == key[0]:
                return f"duplicate of candidate {a.label(i)} (same code after normalisation)"
            if other[1] == key[1]:
                return (f"near-duplicate of candidate {a.label(i)} (the same code with its own "
                        "names changed)")
        return None

    # -- population state (all derived from history) --------------------------------------
    def sample_number(self, generation: int, island: int, slot: int) -> int:
        """The call's sample number, unique in a problem's run."""
        return (generation * self.islands + island) * self.population + slot

    def generation(self, history: History) -> int:
        """The first generation with a slot not yet asked for (``generations``: all done)."""
        counts: dict[int, int] = {}
        for a in history:
            counts[self._gen(a)] = counts.get(self._gen(a), 0) + 1
        g = 0
        while g < self.generations and counts.get(g, 0) >= self.islands * self.population:
            g += 1
        return g

    def pools(self, history: History, g: int) -> tuple[dict[int, list[int]],
                                                       list[tuple[int, int, int, int]]]:
        """Each island's possible parents for generation ``g`` (history ids) and the
        migrations so far as ``(generation, from_island, to_island, history id)``."""
        ok = [i for i, a in enumerate(history) if self._eligible(a)]
        received: dict[int, list[int]] = {i: [] for i in range(self.islands)}
        moves = []
        for m in range(self.migrate_every, g + 1, self.migrate_every):
            if self.islands < 2:
                break
            now = {i: self._own(history, ok, i, m) + received[i] for i in range(self.islands)}
            for i in range(self.islands):
                if not now[i]:
                    continue
                best = self._best(history, now[i])
                dst = (i + 1) % self.islands
                if best not in now[dst] and best not in received[dst]:
                    received[dst].append(best)
                    moves.append((m, i, dst, best))
        pools = {i: self._own(history, ok, i, g) + received[i] for i in range(self.islands)}
        return pools, moves

    def archive(self, history: History, g: int) -> dict[tuple[str, str], int]:
        """The elite archive before generation ``g``: the best candidate per behaviour cell."""
        out: dict[tuple[str, str], int] = {}
        for i, a in enumerate(history):
            if self._eligible(a) and self._gen(a) < g:
                cell = diversity_cell(a)
                if cell not in out or self._rank(history, i) > self._rank(history, out[cell]):
                    out[cell] = i
        return out

    def plan(self, task: Task, history: History, g: int) -> list[Plan]:
        """Every call of generation ``g``, whether asked for already or not."""
        if g == 0:
            return [Plan(i, s, "seed") for i in range(self.islands)
                    for s in range(self.population)]
        rng = random.Random(f"{self.seed}:{task.problem.key}:{g}")
        pools, _ = self.pools(history, g)
        elites = sorted(self.archive(history, g).values())
        out = []
        for i in range(self.islands):
            pool = pools[i]
            for s in range(self.population):
                if not pool:
                    out.append(Plan(i, s, "seed"))
                elif s == 0:
                    out.append(Plan(i, s, "mutate", (self._best(history, pool),)))
                elif len(pool) >= 2 and rng.random() < self.crossover_rate:
                    a = self._pick(rng, history, pool)
                    b = self._pick(rng, history, [j for j in pool if j != a])
                    out.append(Plan(i, s, "crossover", (a, b)))
                elif elites and rng.random() < self.archive_rate:
                    out.append(Plan(i, s, "mutate", (rng.choice(elites),)))
                else:
                    out.append(Plan(i, s, "mutate", (self._pick(rng, history, pool),)))
        return out

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _gen(a: Attempt) -> int:
        return int(a.lineage.get("generation", a.turn))

    @staticmethod
    def _eligible(a: Attempt) -> bool:
        """Only correct, verified candidates are parents; failures are lessons."""
        return a.passed and not a.rejected and a.code is not None

    def _own(self, history: History, ok: list[int], island: int, g: int) -> list[int]:
        return [i for i in ok if history[i].lineage.get("island", 0) == island
                and self._gen(history[i]) < g]

    def _rank(self, history: History, i: int) -> tuple[float, int, int]:
        """Fitness, then (ties, e.g. untimed on CPU) the shorter normalised source, then the
        earlier candidate."""
        a = history[i]
        return a.fitness, -len(normalise_source(a.code or "")), -i

    def _best(self, history: History, ids: Sequence[int]) -> int:
        return max(ids, key=lambda i: self._rank(history, i))

    def _best_fitness(self, history: History, g: int) -> float:
        return max((a.fitness for a in history if self._eligible(a) and self._gen(a) <= g),
                   default=0.0)

    def _pick(self, rng: random.Random, history: History, ids: Sequence[int]) -> int:
        top = max(history[i].fitness for i in ids)
        weights = [max(history[i].fitness, self.fitness_floor * top) for i in ids]
        return rng.choices(list(ids), weights=weights)[0]

    def _lessons(self, history: History, g: int, island: int) -> list[str]:
        """Short notes on the latest failures before ``g``, this island's first."""
        order = sorted((i for i, a in enumerate(history) if self._gen(a) < g),
                       key=lambda i: (history[i].lineage.get("island", 0) == island, i),
                       reverse=True)
        out: list[str] = []
        for i in order:
            note = lesson(history[i])
            if note and note not in out:
                out.append(note)
            if len(out) >= self.lessons:
                break
        return out

    def _key(self, code: str) -> tuple[str, str]:
        k = self._keys.get(code)
        if k is None:
            k = self._keys[code] = (code_key(code), near_key(code))
        return k
