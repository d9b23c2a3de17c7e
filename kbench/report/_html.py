"""``kbench report --html DIR``: a static site that works offline.

``index.html`` holds one sortable leaderboard per device fingerprint, fast_p curves, the
speedup distribution, SOL% per problem and a table of problems linking to
``problems/<slug>.html``: per run, the winning kernel's source (highlighted by pygments,
inline styles), per-shape times and speedups, tuned configurations, the lineage tree and
the failed and rejected attempts with their reasons. Nothing is fetched from a network;
the only script is a small inline table sorter. Candidate code, model output and reasons
are untrusted: every string goes through :func:`html.escape` (or pygments, which escapes).
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from kbench.errors import ConfigError
from kbench.report._data import (
    ALL,
    UNTIMED_NOTE,
    ProblemEntry,
    Report,
    RunReport,
    shown_fast,
    untimed,
)
from kbench.report._svg import bar_plot, line_plot, strip_plot
from kbench.scoring import fast_p

__all__ = ["prepare_html_dir", "write_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 7px;
font-size:13px;text-align:right}th{background:#f3f3f3;cursor:pointer;user-select:none}
td.l,th.l{text-align:left}pre{background:#f8f8f8;padding:8px;overflow:auto;font-size:12px}
.warn{color:#a60}.bad{color:#b00}.ok{color:#070}.dim{color:#777}svg.plot{display:block;
margin:.5em 0 1.5em;border:1px solid #eee}h2{margin-top:1.5em}
"""
_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, i) {
  th.addEventListener("click", function () {
    var tb = th.closest("table").tBodies[0], rows = Array.from(tb.rows);
    var asc = th.dataset.dir !== "asc"; th.dataset.dir = asc ? "asc" : "desc";
    function key(r) { var c = r.cells[i]; var v = c ? (c.dataset.v || c.textContent) : "";
      var n = parseFloat(v); return isNaN(n) ? v : n; }
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
      return asc ? c : -c; });
    rows.forEach(function (r) { tb.appendChild(r); });
  });
});
"""
_PS = (0.0, 1.0, 1.5, 2.0)


def _page(title: str, body: str, script: bool = False) -> str:
    js = f"<script>{_JS}</script>" if script else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}{js}"
            "</body></html>\n")


def _f(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else f"{x:{spec}}"


def _td(x: Any, left: bool = False, v: Any = None) -> str:
    dv = f' data-v="{escape(str(v))}"' if v is not None else ""
    return f'<td{" class=l" if left else ""}{dv}>{escape(str(x))}</td>'


def _th(cols: list[str], left: int = 0) -> str:
    return "<tr>" + "".join(f'<th{" class=l" if i < left else ""}>{escape(c)}</th>'
                            for i, c in enumerate(cols)) + "</tr>"


def _slug(key: str, taken: set[str]) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._") or "problem"
    base, i = s, 1
    while s in taken:
        i, s = i + 1, f"{base}_{i}"
    taken.add(s)
    return s


def _leaderboard(rep: Report) -> str:
    out = []
    for g in rep.groups:
        out.append(f"<h3>device {escape(g.label)}</h3>")
        cols = ["run", "model", "suite", "n"] + [f"fast_{p:g} {b}" for p in _PS
                                                 for b in ("eager", "compile")]
        cols += ["geomean× eager", "geomean× compile", "SOL %", "cost $", "tokens",
                 "GPU-min", "rejected"]
        rows = []
        for r in g.runs:
            suites = [s for s in r.suites if s != ALL]
            for s in suites + ([ALL] if len(suites) > 1 else []):
                sm, c = r.suites[s], r.costs[s]
                cells = [_td(r.run.name, True), _td(r.run.model or "", True), _td(s, True),
                         _td(sm.n_problems)]
                cells += [_td(_f(shown_fast(sm, p, b), ".2f"))
                          for p in _PS for b in ("eager", "compile")]
                cells += [_td(_f(sm.geomean_speedup_eager), v=sm.geomean_speedup_eager or 0),
                          _td(_f(sm.geomean_speedup_compile), v=sm.geomean_speedup_compile or 0),
                          _td(_f(sm.mean_sol_pct, ".1f"), v=sm.mean_sol_pct or 0),
                          _td(f"{c.cost_usd:.3f}"), _td(c.tokens), _td(f"{c.gpu_minutes:.2f}"),
                          _td(c.rejected)]
                rows.append('<tr class="run-row">' + "".join(cells) + "</tr>")
        out.append(f'<table class="sortable leaderboard"><thead>{_th(cols, 3)}</thead>'
                   f'<tbody>{"".join(rows)}</tbody></table>')
        names = [r.run.name for r in g.runs if untimed(r.suites[ALL])]
        if names:
            out.append(f'<p class="dim untimed">no timing (no GPU) in {escape(", ".join(names))}'
                       f": {escape(UNTIMED_NOTE)}</p>")
    return "".join(out)


def _plots(rep: Report) -> str:
    out = []
    for g in rep.groups:
        curves = {}
        for r in g.runs:
            if untimed(r.suites[ALL]) or not r.problems:
                continue  # no curve to draw: fast_p for p > 0 is undefined without timing
            res = {k: e.best for k, e in r.problems.items()}
            curves[r.run.name] = [(p / 20, fast_p(res, p / 20)) for p in range(81)]
        out.append(f"<h3>fast_p against eager, p from 0 to 4 — {escape(g.label)}</h3>")
        left = [r.run.name for r in g.runs if r.run.name not in curves]
        if left:
            out.append(f'<p class="dim">no curve for {escape(", ".join(left))}: no timed '
                       "verdicts (timing needs a CUDA GPU)</p>")
        if curves:
            out.append(line_plot(curves, "fast_p curve", "p (speedup threshold over eager)",
                                 "fast_p", 4.0))
        speeds = {r.run.name: [e.best["speedup_eager"] for e in r.problems.values()
                               if e.best and e.best.get("status") == "correct"
                               and e.best.get("speedup_eager")] for r in g.runs}
        out.append("<h3>speedup over eager of each correct best kernel</h3>")
        out.append(strip_plot(speeds, "speedup distribution", "speedup over eager (log scale)"))
        bars = [(f"{r.run.name} · {k}", (e.best or {}).get("sol_pct"), i)
                for i, r in enumerate(g.runs) for k, e in r.problems.items()]
        out.append("<h3>SOL % per problem (share of the roofline bound reached)</h3>")
        out.append(bar_plot(bars, "SOL % per problem", "SOL %"))
    return "".join(out)


def _problem_index(rep: Report, slugs: dict[str, str]) -> str:
    runs = rep.runs
    cols = ["problem", "suite"] + [f"{r.run.name}" for r in runs]
    rows = []
    for key, slug in slugs.items():
        suite = next(r.problems[key].suite for r in runs if key in r.problems)
        cells = [f'<td class=l><a class="problem-link" href="problems/{slug}.html">'
                 f"{escape(key)}</a></td>", _td(suite, True)]
        for r in runs:
            b = r.problems[key].best if key in r.problems else None
            if key not in r.problems:
                cells.append(_td(""))
            elif b is None:
                cells.append(_td("no verdict"))
            else:
                s = b.get("speedup_eager")
                cells.append(_td(f"{b['status']} {_f(s, '.2f')}×" if s else b["status"],
                                 v=s or 0))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable problems"><thead>{_th(cols, 2)}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _highlight(source: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(source, PythonLexer(), HtmlFormatter(noclasses=True, style="default"))


def _shapes(best: dict[str, Any]) -> str:
    cols = ["shape", "params", "derived", "passed", "ms", "eager ms", "compile ms",
            "× eager", "× compile", "SOL %", "max abs err", "reason"]
    rows = []
    for s in best.get("shapes") or ():
        def ms(t: Any) -> str:
            return _f(t.get("median_ms"), ".4f") if isinstance(t, dict) else "–"
        rows.append("<tr>" + "".join([
            _td(s.get("name"), True), _td(json.dumps(s.get("params"), default=str), True),
            _td(s.get("derived")), _td(s.get("passed")), _td(ms(s.get("timing"))),
            _td(ms(s.get("eager"))), _td(ms(s.get("compiled"))),
            _td(_f(s.get("speedup_eager"))), _td(_f(s.get("speedup_compile"))),
            _td(_f(s.get("sol_pct"), ".1f")), _td(_f(s.get("max_abs_err"), ".3g")),
            _td(s.get("reason") or "", True)]) + "</tr>")
    return (f'<table class="shapes"><thead>{_th(cols, 2)}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _lineage(e: ProblemEntry) -> str:
    parents: dict[int, list[int]] = {}
    tags: dict[int, str] = {}
    for ln in e.lineage:
        if ln.candidate_id is not None:
            parents[ln.candidate_id] = list(ln.parent_ids)
            t = ln.tags()
            tags[ln.candidate_id] = ", ".join(f"{k} {t[k]}" for k in
                                              ("kind", "generation", "island", "rejected")
                                              if k in t)
    for c in e.attempts:
        if c.id not in parents and c.parent_id is not None:
            parents[c.id] = [c.parent_id]
    if not any(parents.values()):
        return ""
    ids = [c.id for c in e.attempts]
    status = {c.id: c.verdict.status.value if c.verdict else "not verified" for c in e.attempts}
    children: dict[int | None, list[int]] = {}
    for i in ids:
        ps = [p for p in parents.get(i, []) if p in status]
        children.setdefault(ps[0] if ps else None, []).append(i)

    def node(i: int, depth: int) -> str:
        more = [p for p in parents.get(i, [])[1:]]
        extra = f" (also from {', '.join(f'#{p}' for p in more)})" if more else ""
        win = " ★ winner" if e.winner is not None and e.winner.id == i else ""
        kids = "".join(node(k, depth + 1) for k in children.get(i, []) if depth < 200)
        return (f"<li>#{i} {escape(status[i])}{escape(' · ' + tags[i] if tags.get(i) else '')}"
                f"{escape(extra)}{escape(win)}{f'<ul>{kids}</ul>' if kids else ''}</li>")

    roots = "".join(node(i, 0) for i in children.get(None, []))
    return f'<h4>lineage (candidate ← parent)</h4><ul class="lineage">{roots}</ul>'


def _failed(e: ProblemEntry) -> str:
    items = []
    for c in e.attempts:
        v = c.verdict
        if v is not None and not v.passed:
            cls = "bad" if v.status.value == "rejected" else "warn"
            items.append(f'<li><span class="{cls}">#{c.id} {escape(v.status.value)}</span>'
                         f"<pre>{escape(v.reason[:4000])}</pre></li>")
    for ln in e.lineage:
        if ln.rejected:
            who = f"#{ln.candidate_id}" if ln.candidate_id is not None else "reply"
            items.append(f"<li>{escape(who)} not verified: {escape(ln.rejected)}</li>")
    if not items:
        return '<p class="dim">no failed or rejected attempts</p>'
    return f'<ul class="failed">{"".join(items)}</ul>'


def _run_section(r: RunReport, e: ProblemEntry, label: str) -> str:
    b = e.best
    h = [f"<h2>run {escape(r.run.name)} <span class=dim>({escape(r.run.model or '')}; "
         f"device {escape(label)})</span></h2>"]
    if b is None:
        h.append('<p class="warn">no verdict</p>')
    else:
        h.append(f"<p>best: <b>{escape(b.get('status', ''))}</b> — {escape(b.get('reason', ''))}"
                 f"; × eager {_f(b.get('speedup_eager'))}, × compile "
                 f"{_f(b.get('speedup_compile'))}, SOL {_f(b.get('sol_pct'), '.1f')} %</p>")
        h.append(_shapes(b))
    if e.winner is not None:
        h.append(f"<h4>kernel #{e.winner.id} ({escape(e.winner.backend)})</h4>")
        h.append(f'<div class="source">{_highlight(e.winner.source)}</div>')
    if e.tuned:
        rows = "".join("<tr>" + _td(t.shape_name, True) + _td(json.dumps(t.knobs), True)
                       + _td(_f(t.median_ms, ".4f")) + _td(t.trials) + "</tr>" for t in e.tuned)
        h.append(f'<h4>tuned configurations</h4><table class="tuned"><thead>'
                 f'{_th(["shape", "knobs", "median ms", "trials"], 2)}</thead>'
                 f"<tbody>{rows}</tbody></table>")
    h.append(_lineage(e))
    h.append("<h4>failed and rejected attempts</h4>" + _failed(e))
    return "".join(h)


def prepare_html_dir(out_dir: str | Path) -> Path:
    """Creates ``out_dir`` and its ``problems/`` folder for :func:`write_html`.

    Raises:
        ConfigError: ``out_dir`` is a file, or cannot be created or written (one line).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--html {out}: exists and is not a folder; name a folder for the "
                          "site (created if needed)")
    try:
        (out / "problems").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--html {out}: cannot create the folder ({e.strerror or e}); name "
                          "a folder you can write") from None
    return out


