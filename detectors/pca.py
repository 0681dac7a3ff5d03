"""Multivariate monitoring with PCA: the family that judges live ticks by Hotelling's T^2 and
SPE (Q) of the model (detectors/pca_model.py: fit, file, limits) with per-variable contributions
naming the tags that moved, and trains it (detectors/calibrate.py).

T^2 measures how unusual the operating point is inside the normal correlation structure; SPE
measures how far a tick leaves that structure (a broken correlation: a sensor drifting alone,
a valve no longer following its controller). Limits: T^2 from the F distribution, SPE from
Jackson and Mudholkar (1979).
"""


from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detectors import _pca
from detectors.base import ConditionChange, Family, Option, Statistic
from detectors.inputs import InputSpec, InputStage
from detectors.modelfile import ModelFamily, model_tags
from detectors.pca_model import PCA_LEVELS, PcaModel, PcaModelError, fit
from detectors.recentre import Recentring

REFIT = ("none", "recursive")


class _Monitor:
    """One model watching its tags: input rows (detectors.inputs), statistics, debounce."""

    def __init__(self, n_tags: int, model: PcaModel, tags: Sequence[int], params: Mapping[str, Any]):
        if len(tags) != len(model.names):
            raise ValueError(f"model has {len(model.names)} tags, {len(tags)} tag indices given")
        self.model = model
        self.tags = np.asarray(tags, dtype=np.int64)
        self.stage = InputStage(n_tags, model.spec, [int(t) for t in tags])
        # each input column's tag, by position in self.tags: contributions are summed per tag
        position = {name: i for i, name in enumerate(model.names)}
        self.source = np.array([position[s] for s in model.spec.sources()], dtype=np.intp)
        on = params.get("on_delay_s")
        off = params.get("off_delay_s")
        self.debounce = _pca.SeriesDebounce(model.on_delay_s if on is None else float(on),
                                            model.off_delay_s if off is None else float(off))
        self.restart = (model.on_delay_s if on is None else float(on), model.spec.warmup_s, model.spec.lags)
        self.top = int(params["top"])
        self.name = str(params["model"])
        self.recent: list[Statistic] = []  # T2 and SPE of the last update (for trends)
        self.t2_limit = model.t2_limit * float(params["t2_factor"])
        self.spe_limit = model.spe_limit * float(params["spe_factor"])
        self.centre = recentring(model, params)

    def update(self, tag, value, ts, quality, kind: str) -> list[ConditionChange]:
        X, times = self.stage.rows(tag, value, ts, quality)
        if times.shape[0] == 0:
            self.recent = []
            return []
        times = np.ascontiguousarray(times)
        if self.centre is not None:
            Z, t2, spe, pos, prev, new = self.centre.judge(self.model.statistics, X, times, self.debounce,
                                                           self.t2_limit, self.spe_limit)
        else:
            Z = self.model.autoscale(X)
            t2, spe = self.model.statistics(Z)
            raw = ((t2 > self.t2_limit).astype(np.int8) + 2 * (spe > self.spe_limit).astype(np.int8))
            pos, prev, new = self.debounce.run(raw, times)
        self.recent = [Statistic(self.name, "T2", times, t2, self.t2_limit),
                       Statistic(self.name, "SPE", times, spe, self.spe_limit)]
        return [self._change(kind, Z[j], float(times[j]), int(a), int(b), t2[j], spe[j])
                for j, a, b in zip(pos.tolist(), prev.tolist(), new.tolist(), strict=True)]

    def _change(self, kind, z, when, prev, new, t2, spe) -> ConditionChange:
        level = new or prev
        c_t2, c_spe = self.model.contributions(z)
        # a tag's contribution: the sum over its inputs (level, derived inputs, lags)
        contrib = np.bincount(self.source, weights=c_spe if level >= 2 else c_t2, minlength=len(self.tags))
        order = np.argsort(-contrib)[: self.top]
        top = [int(self.tags[o]) for o in order]
        stat, limit = (spe, self.spe_limit) if level >= 2 else (t2, self.t2_limit)
        # the alarm belongs to the model, not to whichever tag contributes most at the moment:
        # it is anchored on the model's first tag and names the model and its top tags
        return ConditionChange(
            tag=int(self.tags[0]),
            kind=kind,
            level=PCA_LEVELS[level],
            active=new != 0,
            value=float(stat),
            limit=float(limit),
            ts=when,
            context={
                "model": self.name,
                "t2": float(t2),
                "spe": float(spe),
                "t2_limit": self.t2_limit,
                "spe_limit": self.spe_limit,
                "top_tags": top,
                "contributions": {int(self.tags[o]): float(contrib[o]) for o in order},
                "model_tags": [int(t) for t in self.tags],
            },
        )


