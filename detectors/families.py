"""The built-in detector families: parameter specs and validation in Python, state and loops in
the Cython kernels of ``detectors._kernels``.

Every family here follows the same shape: ``check`` validates one tag's table once at config
load, ``__init__`` packs the resolved parameters of all watched tags into per-slot arrays, and
``update`` makes one kernel call per batch and turns the kernel's few events into
``ConditionChange`` objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors import _kernels
from detectors.base import ConditionChange, Option
from detectors.kernel import KernelFamily, column

#: kernel level code -> level name for the limit family
LIMIT_LEVELS = {2: "HH", 1: "H", -1: "L", -2: "LL"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class LimitFamily(KernelFamily):
    """Absolute limits HH/H/L/LL on one tag, as one alarm whose level changes.

    A high level is entered when value >= limit and held while value > limit - deadband (low
    mirrored); the deadband applies only on the way back. The level from limits-with-deadband
    then passes an on-delay (towards a more severe level or into alarm) and an off-delay
    (towards a less severe level or normal); a pending change's timer restarts when the raw
    level changes before the delay expires. NaN values and BAD/COMM_FAIL samples are skipped.
    """

    name: ClassVar[str] = "limit"
    tag_key: ClassVar[str | None] = "alarms"
    options: ClassVar[Mapping[str, Option]] = {
        "hh": Option(None, "high-high limit; those given must satisfy hh > h > l > ll"),
        "h": Option(None, "high limit"),
        "l": Option(None, "low limit"),
        "ll": Option(None, "low-low limit"),
        "deadband": Option(0.0, ">= 0; applied only on the way back: a high alarm holds while value > limit - deadband"),
        "on_delay_s": Option(0.0, ">= 0; the condition must persist this long before the alarm (or a more severe level) is raised"),
        "off_delay_s": Option(0.0, ">= 0; the return must persist this long before the alarm clears (or de-escalates)"),
    }
    levels: ClassVar[tuple[str, ...]] = tuple(LIMIT_LEVELS.values())

    @classmethod
    def value_limits(cls, params: Mapping[str, Any]) -> dict[str, float]:
        return {level: float(params[level.lower()]) for level in cls.levels if _number(params.get(level.lower()))}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        given = [(k, params[k]) for k in ("hh", "h", "l", "ll") if _number(params.get(k))]
        for (upper, hi), (lower, lo) in zip(given, given[1:], strict=False):
            if not hi > lo:
                problems.append((upper, f"must be above {lower} ({float(lo)})"))
        for key in ("deadband", "on_delay_s", "off_delay_s"):
            if _number(params.get(key)) and params[key] < 0:
                problems.append((key, f"must be >= 0, not {params[key]!r}"))
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self.kernel = _kernels.LimitKernel(
            self.slot_of_tag,
            column(p, "hh"),
            column(p, "h"),
            column(p, "l"),
            column(p, "ll"),
            column(p, "deadband"),
            column(p, "on_delay_s"),
            column(p, "off_delay_s"),
        )
        self._limits = {2: column(p, "hh"), 1: column(p, "h"), -1: column(p, "l"), -2: column(p, "ll")}

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        slot = int(self.slot_of_tag[tag])
        level = new if new else prev
        context = {"previous": LIMIT_LEVELS.get(prev, "normal")}
        return ConditionChange(
            tag=tag,
            kind=self.name,
            level=LIMIT_LEVELS[level],
            active=new != 0,
            value=value,
            limit=float(self._limits[level][slot]),
            ts=ts,
            context=context,
        )


def _require_positive(params: Mapping[str, Any], keys: tuple[str, ...], problems: list, strict: bool) -> None:
    for key in keys:
        v = params.get(key)
        if _number(v) and (v <= 0 if strict else v < 0):
            problems.append((key, f"must be {'>' if strict else '>='} 0, not {v!r}"))


def _require_int(params: Mapping[str, Any], key: str, minimum: int, problems: list) -> None:
    v = params.get(key)
    if _number(v) and (v != int(v) or v < minimum):
        problems.append((key, f"must be a whole number >= {minimum}, not {v!r}"))


def _delays(params: Mapping[str, Any], problems: list) -> None:
    _require_positive(params, ("on_delay_s", "off_delay_s"), problems, strict=False)


#: kernel level code -> level name for families with a rising and a falling side
SIDES = {1: "H", -1: "L"}


class RocFamily(KernelFamily):
    """Rate of change: alarm while the value moves faster than ``max_per_s`` (either way).

    The rate is measured from an anchor sample to the first usable sample at least
    ``window_s`` later, then the anchor moves there, so noise averages over the window and a
    spike of one sample cannot trip it unless it really moved that far. The level (H rising,
    L falling) holds until the next measurement; on/off delays as for limits.
    """

    name: ClassVar[str] = "roc"
    tag_key: ClassVar[str | None] = "roc"
    options: ClassVar[Mapping[str, Option]] = {
        "max_per_s": Option(None, "> 0, engineering units per second, either direction", required=True),
        "window_s": Option(1.0, ">= 0; the rate is measured from an anchor sample to the first usable sample at least this later"),
        "on_delay_s": Option(0.0, ">= 0, as for limits"),
        "off_delay_s": Option(0.0, ">= 0, as for limits"),
    }
    levels: ClassVar[tuple[str, ...]] = ("H", "L")
    alarm_code: ClassVar[str] = "5"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        if "max_per_s" not in params:
            problems.append(("max_per_s", "required (units per second)"))
        _require_positive(params, ("max_per_s",), problems, strict=True)
        _require_positive(params, ("window_s",), problems, strict=False)
        _delays(params, problems)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self._max = column(p, "max_per_s")
        self.kernel = _kernels.RocKernel(
            self.slot_of_tag, self._max, column(p, "window_s"), column(p, "on_delay_s"), column(p, "off_delay_s")
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        side = new or prev
        limit = float(self._max[self.slot_of_tag[tag]])
        return ConditionChange(
            tag, self.name, SIDES[side], new != 0, value, limit if side > 0 else -limit, ts,
            {"rate_per_s": None if math.isnan(detail) else detail},
        )


class _ControlChart(KernelFamily):
    """Shared checks of the statistical charts that learn mean and sigma during warm-up."""

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        _require_int(params, "warmup", 2, problems)
        _require_positive(params, ("sigma",), problems, strict=True)
        _require_positive(params, ("min_sigma",), problems, strict=False)
        if ("mean" in params) != ("sigma" in params):
            missing = "sigma" if "mean" in params else "mean"
            problems.append((missing, "required when " + ("mean" if missing == "sigma" else "sigma") + " is given"))
        return problems

    def _stats(self, p: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return column(p, "mean"), column(p, "sigma")


class EwmaFamily(_ControlChart):
    """EWMA control chart: z = lambda_*x + (1-lambda_)*z, alarm while z leaves
    mean +- L*sigma*sqrt(lambda_/(2-lambda_)).

    mean and sigma come from the params, or are estimated from the first ``warmup`` usable
    samples, during which the chart stays silent. Small lambda_ finds small sustained shifts;
    lambda_ = 1 is a Shewhart chart.
    """

    on_residual: ClassVar[bool] = True
    name: ClassVar[str] = "ewma"
    options: ClassVar[Mapping[str, Option]] = {
        "lambda_": Option(0.2, "in (0, 1]; small finds small sustained shifts, 1 is a Shewhart chart"),
        "L": Option(13.5, "> 0, width of the limits in sigmas of the EWMA (13.5 with lambda_ 0.2: 4.5 sigmas of the "
                          "signal, untrained; `plantwatch train` calibrates it)"),
        "warmup": Option(3600, "whole number >= 2: usable samples that estimate mean and sigma, silent meanwhile"),
        "mean": Option(None, "give mean and sigma to skip the warm-up"),
        "sigma": Option(None, "> 0, with mean"),
        "min_sigma": Option(0.0, ">= 0, floor for sigma"),
        "on_delay_s": Option(60.0, ">= 0, as for limits"),
        "off_delay_s": Option(1800.0, ">= 0, as for limits; a long off-delay keeps a wandering signal one alarm"),
    }
    levels: ClassVar[tuple[str, ...]] = ("H", "L")
    alarm_code: ClassVar[str] = "6"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        lam = params.get("lambda_")
        if _number(lam) and not 0 < lam <= 1:
            problems.append(("lambda_", f"must be in (0, 1], not {lam!r}"))
        _require_positive(params, ("L",), problems, strict=True)
        _delays(params, problems)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self.kernel = _kernels.EwmaKernel(
            self.slot_of_tag,
            column(p, "lambda_"),
            column(p, "L"),
            column(p, "min_sigma"),
            np.array([int(x["warmup"]) for x in p], dtype=np.int64),
            column(p, "on_delay_s"),
            column(p, "off_delay_s"),
            *self._stats(p),
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        s = self.slot_of_tag[tag]
        side = new or prev
        limit = self.kernel.ucl[s] if side > 0 else self.kernel.lcl[s]
        return ConditionChange(
            tag, self.name, SIDES[side], new != 0, value, float(limit), ts,
            {"ewma": detail, "mean": float(self.kernel.mean[s])},
        )


class CusumFamily(_ControlChart):
    """Two-sided CUSUM (Page) on samples standardised by mean and sigma.

    S+ = max(0, S+ + x - k), S- = max(0, S- - x - k) with k and h in sigmas; crossing h raises
    the alarm (H up, L down) and restarts both sums. A persistent shift therefore re-crosses
    every few samples; the alarm clears after ``off_delay_s`` without a new crossing.
    """

    on_residual: ClassVar[bool] = True
    name: ClassVar[str] = "cusum"
    options: ClassVar[Mapping[str, Option]] = {
        "k": Option(3.0, ">= 0, allowance in sigmas (half the shift to detect fastest; untrained 3, `plantwatch "
                         "train` calibrates it)"),
        "h": Option(30.0, "> 0, decision interval in sigmas"),
        "warmup": Option(3600, "as for ewma"),
        "mean": Option(None, "as for ewma"),
        "sigma": Option(None, "as for ewma"),
        "min_sigma": Option(0.0, "as for ewma"),
        "off_delay_s": Option(1800.0, ">= 0, how long the alarm holds after the last crossing"),
    }
    levels: ClassVar[tuple[str, ...]] = ("H", "L")
    alarm_code: ClassVar[str] = "6"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        _require_positive(params, ("k", "off_delay_s"), problems, strict=False)
        _require_positive(params, ("h",), problems, strict=True)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self._h = column(p, "h")
        self.kernel = _kernels.CusumKernel(
            self.slot_of_tag,
            column(p, "k"),
            self._h,
            column(p, "min_sigma"),
            np.array([int(x["warmup"]) for x in p], dtype=np.int64),
            column(p, "off_delay_s"),
            *self._stats(p),
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        s = self.slot_of_tag[tag]
        side = new or prev
        inv = float(self.kernel.inv_sigma[s])
        return ConditionChange(
            tag, self.name, SIDES[side], new != 0, value, float(self._h[s]) * side, ts,
            {"sum": detail, "mean": float(self.kernel.mean[s]), "sigma": 1.0 / inv},
        )


class RobustFamily(KernelFamily):
    """Hampel identifier: robust z = (x - median) / (1.4826 * MAD) of the previous ``window``
    usable samples; alarm while |z| > ``threshold``. Silent until the window is full.

    Median and MAD ignore the outliers they are looking for, so one spike neither masks the
    next nor inflates the scale. ``min_mad`` floors the scale for quantised, nearly constant
    signals (0 means any move off a constant window alarms).
    """

    on_residual: ClassVar[bool] = True
    name: ClassVar[str] = "robust"
    options: ClassVar[Mapping[str, Option]] = {
        "window": Option(121, "whole number >= 3, usable samples in the rolling window"),
        "threshold": Option(6.0, "> 0, in robust sigmas"),
        "min_mad": Option(0.0, ">= 0, floor for the scale; a window with MAD 0 uses its resolution (smallest "
                                "step between its values); with 0 any move off a constant window alarms"),
        "on_delay_s": Option(60.0, ">= 0, as for limits"),
        "off_delay_s": Option(1800.0, ">= 0, as for limits"),
    }
    levels: ClassVar[tuple[str, ...]] = ("H", "L")
    alarm_code: ClassVar[str] = "6"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        _require_int(params, "window", 3, problems)
        _require_positive(params, ("threshold",), problems, strict=True)
        _require_positive(params, ("min_mad",), problems, strict=False)
        _delays(params, problems)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self._thr = column(p, "threshold")
        self.kernel = _kernels.RobustKernel(
            self.slot_of_tag,
            np.array([int(x["window"]) for x in p], dtype=np.int64),
            self._thr,
            column(p, "min_mad"),
            column(p, "on_delay_s"),
            column(p, "off_delay_s"),
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        side = new or prev
        return ConditionChange(
            tag, self.name, SIDES[side], new != 0, value, float(self._thr[self.slot_of_tag[tag]]) * side, ts,
            {"z": detail},
        )


class FlatlineFamily(KernelFamily):
    """Frozen signal: alarm once the value stayed within ``eps`` of where the flat stretch
    began for ``duration_s``; the first move beyond ``eps`` clears it (after ``off_delay_s``).

    A transmitter stuck at its last value, or a PLC that stopped updating a register while
    its quality stays GOOD, looks exactly like this.
    """

    name: ClassVar[str] = "flatline"
    options: ClassVar[Mapping[str, Option]] = {
        "eps": Option(0.0, '>= 0, change that still counts as "flat"'),
        "duration_s": Option(3600.0, "> 0, how long the value must stay flat"),
        "off_delay_s": Option(0.0, ">= 0, as for limits"),
    }
    levels: ClassVar[tuple[str, ...]] = ("FLAT",)
    alarm_code: ClassVar[str] = "7"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        _require_positive(params, ("eps", "off_delay_s"), problems, strict=False)
        _require_positive(params, ("duration_s",), problems, strict=True)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self._dur = column(p, "duration_s")
        self.kernel = _kernels.FlatlineKernel(
            self.slot_of_tag, column(p, "eps"), self._dur, np.zeros(len(p)), column(p, "off_delay_s")
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        return ConditionChange(
            tag, self.name, "FLAT", new != 0, value, float(self._dur[self.slot_of_tag[tag]]), ts,
            {"flat_s": detail},
        )


#: sensor family level codes
SENSOR_LEVELS = {1: "H", -1: "L", 2: "BAD"}


class SensorFamily(KernelFamily):
    """The sample itself is implausible: above (H) or below (L) the tag's physical ``range``,
    or of BAD quality / NaN inside it (BAD). COMM_FAIL samples belong to the agent's ``comm``
    alarm and are skipped.

    Configured from the tag's ``range = [lo, hi]`` (``default_params``): every tag is watched,
    one without a range with ``{}``, so that BAD quality raises a sensor alarm for it too.
    """

    name: ClassVar[str] = "sensor"
    tag_key: ClassVar[str | None] = "range"
    options: ClassVar[Mapping[str, Option]] = {
        "lo": Option(None, "physical low bound (unset: none)"),
        "hi": Option(None, "physical high bound (unset: none)"),
        "on_delay_s": Option(0.0, ">= 0, as for limits"),
        "off_delay_s": Option(0.0, ">= 0, as for limits"),
    }
    levels: ClassVar[tuple[str, ...]] = tuple(SENSOR_LEVELS.values())
    alarm_code: ClassVar[str] = "9"

    @classmethod
    def default_params(cls, tag: Mapping[str, Any]) -> Mapping[str, Any]:
        """Every tag is watched: its ``range`` (if any) bounds it, and BAD quality alarms."""
        rng = tag.get("range")
        return {"lo": rng[0], "hi": rng[1]} if rng else {}

    @staticmethod
    def params_from_range(value: Any) -> tuple[dict[str, Any] | None, str | None]:
        """A tag's ``range`` value as sensor params, or (None, message) when it is malformed."""
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_number(v) for v in value):
            return None, f"must be [lo, hi] with two finite numbers, not {value!r}"
        return {"lo": float(value[0]), "hi": float(value[1])}, None

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        lo, hi = params.get("lo"), params.get("hi")
        if _number(lo) and _number(hi) and not hi > lo:
            problems.append(("hi", f"must be above lo ({float(lo)})"))
        _delays(params, problems)
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        lo, hi = column(p, "lo"), column(p, "hi")
        # an unset bound never trips: NaN would make the comparisons false too, but infinities
        # keep the kernel's intent readable
        self._lo = np.where(np.isnan(lo), -np.inf, lo)
        self._hi = np.where(np.isnan(hi), np.inf, hi)
        self.kernel = _kernels.SensorKernel(
            self.slot_of_tag, self._lo, self._hi, column(p, "on_delay_s"), column(p, "off_delay_s")
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        s = self.slot_of_tag[tag]
        level = new or prev
        limit = {1: self._hi[s], -1: self._lo[s]}.get(level, math.nan)
        return ConditionChange(
            tag, self.name, SENSOR_LEVELS[level], new != 0, value, float(limit), ts,
            {"previous": SENSOR_LEVELS.get(prev, "normal")},
        )

    # an implausible sample is the cause of the other families' alarms on it: judge it first
    order: ClassVar[int] = -1
