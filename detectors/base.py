"""The detector-family contract.

A family (limits, rate of change, EWMA, ...) holds its state as struct-of-arrays indexed by tag
and judges a whole SampleBatch in one kernel call. Parameters are validated once, in Python,
when the family is built from config; kernels receive typed contiguous arrays only.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

# Quality codes, identical to drivers.base.Quality (detectors may not import drivers).
GOOD, UNCERTAIN, BAD, COMM_FAIL = 0, 1, 2, 3


class ModelError(Exception):
    """A model file a family needs is missing, corrupt, of another version, or for other tags.
    The message names the file; the agent reports it as a config problem."""


@dataclass(frozen=True)
class ConditionChange:
    """A detector's condition for one tag changed: it became active, changed level, or cleared.

    ``level`` is the new level when active (HH, H, L, LL, or the family's own), and the level
    that cleared when ``active`` is False. ``limit`` is the threshold concerned (NaN if none).

    ``context`` is the family's own detail. A multivariate model's change names its ``model``
    (one alarm per model, not per tag) and may give tag indices under ``top_tags`` and
    ``model_tags`` (lists) and ``contributions`` (a dict keyed by index): the alarm manager
    turns those into tag names for the platform.
    """

    tag: int
    kind: str
    level: str
    active: bool
    value: float
    limit: float
    ts: float
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Statistic:
    """A monitoring statistic a family computed over its last batch, one value per tick: the
    ``source`` it belongs to (a model's name), the statistic's ``name`` (e.g. ``T2``, ``SPE``),
    the ticks' times and values, and the ``limit`` the family judged them against."""

    source: str
    name: str
    ts: np.ndarray
    value: np.ndarray
    limit: float


@dataclass(frozen=True)
class Option:
    """One parameter a family accepts: its default (None: unset, or required when ``required``)
    and the one-line doc that docs/CONFIG.md shows for it."""

    default: Any = None
    doc: str = ""
    required: bool = False


class Family(ABC):
    """A detector family. Subclasses set the class attributes and implement ``update``."""

    #: the alarm ``kind`` this family raises, also its registry name
    name: ClassVar[str] = ""
    #: the [[tags]] key whose table configures this family for a tag (e.g. "alarms"), or None
    #: when the family is enabled by listing its name in a tag's ``detectors``
    tag_key: ClassVar[str | None] = None
    #: every accepted parameter with its default; None means "required / no default". Derived
    #: from ``options`` when a family declares those (a plugin may give either)
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: every accepted per-tag parameter: its default and a one-line doc
    options: ClassVar[Mapping[str, Option]] = {}
    #: the parameters of a ``[[models]]`` entry of this kind; a family declaring them is a
    #: multivariate model kind, configured by ``[[models]]`` rather than per tag
    model_options: ClassVar[Mapping[str, Option]] = {}
    #: a ``[[models]]`` kind that builds its inputs with detectors.inputs (rates, rolling means,
    #: lags of the config) and calibrates with detectors.calibrate
    derived_inputs: ClassVar[bool] = False
    #: the model kind of a ``[[models]]`` entry that names none (at most one family says so)
    default_model: ClassVar[bool] = False
    #: the levels this family raises (a tag's ``priority`` table may name them)
    levels: ClassVar[tuple[str, ...]] = ()
    #: this kind's default alarm type code in the provincial profile ("" = the level's code)
    alarm_code: ClassVar[str] = ""
    #: where the family runs in the engine, lowest first (ties by name): a family whose
    #: alarm explains the others' (an implausible sample) runs before them
    order: ClassVar[int] = 0
    #: the family judges deviations from normal: where ``plantwatch train`` learned a daily or
    #: weekly cycle for a tag, it sees the tag's values less that cycle (detectors/tune.py)
    on_residual: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "options" in cls.__dict__:
            cls.defaults = {k: o.default for k, o in cls.options.items()}
        elif "defaults" in cls.__dict__:
            cls.options = {k: Option(v) for k, v in cls.defaults.items()}

    @classmethod
    def default_params(cls, tag: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The parameters this family watches a tag with when the tag does not configure it,
        from the tag's core keys (``name``, ``unit``, ``range``, ...); None: not watched."""
        return None

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Validate one tag's parameters; return (path, message) for every problem, the path
        relative to the table checked.

        The base implementation rejects unknown keys and non-numeric values; families extend it
        with their own cross-checks (e.g. hh > h > l > ll).
        """
        return check_values(cls.defaults, params)

    @classmethod
    def check_model(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Validate one ``[[models]]`` entry's ``model_options`` as ``check`` does a tag's."""
        return check_values({k: o.default for k, o in cls.model_options.items()}, options)

    @classmethod
    def resolve(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the given parameters (after ``check`` found no problem)."""
        return {**cls.defaults, **params}

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        """``params`` maps tag index -> resolved parameters for every tag this family watches."""
        self.n_tags = n_tags
        # one dict per distinct table, shared by the tags that have it (100,000 tags with the
        # same ewma settings hold one dict and an int32 each); read-only, as every family treats it
        self.params: Mapping[int, Mapping[str, Any]] = TagTables(n_tags, params, self.resolve)

    @abstractmethod
    def update(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        """Judge one batch (int32 tag, float64 value, float64 ts, uint8 quality) in one kernel
        call; return only the tags whose condition changed."""

    @classmethod
    def value_limits(cls, params: Mapping[str, Any]) -> dict[str, float]:
        """Level -> the value of the tag at which this family raises it, for the limits a trend
        draws (a tag's parameters, resolved); none for a family that judges anything else than
        the value against a fixed threshold."""
        return {}

    def last_statistics(self) -> list[Statistic]:
        """The monitoring statistics of the last ``update`` (for trends), references to arrays
        the family computed anyway; the families without a statistic have none."""
        return []

    @classmethod
    def describe(cls, level: str, active: bool, value: float, limit: float,
                 context: Mapping[str, Any]) -> str | None:
        """The words of an alarm's message for this family, or None for the generic text
        (the tag's description, the level, the value and the limit)."""
        return None

    @classmethod
    def train(cls, data: Any, options: Mapping[str, Any], file: str) -> list[str]:
        """Fit a model of normal operation from ``data`` (a detectors.calibrate.Training: the raw
        columns of the model's tags, their times, the inputs, target false-alarm rate and hold-out
        the config gives; build the inputs with detectors.inputs), write it to ``file`` and return
        lines that describe it. Only families of ``[[models]]`` learn from data; the others have
        nothing to train."""
        raise NotImplementedError(f"the {cls.name} family has no model to train")


    @classmethod
    def statistics(cls, X: np.ndarray, ts: np.ndarray, names: list[str], options: Mapping[str, Any],
                   file: str) -> list[tuple[str, np.ndarray, float]]:
        """A model kind's monitoring statistics over rows ``X`` (the model's tags, at times ``ts``) as
        (name, values per row, limit),
        for reports; the families without a model have none."""
        return []


class TagTables(Mapping[int, dict[str, Any]]):
    """Tag index -> the resolved parameters a family watches the tag with, read-only: the
    distinct tables once and a table number per tag (an int32 array, -1 where the family does
    not watch the tag); tags with equal parameters get the same dict. Iterates in tag order."""

    __slots__ = ("_of", "_tables", "_tags")

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]],
                 resolve: Callable[[Mapping[str, Any]], dict[str, Any]] = dict):
        self._tables: list[dict[str, Any]] = []
        number: dict[int, int] = {}  # id of a dict (given, or resolved) -> its table number
        kept: list[Mapping[str, Any]] = []  # the given tables, alive while their ids are keys
        seen: dict[tuple, dict[str, Any]] = {}
        # the watched tags' indices as given (the config's own int objects, which every family's
        # list of its tags then shares, not an int each)
        self._tags: list[int] = []
        codes: list[int] = []
        for t, p in params.items():
            if operator.index(t) < 0:
                raise KeyError(t)
            k = number.get(id(p))
            if k is None:
                table = shared(resolve(p), seen)
                k = number.get(id(table))
                if k is None:
                    k = number[id(table)] = len(self._tables)
                    self._tables.append(table)
                number[id(p)] = k
                kept.append(p)
            self._tags.append(int(t))
            codes.append(k)
        self._of = np.full(max(n_tags, max(self._tags, default=-1) + 1), -1, dtype=np.int32)
        self._of[np.array(self._tags, dtype=np.intp)] = codes
        self._tags.sort()

    def __getitem__(self, tag: int) -> dict[str, Any]:
        try:
            i = operator.index(tag)
        except TypeError:
            raise KeyError(tag) from None
        k = self._of[i] if 0 <= i < len(self._of) else -1
        if k < 0:
            raise KeyError(tag)
        return self._tables[k]

    def __contains__(self, tag: object) -> bool:
        try:
            self[tag]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(self._tags)

    def __len__(self) -> int:
        return len(self._tags)

    def indices(self) -> np.ndarray:
        """The watched tags' indices in tag order, as an int32 array."""
        return np.flatnonzero(self._of >= 0).astype(np.int32)

    def __repr__(self) -> str:
        return f"TagTables({len(self)} tags, {len(self._tables)} distinct tables)"


def shared(params: dict[str, Any], seen: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """``params``, or the equal dict met before in ``seen`` (values of unhashable types are
    never shared)."""
    key = tuple((k, type(v), v) for k, v in params.items())
    try:
        return seen.setdefault(key, params)
    except TypeError:
        return params


def check_values(defaults: Mapping[str, Any], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Unknown keys, and values not of their default's type (None: a number)."""
    problems: list[tuple[str, str]] = []
    for key, value in params.items():
        if key not in defaults:
            problems.append((key, f"unknown key (expected one of: {', '.join(sorted(defaults))})"))
            continue
        expected = defaults[key]
        if isinstance(expected, bool):
            if not isinstance(value, bool):
                problems.append((key, f"must be true or false, not {value!r}"))
        elif isinstance(expected, (int, float)) or expected is None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append((key, f"must be a number, not {value!r}"))
            elif not math.isfinite(value):
                problems.append((key, f"must be finite, not {value!r}"))
    return problems
