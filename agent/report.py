"""The replay report: one self-contained HTML file (``plantwatch replay … --report FILE``).

Functional core: ``render`` returns the document as a string; the caller writes it. Plots are
inline SVG polylines drawn here, each series reduced to the minimum and maximum of every pixel
column so that a million rows make a few thousand points and no spike is lost. Nothing refers
to anything outside the file (no script, no style sheet, no font, no image by address), so it
opens offline and can be mailed as it is.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 960, 170, 64, 12, 10, 22
TOP_TAGS = 6
STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}
th{background:#eee}svg{display:block;margin:.3em 0 1em 0;background:#fcfcfc;border:1px solid #ddd}
.num{text-align:right}.note{color:#666;font-size:.85em}
"""


@dataclass
class Statistic:
    """One model statistic over the rows (T², SPE, …) and its limit."""

    model: str
    name: str
    values: np.ndarray
    limit: float


@dataclass
class Episode:
    """One alarm from its activation to its clearing (None: still active at the end)."""

    id: str
    tag: str | None
    kind: str
    levels: list[str]
    start: float
    end: float | None
    top_tags: list[str] = field(default_factory=list)
    delay: float | None = None  # from the onset of the labelled anomaly it falls in


def episodes(messages: Sequence[Mapping[str, Any]], ts_of) -> list[Episode]:
    """The alarms of a message stream: an id's activation opens one, its clearing closes it."""
    open_: dict[str, Episode] = {}
    out: list[Episode] = []
    for m in messages:
        if m["state"] not in ("active", "cleared"):
            continue
        ep = open_.get(m["id"])
        if m["state"] == "active":
            if ep is None:
                ep = Episode(m["id"], m.get("tag"), m["kind"], [m["level"]], ts_of(m), None,
                             list((m.get("context") or {}).get("top_tags") or []))
                open_[m["id"]] = ep
                out.append(ep)
            elif m["level"] not in ep.levels:
                ep.levels.append(m["level"])
        elif ep is not None:
            ep.end = ts_of(m)
            del open_[m["id"]]
    return out


def label_segments(labels: np.ndarray | None) -> list[tuple[int, int]]:
    if labels is None:
        return []
    b = np.concatenate([[False], labels.astype(bool), [False]])
    edges = np.flatnonzero(b[1:] != b[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def set_delays(eps: list[Episode], ts: np.ndarray, segs: list[tuple[int, int]]) -> None:
    """An alarm raised inside a labelled anomaly gets its delay from the anomaly's onset."""
    for ep in eps:
        row = int(np.searchsorted(ts, ep.start, side="right")) - 1
        for a, b in segs:
            if a <= row < b:
                ep.delay = ep.start - float(ts[a])


def top_tags(eps: list[Episode], available: Sequence[str], n: int = TOP_TAGS) -> list[str]:
    """The tags named most by the alarms (a model alarm counts its top tags), then the rest."""
    count: dict[str, int] = {}
    for ep in eps:
        for t in [ep.tag, *ep.top_tags]:
            if t in available:
                count[t] = count.get(t, 0) + 1
    ranked = sorted(count, key=lambda t: (-count[t], list(available).index(t)))
    return (ranked + [t for t in available if t not in count])[:n]


def _fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def envelope(x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of y per pixel column, as a polyline (x, y) that visits both in time order."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return x, y
    if x.size <= 2 * columns:
        return x, y
    col = np.clip(((x - x0) / (x1 - x0 or 1.0) * columns).astype(np.int64), 0, columns - 1)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    ilo = np.array([s + int(np.argmin(y[s:e])) for s, e in zip(starts, np.r_[starts[1:], y.size], strict=True)])
    ihi = np.array([s + int(np.argmax(y[s:e])) for s, e in zip(starts, np.r_[starts[1:], y.size], strict=True)])
    first = np.minimum(ilo, ihi)
    second = np.maximum(ilo, ihi)
    xs = np.column_stack([x[first], x[second]]).ravel()
    ys = np.column_stack([np.where(first == ilo, lo, hi), np.where(first == ilo, hi, lo)]).ravel()
    return xs, ys


# linear: one plot, drawn top to bottom
def svg_plot(title: str, ts: np.ndarray, y: np.ndarray, lines: Mapping[str, float] = {},
             bands: Sequence[tuple[float, float, str]] = (), log: bool = False) -> str:
    """An inline SVG trend: the series, horizontal limit lines, shaded time bands (alarms, labels)."""
    x0, x1 = float(ts[0]), float(ts[-1]) if ts[-1] > ts[0] else float(ts[0]) + 1.0
    pw = WIDTH - PAD_L - PAD_R
    ph = HEIGHT - PAD_T - PAD_B
    xs, ys = envelope(ts, np.asarray(y, dtype=np.float64), x0, x1, pw)
    if log:
        ys = np.log10(np.maximum(ys, 1e-12))
    levels = [math.log10(max(v, 1e-12)) if log else v for v in lines.values() if math.isfinite(v)]
    finite = np.concatenate([ys, levels]) if ys.size or levels else np.array([0.0, 1.0])
    lo, hi = float(np.min(finite)), float(np.max(finite))
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)

    def px(t):
        return PAD_L + (np.asarray(t) - x0) / (x1 - x0) * pw

    def py(v):
        return PAD_T + (hi - np.asarray(v)) / (hi - lo) * ph

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{html.escape(title)}</title>']
    for a, b, color in bands:
        xa, xb = float(px(max(a, x0))), float(px(min(b, x1)))
        parts.append(f'<rect x="{xa:.1f}" y="{PAD_T}" width="{max(xb - xa, 1.0):.1f}" height="{ph}" '
                     f'fill="{color}" fill-opacity="0.25"/>')
    parts.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if ys.size:
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(xs).tolist(), py(ys).tolist(), strict=True))
        parts.append(f'<polyline class="series" fill="none" stroke="#1f5fa8" stroke-width="1" points="{pts}"/>')
    for name, v in lines.items():
        if not math.isfinite(v):
            continue
        yv = float(py(math.log10(max(v, 1e-12)) if log else v))
        parts.append(f'<line class="limit" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{yv:.1f}" y2="{yv:.1f}" '
                     f'stroke="#c0392b" stroke-dasharray="5,3"/>'
                     f'<text x="{WIDTH - PAD_R - 4}" y="{yv - 2:.1f}" font-size="10" text-anchor="end" '
                     f'fill="#c0392b">{html.escape(name)} {_num(v)}</text>')
    for v in (lo, hi):
        label = _num(10 ** v if log else v)
        parts.append(f'<text x="{PAD_L - 4}" y="{float(py(v)) + 4:.1f}" font-size="10" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{PAD_L}" y="{HEIGHT - 6}" font-size="10">{_fmt_time(x0)}</text>'
                 f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 6}" font-size="10" text-anchor="end">{_fmt_time(x1)} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(line: str) -> list[str]:
    """A printed score line ("FAR       0.00 %") as (name, value with its unit)."""
    m = re.match(r"^(.*?)\s+(-?[0-9][0-9.e+-]*|n/a)(\s*\S*)$", line.strip())
    return [m.group(1), m.group(2) + m.group(3)] if m else [line, ""]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


