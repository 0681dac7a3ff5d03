"""The engine: every configured detector family, each judging a whole batch in one call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.base import ConditionChange, Family, Statistic
from detectors.tune import Cycles


class Engine:
    """Runs each family over a batch and returns the condition changes, in family order.

    Pure state machine driven by (samples, time): no clock, no I/O. The live agent and
    ``plantwatch replay`` call the same ``process``.
    """

    def __init__(self, n_tags: int, families: Sequence[Family], cycles: Cycles | None = None):
        self.n_tags = n_tags
        self.families = list(families)
        #: learned daily/weekly cycles (detectors/tune.py): the families that judge deviations
        #: (``on_residual``) see the values less their tag's profile; the others the values
        self.cycles = cycles if cycles else None

    def process(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        changes: list[ConditionChange] = []
        residual = None
        for family in self.families:
            if self.cycles is not None and family.on_residual:
                if residual is None:
                    residual = self.cycles.residual(np.asarray(tag), np.asarray(value, dtype=np.float64),
                                                    np.asarray(ts, dtype=np.float64))
                changes.extend(family.update(tag, residual, ts, quality))
            else:
                changes.extend(family.update(tag, value, ts, quality))
        return changes

    def statistics(self) -> list[Statistic]:
        """Every family's monitoring statistics of the last batch (see Family.last_statistics)."""
        return [s for family in self.families for s in family.last_statistics()]
