"""The inputs of a multivariate model, built per tick from its tags: levels, rates and rolling
means over a window, and lags (each input also at the ticks before). Any model kind uses it (the
PCA family and any other ``[[models]]`` kind), and ``plantwatch train`` builds its training rows
with the very same objects, so that train, replay and live see identical inputs.

- Rates and rolling means are programs of the expression kernel (``detectors._expr`` through
  ``detectors.expr.Evaluator``), the one that computes computed tags: ``rate(T, W)`` and
  ``rolling_mean(T, W)`` written to hidden tags numbered after the config's tags. They are never
  seen outside the model (no telemetry, no history, no alarm of their own).
- A tick is the run of samples sharing one timestamp (``detectors._pca.TickCollector``); it is
  complete when every input has a usable value.
- Lags are rows of complete ticks: the input vector of tick j is followed by those of ticks
  j-1 ... j-lags, kept in a ring of the last ``lags`` rows per model.
- Warm-up: no row comes out before every window is full (``warmup_s`` after the first sample
  of one of the model's tags) and ``lags`` complete ticks have passed; a model is not judged, and cannot alarm, before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors import _pca
from detectors.expr import OPS, Evaluator


@dataclass(frozen=True)
class InputSpec:
    """Which inputs a model sees, from its tags ``tags`` (source tags, in the config's order)."""

    tags: tuple[str, ...]
    levels: tuple[str, ...] | None = None  # tags entering as their level; None = all
    rates: tuple[float, ...] = ()  # windows (s) of rate(T, W) for each tag of ``rate_of``
    means: tuple[float, ...] = ()  # windows (s) of rolling_mean(T, W) for each tag of ``mean_of``
    rate_of: tuple[str, ...] | None = None  # tags that get rates; None = all
    lags: int = 0
    mean_of: tuple[str, ...] | None = None  # tags that get rolling means; None = all

    def __post_init__(self) -> None:
        for name in (*(self.levels or ()), *(self.rate_of or ()), *(self.mean_of or ())):
            if name not in self.tags:
                raise ValueError(f"input tag {name!r} is not a tag of the model")
        if self.lags < 0 or self.lags != int(self.lags):
            raise ValueError(f"lags must be a whole number >= 0, not {self.lags!r}")
        if any(not w > 0 for w in (*self.rates, *self.means)):
            raise ValueError("windows of rates and rolling means must be > 0 s")
        if not self.base_columns():
            raise ValueError("the model has no inputs (no levels, rates or rolling means)")

    @property
    def level_tags(self) -> tuple[str, ...]:
        return self.tags if self.levels is None else tuple(t for t in self.tags if t in self.levels)

    def _of(self, chosen: tuple[str, ...] | None) -> tuple[str, ...]:
        return self.tags if chosen is None else tuple(t for t in self.tags if t in chosen)

    def derived_inputs(self) -> list[tuple[str, str, float]]:
        """(function, tag, window) of every derived input, in column order."""
        return ([("rate", t, w) for w in self.rates for t in self._of(self.rate_of)]
                + [("rolling_mean", t, w) for w in self.means for t in self._of(self.mean_of)])

    def base_columns(self) -> list[str]:
        return list(self.level_tags) + [f"{f}({t}, {w:g})" for f, t, w in self.derived_inputs()]

    def base_sources(self) -> list[str]:
        """The tag each base column comes from."""
        return list(self.level_tags) + [t for _, t, _ in self.derived_inputs()]

    def columns(self) -> list[str]:
        """Every input column's name: the base columns, then each again per lag (``[t-1]`` ...)."""
        base = self.base_columns()
        return base + [f"{c}[t-{k}]" for k in range(1, self.lags + 1) for c in base]

    def sources(self) -> list[str]:
        return self.base_sources() * (self.lags + 1)

    @property
    def warmup_s(self) -> float:
        return max((*self.rates, *self.means), default=0.0)

    def describe(self) -> str:
        parts = []
        if self.level_tags:
            parts.append(f"{len(self.level_tags)} levels")
        for f, ws, of in (("rate", self.rates, self.rate_of), ("rolling mean", self.means, self.mean_of)):
            for w in ws:
                named = of if of is not None and len(of) <= 3 else None
                parts.append(f"{f} over {w:g} s of " + (", ".join(named) if named else f"{len(self._of(of))} tags"))
        if self.lags:
            parts.append(f"lags 1..{self.lags}")
        return ", ".join(parts)

    def same_inputs(self, other: InputSpec) -> bool:
        """The same input set, whatever the order the tags are listed in."""
        def key(spec: InputSpec) -> tuple:
            sets = [None if v is None else frozenset(v) for v in (spec.levels, spec.rate_of, spec.mean_of)]
            return frozenset(spec.tags), *sets, spec.rates, spec.means, spec.lags

        return key(self) == key(other)

    def to_json(self) -> str:
        return json.dumps({"tags": self.tags, "levels": self.levels, "rates": self.rates, "means": self.means,
                           "rate_of": self.rate_of, "mean_of": self.mean_of, "lags": self.lags})

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        d = json.loads(text)

        def tup(v):
            return None if v is None else tuple(v)

        return cls(tuple(d["tags"]), tup(d["levels"]), tuple(d["rates"]), tuple(d["means"]), tup(d["rate_of"]),
                   int(d["lags"]), tup(d["mean_of"]))


@dataclass(frozen=True)
class _Program:
    """One derived input as a program of the expression kernel (see agent.expressions.Program)."""

    out: int
    code: tuple[tuple[int, int, float], ...]
    windows: tuple[float, ...]
    inputs: tuple[int, ...]
    depth: int = 1


@dataclass
class InputStage:
    """The model's input rows from batches of samples: per complete tick after the warm-up,
    one row of ``spec.columns()`` (raw engineering units) and its time."""

    n_tags: int
    spec: InputSpec
    tags: Sequence[int]  # the global index of each of spec.tags
    intervals: Sequence[float] = ()  # per tag of spec.tags, its poll interval (sizes the windows)
    _ring: np.ndarray = field(init=False, repr=False)
    _start: float = field(init=False, default=np.nan)
    _seen: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        index = dict(zip(self.spec.tags, (int(t) for t in self.tags), strict=True))
        interval = dict(zip(self.spec.tags, self.intervals, strict=False))
        derived = self.spec.derived_inputs()
        programs = [_Program(self.n_tags + j, ((OPS["TAG"], index[t], 0.0),
                                               (OPS["RATE" if f == "rate" else "RMEAN"], 0, 0.0)), (w,), (index[t],))
                    for j, (f, t, w) in enumerate(derived)]
        total = self.n_tags + len(programs)
        self.evaluator = (Evaluator(total, programs, [interval.get(t, 1.0) for _, t, _ in derived])
                          if programs else None)
        var = np.full(total, -1, dtype=np.int32)
        cols = [index[t] for t in self.spec.level_tags] + [p.out for p in programs]
        var[cols] = np.arange(len(cols), dtype=np.int32)
        self.width = len(cols)
        self.collector = _pca.TickCollector(var, np.zeros(len(cols)), np.ones(len(cols)))
        self._ring = np.empty((0, self.width))
        self._sources = np.array(sorted(index.values()), dtype=np.int32)
        self._reads = np.zeros(total, dtype=bool)  # the tags the derived inputs' programs read
        self._reads[[index[t] for _, t, _ in derived]] = True

    def rows(self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """(X, times): one row per complete tick of the batch after the warm-up."""
        if np.isnan(self._start):  # the warm-up counts from the first sample of an input tag
            mine = np.flatnonzero(np.isin(tag, self._sources))
            if len(mine):
                self._start = float(ts[mine[0]])
        if self.evaluator is not None:
            # the kernel sees only the samples its programs read; each derived sample goes in
            # right after the last of them in its tick (inside the tick, as Pipeline.judge does)
            ts = np.asarray(ts, dtype=np.float64)
            read = np.flatnonzero(self._reads[tag])
            out = self.evaluator.evaluate(tag[read], value[read], ts[read], quality[read])
            if out is not None:
                at = read[np.asarray(out[4], dtype=np.intp) - 1] + 1
                tag, value, ts, quality = _merged((tag, value, ts, quality), (*out[:4], at))
            # the evaluator's own hidden tags are numbered after the config's: a batch of the
            # config's tags never carries one
        X, idx = self.collector.collect(np.ascontiguousarray(tag, dtype=np.int32),
                                        np.ascontiguousarray(value, dtype=np.float64),
                                        np.ascontiguousarray(ts, dtype=np.float64),
                                        np.ascontiguousarray(quality, dtype=np.uint8))
        times = np.asarray(ts, dtype=np.float64)[idx]
        if self.spec.warmup_s > 0 and len(times):  # every window full
            keep = times >= self._start + self.spec.warmup_s
            X, times = X[keep], times[keep]
        return self._lagged(X, times)

    def _lagged(self, X: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        L = self.spec.lags
        if L == 0:
            return X, times
        full = np.vstack([self._ring, X])
        n_out = max(0, len(full) - L)
        out = np.empty((n_out, self.width * (L + 1)))
        for k in range(L + 1):  # column block k: the row k ticks back
            out[:, k * self.width:(k + 1) * self.width] = full[L - k:L - k + n_out]
        self._ring = full[-L:].copy()
        return out, times[len(times) - n_out:]


def _merged(batch: tuple[np.ndarray, ...], computed: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The batch with the computed samples inserted before the batch sample at computed[4] (as
    detectors.expr.merged, with one index computation for the four arrays)."""
    n, m = len(batch[0]), len(computed[0])
    dest = np.asarray(computed[4], dtype=np.intp) + np.arange(m)
    keep = np.ones(n + m, dtype=bool)
    keep[dest] = False
    out = []
    for a, c in zip(batch, computed[:4], strict=True):
        r = np.empty(n + m, dtype=a.dtype)
        r[dest] = c
        r[keep] = a
        out.append(r)
    return tuple(out)


def table_rows(spec: InputSpec, columns: np.ndarray, ts: np.ndarray, chunk: int = 4096
               ) -> tuple[np.ndarray, np.ndarray]:
    """The input rows of a table (rows x spec.tags, NaN = no sample; time-ordered), fed through an
    InputStage in time-major batches exactly as replay feeds the engine: what train fits on.
    Levels alone of rows each complete and in strictly increasing time are the table itself
    (no copy: what the stage would build, row for row)."""
    p = len(spec.tags)
    if spec.level_tags == spec.tags and not spec.derived_inputs() and spec.lags == 0 and len(ts) > 1 \
            and bool(np.all(np.diff(ts) > 0)) and not np.isnan(columns).any():
        return columns, ts
    stage = InputStage(p, spec, range(p), [_interval(ts)] * p)
    tag_ids = np.arange(p, dtype=np.int32)
    xs, times = [], []
    for start in range(0, len(ts), chunk):
        block = columns[start:start + chunk]
        ok = ~np.isnan(block)
        tag = np.broadcast_to(tag_ids, block.shape)[ok]
        t = np.broadcast_to(ts[start:start + chunk, None], block.shape)[ok]
        X, tt = stage.rows(tag, block[ok], t, np.zeros(tag.shape[0], dtype=np.uint8))
        xs.append(X)
        times.append(tt)
    if not xs:
        return np.empty((0, stage.width * (spec.lags + 1))), np.empty(0)
    return np.vstack(xs), np.concatenate(times)


def _interval(ts: np.ndarray) -> float:
    d = np.diff(ts[: 10_000])
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0