# linear: the document's sections in order
def render(*, title: str, ts: np.ndarray, columns: Mapping[str, np.ndarray], messages: Sequence[Mapping[str, Any]],
           ts_of, limits: Mapping[str, Mapping[str, float]], statistics: Sequence[Statistic] = (),
           labels: np.ndarray | None = None, scores: Sequence[str] = (), summary: Sequence[str] = ()) -> str:
    """The report as one HTML string. ``columns`` are the replayed tags' values per row, ``limits``
    each tag's fixed limits by level name, ``scores`` the lines ``replay --labels`` prints."""
    eps = episodes(messages, ts_of)
    segs = label_segments(labels)
    set_delays(eps, ts, segs)
    label_bands = [(float(ts[a]), float(ts[b - 1]), "#f39c12") for a, b in segs]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f"<p>{html.escape(line)}</p>" for line in summary]
    out.append('<p class="note">Shaded red: the tag\'s alarms active; shaded orange: labelled anomalies; '
               "dashed: limits. Each trend shows the minimum and maximum of the rows in every pixel column.</p>")
    if scores:
        out.append("<h2>Scores against the labels</h2>")
        out.append(_table(["figure", "value"], [_figure(s) for s in scores], "scores"))
    if statistics:
        out.append("<h2>Model statistics</h2>")
        for st in statistics:
            model_bands = [(e.start, e.end if e.end is not None else float(ts[-1]), "#e74c3c")
                           for e in eps if e.id.startswith(f"{st.model}/")]
            v = st.values[np.isfinite(st.values)]
            log = bool(v.size and st.limit > 0 and v.max() > 20 * st.limit)
            out.append(f"<h3>{html.escape(st.model)}: {html.escape(st.name)}</h3>")
            out.append(svg_plot(f"{st.model} {st.name}", ts, st.values, {"limit": st.limit},
                                model_bands + label_bands, log=log))
    out.append("<h2>Trends of the top tags</h2>")
    for tag in top_tags(eps, list(columns)):
        bands = [(e.start, e.end if e.end is not None else float(ts[-1]), "#e74c3c") for e in eps if e.tag == tag]
        n = sum(1 for e in eps if e.tag == tag or tag in e.top_tags)
        out.append(f'<h3 class="trend">{html.escape(tag)} <span class="note">({n} alarms)</span></h3>')
        out.append(svg_plot(tag, ts, columns[tag], limits.get(tag, {}), bands + label_bands))
    out.append(f"<h2>Alarms ({len(eps)})</h2>")
    rows = [[e.id, "/".join(e.levels), _fmt_time(e.start), "" if e.end is None else _fmt_time(e.end),
             "" if e.end is None else f"{e.end - e.start:.0f}", ", ".join(e.top_tags),
             "" if e.delay is None else f"{e.delay:.1f}"] for e in eps]
    out.append(_table(["alarm", "levels", "raised (UTC)", "cleared (UTC)", "duration s", "top tags",
                       "detection delay s"], rows, "alarms"))
    if segs:
        first = []
        for a, b in segs:
            hit = [e.delay for e in eps if e.delay is not None and ts[a] <= e.start <= ts[b - 1]]
            first.append([_fmt_time(float(ts[a])), _fmt_time(float(ts[b - 1])),
                          f"{min(hit):.1f}" if hit else "missed"])
        out.append("<h2>Labelled anomalies</h2>")
        out.append(_table(["onset (UTC)", "end (UTC)", "detection delay s"], first, "anomalies"))
    out.append("</body></html>")
    return "\n".join(out)