def write_html(rep: Report, out_dir: str | Path) -> Path:
    """Writes the site under ``out_dir`` (created if needed); returns ``index.html``'s path.

    Raises:
        ConfigError: ``out_dir`` is a file, or cannot be created or written (one line).
    """
    try:
        return _write_html(rep, prepare_html_dir(out_dir))
    except OSError as e:
        raise ConfigError(f"--html {out_dir}: cannot write the site ({e.strerror or e}); name "
                          "a folder you can write") from None


def _write_html(rep: Report, out: Path) -> Path:
    taken: set[str] = set()
    keys = sorted({k for r in rep.runs for k in r.problems})
    slugs = {k: _slug(k, taken) for k in keys}
    note = ""
    if len(rep.groups) > 1:
        note = (f'<p class="warn">{len(rep.groups)} device fingerprints: runs measured on '
                "different devices are shown separately; their speedups are not comparable.</p>")
    body = (f"<h1>kbench leaderboard</h1><p class=dim>store {escape(rep.store_url)}</p>{note}"
            f"<h2>leaderboard</h2>{_leaderboard(rep)}<h2>plots</h2>{_plots(rep)}"
            f"<h2>problems</h2>{_problem_index(rep, slugs)}")
    index = out / "index.html"
    index.write_text(_page("kbench leaderboard", body, script=True), encoding="utf-8")
    for key, slug in slugs.items():
        parts = [f'<p><a href="../index.html">← leaderboard</a></p><h1>{escape(key)}</h1>']
        for g in rep.groups:
            for r in g.runs:
                if key in r.problems:
                    parts.append(_run_section(r, r.problems[key], g.label))
        (out / "problems" / f"{slug}.html").write_text(
            _page(f"kbench · {key}", "".join(parts)), encoding="utf-8")
    return index
