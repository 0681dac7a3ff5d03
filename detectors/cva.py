"""Online monitoring of dynamic processes with canonical variate analysis (``kind = "cva"``).

Each model keeps the last ``lags`` complete ticks of its tags (its past window, t-1 … t-lags); a batch's ticks become past
vectors over a sliding window and are scored by one matrix product for the whole batch
(``detectors.cva_model``). The alarm is the model's, as with PCA: level T2, SPE (CVA's Q) or
T2+SPE, named after its top contributing tags.

With ``refit = "moving-window"`` the model is fitted again every ``refit_every`` accepted ticks
from the last ``refit_window`` accepted ticks, so a plant that drifts slowly is followed. A tick
is accepted only when the model is not in alarm and ``refit_hold`` ticks have passed since it
last was; a fit happens only at an accepted tick with both statistics under their limits. The
model never learns from (and so never adapts to) the data of an alarm. Ticks over a limit that
raise no alarm (within ``on_delay_s``, or the ``target_far`` of normal operation) are kept:
leaving them out would narrow the window's spread, tighten the limits and stop the learning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detectors import _pca
from detectors.base import ConditionChange, Family, Option, Statistic
from detectors.calibrate import Kind
from detectors.cva_model import CvaModel, CvaModelError, fit, min_rows
from detectors.modelfile import ModelFamily, model_tags

#: level code -> level name: which statistic is over its limit (Q is reported as SPE)
CVA_LEVELS = {1: "T2", 2: "SPE", 3: "T2+SPE"}
REFIT = ("none", "moving-window")
#: the longest default moving window: a fit runs inside the tick that makes it due, and its cost
#: grows with the window (at 50 tags and past 5, about a second for 10,000 rows)
DEFAULT_WINDOW = 10_000
#: the past windows (`lags`) `plantwatch train` chooses among, and the one without calibration
LAGS = (1, 2, 4)
DEFAULT_LAGS = 2


def configured_lags(options: Mapping[str, Any]) -> int | None:
    """The past window the config fixes, ``lags`` or its former name ``past`` (= lags + 1);
    None: chosen by ``plantwatch train``."""
    if options.get("lags") is not None:
        return int(options["lags"])
    if options.get("past") is not None:
        return int(options["past"]) - 1
    return None


def levels(before: int, pos: np.ndarray, new: np.ndarray, n: int) -> np.ndarray:
    """The debounced level after each of n ticks, from the level before and the changes."""
    return np.concatenate([[before], new]).astype(np.int8)[np.searchsorted(pos, np.arange(n), side="right")]


class _Window:
    """The accepted rows of a moving window, labelled by runs of consecutive ticks."""

    def __init__(self, m: int, window: int, every: int, hold: int):
        self.window, self.every, self.hold = window, every, hold
        self.rows = np.empty((2 * window, m))
        self.seg = np.empty(2 * window, dtype=np.int64)
        self.n = 0
        self.segment = 0
        self.quiet = hold  # ticks since the last tick in alarm
        self.fresh = 0  # accepted since the last fit
        self.was_accepted = False
        self.refits = 0

    def accepted(self, alarm: np.ndarray) -> np.ndarray:
        """Which ticks of a series may be learnt from (no state change)."""
        i = np.arange(len(alarm))
        last = np.maximum.accumulate(np.where(alarm, i, -(self.quiet + 1)))
        return (i - last) > self.hold

    def due(self, accepted: np.ndarray, calm: np.ndarray) -> int | None:
        """The tick after which the next fit is due, if within this series: enough accepted
        ticks, and the tick itself accepted and ``calm`` (both statistics under their limits)."""
        count = self.fresh + np.cumsum(accepted)
        full = np.minimum(self.n + np.cumsum(accepted), self.window) >= self.window
        hit = np.flatnonzero((count >= self.every) & full & accepted & calm)
        return int(hit[0]) if len(hit) else None

    def add(self, rows: np.ndarray, alarm: np.ndarray) -> None:
        ok = self.accepted(alarm)
        i = np.arange(len(alarm))
        last = np.maximum.accumulate(np.where(alarm, i, -(self.quiet + 1)))
        self.quiet = int(len(alarm) - 1 - last[-1]) if len(alarm) else self.quiet
        starts = ok & ~np.concatenate([[self.was_accepted], ok[:-1]])
        seg = self.segment + np.cumsum(starts)
        if len(ok):
            self.segment = int(seg[-1])
            self.was_accepted = bool(ok[-1])
        new, new_seg = rows[ok], seg[ok]
        k = len(new)
        if self.n + k > len(self.rows):
            keep = min(self.n, self.window)
            self.rows[:keep] = self.rows[self.n - keep: self.n]
            self.seg[:keep] = self.seg[self.n - keep: self.n]
            self.n = keep
        if k > len(self.rows) - self.n:  # more than the window in one series: the newest
            new, new_seg, k = new[-self.window:], new_seg[-self.window:], self.window
            self.n = 0
        self.rows[self.n: self.n + k] = new
        self.seg[self.n: self.n + k] = new_seg
        self.n += k
        self.fresh += k

    def refit(self, model: CvaModel) -> CvaModel:
        """The model fitted again from the window; the same one when the window cannot fit."""
        self.fresh = 0
        lo = max(0, self.n - self.window)
        try:
            new = fit(self.rows[lo: self.n], model.names, model.lags, model.future, model.states,
                      model.target_far, self.seg[lo: self.n])
        except (ValueError, np.linalg.LinAlgError):
            return model
        self.refits += 1
        return new


class _Monitor:
    """One CVA model watching its tags: ticks, the window of past ticks, debounce, re-fitting."""

    def __init__(self, n_tags: int, model: CvaModel, tags: Sequence[int], params: Mapping[str, Any]):
        if len(tags) != len(model.names):
            raise ValueError(f"model has {len(model.names)} tags, {len(tags)} tag indices given")
        self.tags = np.asarray(tags, dtype=np.int64)
        m = len(tags)
        var = np.full(n_tags, -1, dtype=np.int32)
        var[self.tags] = np.arange(m, dtype=np.int32)
        # the collector hands over raw values: scaling is the model's, and changes with a re-fit
        self.collector = _pca.TickCollector(var, np.zeros(m), np.ones(m))
        on, off = params.get("on_delay_s"), params.get("off_delay_s")
        self.delays = (model.on_delay_s if on is None else float(on), model.off_delay_s if off is None else float(off))
        self.debounce = _pca.SeriesDebounce(*self.delays)
        self.restart = (self.delays[0], 0.0, model.lags - 1)
        self.top = int(params["top"])
        self.name = str(params["model"])
        self.factors = float(params["t2_factor"]), float(params["spe_factor"])
        self.ring = np.empty((0, m))
        self.recent: list[Statistic] = []  # T2 and SPE of the last update (for trends)
        self.window: _Window | None = None
        if params.get("refit", "none") == "moving-window":
            size = int(params["refit_window"]) or min(model.n_train, DEFAULT_WINDOW)
            every = int(params["refit_every"]) or max(1, size // 10)
            self.window = _Window(m, size, every, int(params["refit_hold"]) or model.lags + model.future)
        self.use(model)

    def use(self, model: CvaModel) -> None:
        self.model = model
        self.t2_limit = model.t2_limit * self.factors[0]
        self.spe_limit = model.q_limit * self.factors[1]

    def update(self, tag, value, ts, quality, kind: str) -> list[ConditionChange]:
        self.recent = []
        X, idx = self.collector.collect(tag, value, ts, quality)
        changes: list[ConditionChange] = []
        start = 0
        while start < len(X):
            start = self._series(X, idx, start, ts, kind, changes)
        return changes

    def _series(self, X, idx, start, ts, kind, changes) -> int:
        """Judge ticks X[start:] with the current model up to the next re-fit; the next start."""
        model, lags = self.model, self.model.lags
        hist = np.concatenate([self.ring, X[start:]])
        j0 = lags - 1 - len(self.ring)  # the first tick with a full past
        if len(hist) < lags:
            self.ring = hist
            return len(X)
        P = model.past(((hist - model.mean) / model.scale).astype(np.float32))
        t2, spe = model.statistics(P)
        raw = (t2 > self.t2_limit).astype(np.int8) + 2 * (spe > self.spe_limit).astype(np.int8)
        when = np.ascontiguousarray(ts[idx[start + j0:]])
        n, due = self._plan(raw, when)
        self.recent += [Statistic(self.name, "T2", when[:n], t2[:n], self.t2_limit),
                        Statistic(self.name, "SPE", when[:n], spe[:n], self.spe_limit)]
        before = int(self.debounce.level)
        pos, prev, new = self.debounce.run(raw[:n], when[:n])
        for j, a, b in zip(pos.tolist(), prev.tolist(), new.tolist(), strict=True):
            changes.append(self._change(kind, P[j].astype(np.float64), int(a), int(b), t2[j], spe[j],
                                        float(when[j])))
        stop = j0 + n
        seen = hist[: len(self.ring) + stop]
        self.ring = seen[len(seen) - (lags - 1):]
        w = self.window
        if w is not None:
            w.add(X[start + j0: start + stop], levels(before, pos, new, n) != 0)
            if due:
                self.use(w.refit(self.model))
        return start + stop

    def _plan(self, raw: np.ndarray, when: np.ndarray) -> tuple[int, bool]:
        """How many ticks to judge before the next re-fit, and whether one is due after them."""
        w = self.window
        if w is None:
            return len(raw), False
        saved = self.debounce.level, self.debounce.pending, self.debounce.since
        pos, _, new = self.debounce.run(raw, when)
        self.debounce.level, self.debounce.pending, self.debounce.since = saved
        due = w.due(w.accepted(levels(saved[0], pos, new, len(raw)) != 0), raw == 0)
        return (len(raw), False) if due is None else (due + 1, True)

    def _change(self, kind, p, prev, new, t2, spe, ts) -> ConditionChange:
        level = new or prev
        c_t2, c_spe = self.model.contributions(p)
        contrib = c_spe if level >= 2 else c_t2
        order = np.argsort(-contrib)[: self.top]
        stat, limit = (spe, self.spe_limit) if level >= 2 else (t2, self.t2_limit)
        return ConditionChange(
            tag=int(self.tags[0]), kind=kind, level=CVA_LEVELS[level], active=new != 0, value=float(stat),
            limit=float(limit), ts=ts,
            context={"model": self.name, "t2": float(t2), "spe": float(spe), "t2_limit": self.t2_limit,
                     "spe_limit": self.spe_limit, "top_tags": [int(self.tags[o]) for o in order],
                     "contributions": {int(self.tags[o]): float(contrib[o]) for o in order},
                     "model_tags": [int(t) for t in self.tags]},
        )


def calibration(options: Mapping[str, Any]) -> Kind:
    """How detectors.calibrate searches a CVA model: the past windows (``lags``) the config leaves
    open, with its ``future`` and ``states``; the chosen model is fitted again with its states."""
    fixed = configured_lags(options)
    future, states = int(options["future"]), int(options["states"])

    searched: list[int] = []

    def choices(tr: Any, width: int) -> list[dict[str, Any]]:
        searched[:] = [fixed] if fixed is not None else list(LAGS) if tr.auto else [DEFAULT_LAGS]
        return [{"lags": k, "states": states} for k in searched]

    def fit_one(X: np.ndarray, tr: Any, spec: Any, lags: int, states: int) -> CvaModel:
        return fit(X, spec.tags, lags + 1, future, states, tr.target_far)

    def describe(c: Any) -> str:
        lags = dict(c.fixed)["lags"]
        how = ("fixed by the config" if fixed is not None else
               f"chosen among {', '.join(map(str, searched))}" if len(searched) > 1 else "the default")
        return f"lags {lags} (a past of {lags + 1} ticks, {how}), future {future or lags + 1}, {c.components} states"

    return Kind(choices, fit_one, lambda model: {"lags": model.lags - 1, "states": model.states}, describe)


class CvaFamily(ModelFamily):
    """Canonical variate analysis of a dynamic process: one or more models, each over its tags.

    As with ``pca``, the config loader passes ``{"model", "file", "name"}`` and the model
    options for every tag of every ``[[models]]`` entry of kind "cva"; one alarm per model,
    level T2, SPE or T2+SPE, anchored on the model's first tag and naming its top tags.
    """

    name: ClassVar[str] = "cva"
    words: ClassVar[str] = "dynamic multivariate"
    tag_key: ClassVar[str | None] = None
    model_options: ClassVar[Mapping[str, Option]] = {
        "lags": Option(None, ">= 0, the past window: the past vector holds each tag at t, t-1 … t-lags (as `lags` "
                             "gives PCA its lagged inputs); not given: chosen by `plantwatch train` among "
                             f"{', '.join(map(str, LAGS))} on the hold-out ({DEFAULT_LAGS} with `auto = false`)"),
        "past": Option(None, "the former name of the past window, in ticks: `past = lags + 1`; give `lags` or `past`, "
                             "not both"),
        "future": Option(0, "ticks in the future vector the past is correlated with (0 = `lags + 1`; `plantwatch train`)"),
        "states": Option(0, "canonical variates kept as states (0 = those with canonical correlation >= 0.5; "
                            "`plantwatch train`)"),
        "target_far": Option(0.01, "in (0, 0.5), the share of training ticks over the T² or SPE limit "
                                   "(limits set empirically by `plantwatch train`)"),
        "on_delay_s": Option(None, ">= 0; T²/SPE must stay over its limit this long before the alarm is raised "
                                   "(not given: as `plantwatch train` chose)"),
        "off_delay_s": Option(None, ">= 0; T²/SPE must stay under its limit this long before the alarm clears "
                                    "(not given: as `plantwatch train` chose)"),
        "top": Option(3, "how many top contributing tags the alarm names"),
        "t2_factor": Option(1.0, "> 0, multiplier of the fitted T² limit"),
        "spe_factor": Option(1.0, "> 0, multiplier of the fitted SPE (Q) limit"),
        "refit": Option("none", "`none` or `moving-window`: fit again from the last `refit_window` accepted "
                                "ticks, never from ticks in or after an alarm"),
        "refit_window": Option(0, "ticks the moving window holds (0 = the rows the model was trained on, at most 10,000)"),
        "refit_every": Option(0, "accepted ticks between fits (0 = a tenth of `refit_window`)"),
        "refit_hold": Option(0, "ticks after the last tick in alarm before ticks are accepted again "
                                "(0 = `lags + 1` + `future`)"),
    }
    options: ClassVar[Mapping[str, Option]] = {
        "model": Option(None, "the model's name", required=True),
        "file": Option(None, "the model file", required=True),
        "name": Option(None, "the tag's name", required=True),
        **model_options,
    }
    levels: ClassVar[tuple[str, ...]] = tuple(CVA_LEVELS.values())
    alarm_code: ClassVar[str] = "8"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        rest = {k: v for k, v in params.items() if k not in ("model", "file", "name")}
        for key in ("model", "file", "name"):
            if not isinstance(params.get(key), str) or not params[key]:
                problems.append((key, "required (a non-empty string)"))
        return problems + cls.check_model(rest)

    @classmethod
    def check_model(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_model(options)
        number = {k: v for k, v in options.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        least = {"lags": 0, "past": 1, "future": 0, "states": 0, "top": 1, "refit_window": 0, "refit_every": 0, "refit_hold": 0}
        for key, low in least.items():
            v = number.get(key)
            if v is not None and (v != int(v) or v < low):
                problems.append((key, f"must be a whole number >= {low}, not {v!r}"))
        if options.get("lags") is not None and options.get("past") is not None:
            problems.append(("past", f"is the former name of the past window (past = lags + 1): give lags alone, "
                                     f"not lags = {options['lags']!r} and past = {options['past']!r}"))
        if "target_far" in number and not 0 < number["target_far"] < 0.5:
            problems.append(("target_far", f"must be in (0, 0.5), not {number['target_far']}"))
        for key in ("on_delay_s", "off_delay_s"):
            if number.get(key, 0) < 0:
                problems.append((key, f"must be >= 0, not {number[key]!r}"))
        for key in ("t2_factor", "spe_factor"):
            if number.get(key, 1) <= 0:
                problems.append((key, f"must be > 0, not {number[key]!r}"))
        if "refit" in options and options["refit"] not in REFIT:
            problems.append(("refit", f"must be one of {', '.join(REFIT)}, not {options['refit']!r}"))
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        self.monitors: list[_Monitor] = []
        for file, tags in model_tags(self.params).items():
            by_name = {self.params[t]["name"]: t for t in tags}
            model = CvaModel.load(file)
            if sorted(model.names) != sorted(by_name):
                raise CvaModelError(f"{file}: fitted for tags {list(model.names)}, but the config lists {list(by_name)}")
            lags = configured_lags(self.params[tags[0]])
            if lags is not None and model.lags != lags + 1:
                raise CvaModelError(f"{file}: fitted with lags {model.lags - 1}, but the config says lags {lags}: "
                                    "fit it again with `plantwatch train`")
            self.monitors.append(_Monitor(n_tags, model, [by_name[n] for n in model.names], self.params[tags[0]]))

    @classmethod
    def for_model(cls, n_tags: int, model: CvaModel, tags: Sequence[int], **params: Any) -> CvaFamily:
        """A family watching one in-memory model over the given tag indices (in model order)."""
        fam = cls.__new__(cls)
        Family.__init__(fam, n_tags, {})
        fam.monitors = [_Monitor(n_tags, model, tags, {**cls.defaults, "model": "cva", **params})]
        return fam

    @classmethod
    def train(cls, data: Any, options: Mapping[str, Any], file: str) -> list[str]:
        """Fit from ``data`` (a detectors.calibrate.Training: the tags' raw columns; rows with an
        empty cell are no tick) through the hold-out calibration PCA has (detectors.calibrate):
        the past window (``lags``) and the on/off delays the config leaves open chosen on the
        hold-out with synthetic faults, the limits set empirically at ``target_far``."""
        from detectors.calibrate import calibrate
        from detectors.inputs import InputSpec

        lags = configured_lags(options)
        least = lags if lags is not None else min(LAGS) if data.auto else DEFAULT_LAGS
        m, n = len(data.names), int(np.isfinite(data.columns).all(axis=1).sum())
        need = int(np.ceil(min_rows(m, least + 1, int(options["future"]) or least + 1) / (1 - data.holdout)))
        if n < need:
            raise ValueError(f"{n} complete rows are too few to train {m} tags with lags {least}: need at least "
                             f"{need} (the first {1 - data.holdout:.0%} of them fit the model, the rest calibrate it)")
        tr = replace(data, spec=InputSpec(data.names), on_delay_s=options["on_delay_s"],
                     off_delay_s=options["off_delay_s"], kind=calibration(options))
        fitted, _, lines = calibrate(tr)
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        fitted.save(file)
        kept = " ".join(f"{c:.3f}" for c in fitted.correlations[: fitted.states])
        rest = " ".join(f"{c:.3f}" for c in fitted.correlations[fitted.states: fitted.states + 3])
        return [*lines, f"  canonical correlations of the states {kept} | next {rest or 'none'}"]

    @classmethod
    def statistics(cls, X: np.ndarray, ts: np.ndarray, names: list[str], options: Mapping[str, Any],
                   file: str) -> list[tuple[str, np.ndarray, float]]:
        """T² and SPE (Q) of the rows under the model as trained (a moving-window re-fit is not
        followed here), NaN for the first rows that have no full past yet."""
        model = CvaModel.load(file)
        t2, q = model.score(X)
        pad = np.full(len(X) - len(t2), np.nan)
        return [("T²", np.r_[pad, t2], model.t2_limit * options.get("t2_factor", 1.0)),
                ("SPE", np.r_[pad, q], model.q_limit * options.get("spe_factor", 1.0))]
