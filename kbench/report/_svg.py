"""Small self-contained SVG plots (no library, no script): line curves, log-scale dot strips
and horizontal bars. Every label is HTML-escaped: run and problem names come from users."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "line_plot", "strip_plot", "bar_plot"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_W, _H, _L, _R, _T, _B = 640, 300, 56, 16, 16, 44


def _svg(body: list[str], title: str, h: int = _H) -> str:
    return (f'<svg class="plot" role="img" aria-label="{escape(title)}" viewBox="0 0 {_W} {h}" '
            f'width="{_W}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11,
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif"{extra}>{escape(s)}</text>')


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, n in enumerate(names):
        c = PALETTE[i % len(PALETTE)]
        yy = y + 14 * i
        out.append(f'<rect x="{x:.1f}" y="{yy - 8:.1f}" width="10" height="10" fill="{c}"/>')
        out.append(_text(x + 14, yy + 1, n, "start"))
    return out


def _axes(xlabel: str, ylabel: str, h: int = _H) -> list[str]:
    return [f'<line x1="{_L}" y1="{h - _B}" x2="{_W - _R}" y2="{h - _B}" stroke="#333"/>',
            f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{h - _B}" stroke="#333"/>',
            _text((_L + _W - _R) / 2, h - 8, xlabel),
            _text(14, (_T + h - _B) / 2, ylabel, extra=f' transform="rotate(-90 14 {(_T + h - _B) / 2:.1f})"')]


def line_plot(series: dict[str, Sequence[tuple[float, float]]], title: str, xlabel: str,
              ylabel: str, xmax: float, ymax: float = 1.0) -> str:
    """Step-free polylines, one per series, x in [0, xmax] and y in [0, ymax]."""
    pw, ph = _W - _L - _R, _H - _T - _B

    def px(x: float) -> float:
        return _L + pw * x / xmax

    def py(y: float) -> float:
        return _T + ph * (1 - y / ymax)

    body = _axes(xlabel, ylabel)
    for i in range(5):
        y = ymax * i / 4
        body.append(f'<line x1="{_L}" y1="{py(y):.1f}" x2="{_W - _R}" y2="{py(y):.1f}" '
                    'stroke="#ddd"/>')
        body.append(_text(_L - 4, py(y) + 4, f"{y:g}", "end"))
    for i in range(int(xmax) + 1):
        body.append(_text(px(i), _H - _B + 14, f"{i:g}"))
    for i, (name, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        body.append(f'<polyline class="series" fill="none" stroke="{c}" stroke-width="2" '
                    f'points="{d}"><title>{escape(name)}</title></polyline>')
    body += _legend(list(series), _W - _R - 180, _T + 10)
    return _svg(body, title)


def strip_plot(series: dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    """One row of dots per series on a log2 axis (speedups); 1× marked."""
    vals = [v for vs in series.values() for v in vs if v > 0]
    h = max(_H // 2, _T + _B + 28 * max(1, len(series)))
    if not vals:
        body = _axes(xlabel, "") + [_text(_W / 2, h / 2, "no timed correct verdicts "
                                          "(timing needs a CUDA GPU)")]
        return _svg(body, title, h)
    lo = math.floor(min(math.log2(v) for v in vals + [1.0]))
    hi = math.ceil(max(math.log2(v) for v in vals + [1.0]))
    hi = hi if hi > lo else lo + 1
    pw = _W - _L - _R

    def px(v: float) -> float:
        return _L + pw * (math.log2(v) - lo) / (hi - lo)

    body = _axes(xlabel, "", h)
    for e in range(lo, hi + 1):
        body.append(_text(px(2.0 ** e), h - _B + 14, f"{2.0 ** e:g}×"))
    body.append(f'<line x1="{px(1):.1f}" y1="{_T}" x2="{px(1):.1f}" y2="{h - _B}" '
                'stroke="#999" stroke-dasharray="4 3"/>')
    for i, (name, vs) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        y = _T + 14 + 28 * i
        body.append(_text(_L + 4, y - 7, name, "start", 10))
        for v in vs:
            if v > 0:
                body.append(f'<circle cx="{px(v):.1f}" cy="{y:.1f}" r="4" fill="{c}" '
                            f'fill-opacity="0.7"><title>{v:.3g}×</title></circle>')
    return _svg(body, title, h)


def bar_plot(bars: Sequence[tuple[str, float | None, int]], title: str, xlabel: str,
             xmax: float = 100.0) -> str:
    """Horizontal bars ``(label, value or None, colour index)``; ``None`` drawn as "–"."""
    h = _T + _B + 18 * max(1, len(bars))
    left = 220
    pw = _W - left - _R
    body = [f'<line x1="{left}" y1="{h - _B}" x2="{_W - _R}" y2="{h - _B}" stroke="#333"/>',
            _text((left + _W) / 2, h - 8, xlabel)]
    for i in range(5):
        x = left + pw * i / 4
        body.append(_text(x, h - _B + 14, f"{xmax * i / 4:g}"))
    if not bars:
        body.append(_text(_W / 2, h / 2, "no problems"))
    for i, (label, v, ci) in enumerate(bars):
        y = _T + 18 * i
        body.append(_text(left - 6, y + 12, label[:40], "end", 10))
        if v is None:
            body.append(_text(left + 6, y + 12, "– (not measured)", "start", 10))
            continue
        w = pw * min(max(v, 0.0), xmax) / xmax
        body.append(f'<rect class="bar" x="{left}" y="{y + 3:.1f}" width="{w:.1f}" height="12" '
                    f'fill="{PALETTE[ci % len(PALETTE)]}"><title>{v:.1f}</title></rect>')
    return _svg(body, title, h)