def recentring(model: PcaModel, params: Mapping[str, Any]) -> Recentring | None:
    """The moving centre of ``refit = "recursive"`` (detectors/recentre.py), None for "none"."""
    if params.get("refit", "recursive") != "recursive":
        return None
    return Recentring(model.mean, model.scale, float(params.get("refit_memory") or model.n_train))


class PcaFamily(ModelFamily):
    """Online PCA monitoring of one or more models, each over its own tags.

    Per tag, the config loader passes ``{"model": NAME, "file": PATH, "name": TAG_NAME}`` for
    every tag of every ``[[models]]`` entry of kind "pca", with the ``model_options`` of the
    model table (``on_delay_s``, ``off_delay_s``, ``top``, ``t2_factor``, ``spe_factor``, ...). The
    family loads each file once, checks it was fitted for exactly those tags, and judges each
    tick: level T2, SPE or T2+SPE while the statistic is over its limit. The change's ``tag``
    is the model's first tag (one alarm per model); ``context["model"]`` names the model and
    ``context["top_tags"]`` lists the top contributors by index.
    """

    name: ClassVar[str] = "pca"
    tag_key: ClassVar[str | None] = None
    model_options: ClassVar[Mapping[str, Option]] = {
        "confidence": Option(0.99, "in [0.5, 1), confidence of the fitted T² and SPE limits (`plantwatch train`)"),
        "variance": Option(0.9, "in (0, 1], explained variance that chooses the number of components"),
        "components": Option(0, "a fixed number of components (0 = chosen by variance)"),
        "on_delay_s": Option(None, ">= 0; T²/SPE must stay over its limit this long before the alarm is raised "
                                   "(not given: as `plantwatch train` chose, 0 without calibration)"),
        "off_delay_s": Option(None, ">= 0; T²/SPE must stay under its limit this long before the alarm clears "
                                    "(not given: as `plantwatch train` chose)"),
        "top": Option(3, "how many top contributing tags the alarm names"),
        "refit": Option("recursive", "`recursive` or `none`: with `recursive` the model's centre follows a slowly "
                                     "drifting plant, moved by each input row judged normal (both statistics under "
                                     "their limits, no alarm), never while in alarm (docs/DETECTION.md)"),
        "refit_memory": Option(0, ">= 0, rows the moving centre remembers (0 = the rows the model was trained on)"),
        "t2_factor": Option(1.0, "> 0, multiplier of the fitted T² limit"),
        "spe_factor": Option(1.0, "> 0, multiplier of the fitted SPE limit"),
    }
    #: per tag the loader passes the model's name, file and the tag's name with the model options
    options: ClassVar[Mapping[str, Option]] = {
        "model": Option(None, "the model's name", required=True),
        "file": Option(None, "the model file", required=True),
        "name": Option(None, "the tag's name", required=True),
        **model_options,
    }
    derived_inputs: ClassVar[bool] = True
    levels: ClassVar[tuple[str, ...]] = tuple(PCA_LEVELS.values())
    default_model: ClassVar[bool] = True
    alarm_code: ClassVar[str] = "8"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        numeric = {k: v for k, v in params.items() if k not in ("model", "file", "name")}
        problems += super().check(numeric)
        for key in ("model", "file", "name"):
            if not isinstance(params.get(key), str) or not params[key]:
                problems.append((key, "required (a non-empty string)"))
        return problems + cls._ranges(numeric)

    @classmethod
    def check_model(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        return super().check_model(options) + cls._ranges(options)

    @classmethod
    def _ranges(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        number = {k: v for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "confidence" in number and not 0.5 <= number["confidence"] < 1:
            problems.append(("confidence", f"must be in [0.5, 1), not {number['confidence']}"))
        if "variance" in number and not 0 < number["variance"] <= 1:
            problems.append(("variance", f"must be in (0, 1], not {number['variance']}"))
        c = number.get("components")
        if c is not None and (c != int(c) or c < 0):
            problems.append(("components", f"must be a whole number >= 0 (0 = chosen by variance), not {c!r}"))
        for key in ("on_delay_s", "off_delay_s"):
            v = params.get(key)
            if isinstance(v, (int, float)) and v < 0:
                problems.append((key, f"must be >= 0, not {v!r}"))
        for key in ("t2_factor", "spe_factor"):
            v = params.get(key)
            if isinstance(v, (int, float)) and v <= 0:
                problems.append((key, f"must be > 0, not {v!r}"))
        if "refit" in params and params["refit"] not in REFIT:
            problems.append(("refit", f"must be one of {', '.join(REFIT)}, not {params['refit']!r}"))
        memory = number.get("refit_memory")
        if memory is not None and memory < 0:
            problems.append(("refit_memory", f"must be >= 0 (0 = the training rows), not {memory!r}"))
        top = params.get("top")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
            problems.append(("top", f"must be a whole number >= 1, not {top!r}"))
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        self.monitors: list[_Monitor] = []
        for file, tags in model_tags(self.params).items():
            by_name = {self.params[t]["name"]: t for t in tags}
            model = PcaModel.load(file)
            missing = [n for n in model.names if n not in by_name]
            extra = [n for n in by_name if n not in model.names]
            if missing or extra:
                raise PcaModelError(
                    f"{file}: fitted for tags {list(model.names)}, but the config lists {list(by_name)}"
                )
            fixed = self.params[tags[0]].get("inputs")
            if fixed and not InputSpec.from_json(fixed).same_inputs(model.spec):
                raise PcaModelError(f"{file}: fitted with inputs {model.spec.describe()}, but the config gives "
                                    f"{InputSpec.from_json(fixed).describe()}: fit it again with `plantwatch train`")
            self.monitors.append(_Monitor(n_tags, model, [by_name[n] for n in model.names], self.params[tags[0]]))

    @classmethod
    def for_model(cls, n_tags: int, model: PcaModel, tags: Sequence[int], **params: Any) -> PcaFamily:
        """A family watching one in-memory model over the given tag indices (in model order)."""
        fam = cls.__new__(cls)
        Family.__init__(fam, n_tags, {})
        fam.monitors = [_Monitor(n_tags, model, tags, {**cls.defaults, **params})]
        return fam

    @classmethod
    def train(cls, data: Any, options: Mapping[str, Any], file: str) -> list[str]:
        """Fit from ``data`` (a detectors.calibrate.Training: raw columns, times and what the config
        fixes) with the model's ``confidence``, ``variance``, ``components`` and delays: with
        ``target_far`` > 0 calibrated (detectors.calibrate), else the distribution limits."""
        from detectors.calibrate import calibrate
        from detectors.inputs import table_rows

        tr = replace(data, components=int(options["components"]), confidence=float(options["confidence"]),
                      variance=float(options["variance"]), on_delay_s=options["on_delay_s"],
                      off_delay_s=options["off_delay_s"])
        if tr.target_far > 0:
            fitted, _, lines = calibrate(tr)
        else:
            spec = tr.spec if tr.spec is not None else InputSpec(tr.names)
            X, _ = table_rows(spec, tr.columns, tr.ts)
            fitted = fit(X, tr.names, confidence=tr.confidence, variance=tr.variance,
                         n_components=tr.components or None, inputs=spec)
            fitted = replace(fitted, on_delay_s=float(tr.on_delay_s or 0.0), off_delay_s=float(tr.off_delay_s or 0.0))
            lines = [f"  inputs: {spec.describe()} ({len(spec.columns())} columns), components {fitted.n_components}, "
                     f"T² limit {fitted.t2_limit:.4g}, SPE limit {fitted.spe_limit:.4g} at confidence {fitted.confidence}"]
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        fitted.save(file)
        return lines

    @classmethod
    def statistics(cls, X: np.ndarray, ts: np.ndarray, names: list[str], options: Mapping[str, Any],
                   file: str) -> list[tuple[str, np.ndarray, float]]:
        """T² and SPE of the rows against the limits the engine uses (fitted limit x factor), the
        model's inputs built from the rows as train and the engine build them; NaN where a row
        gives no input row (warm-up of the derived inputs and lags)."""
        from detectors.inputs import table_rows

        model = PcaModel.load(file, names)
        Z, at = table_rows(model.spec, np.asarray(X, dtype=np.float64), np.asarray(ts, dtype=np.float64))
        lt, ls = model.t2_limit * options.get("t2_factor", 1.0), model.spe_limit * options.get("spe_factor", 1.0)
        centre = recentring(model, options)
        if centre is None:
            t2, spe = model.score(Z)
        else:  # against the moving centre, as the engine judges them
            on, off = options.get("on_delay_s"), options.get("off_delay_s")
            debounce = _pca.SeriesDebounce(model.on_delay_s if on is None else float(on),
                                           model.off_delay_s if off is None else float(off))
            _, t2, spe, *_ = centre.judge(model.statistics, Z, np.ascontiguousarray(at), debounce, lt, ls)
        rows = np.searchsorted(ts, at)
        out = []
        for name, values, limit in (("T²", t2, lt), ("SPE", spe, ls)):
            full = np.full(len(X), np.nan)
            full[rows] = values
            out.append((name, full, limit))
        return out
